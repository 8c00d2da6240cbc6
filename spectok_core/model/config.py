"""Model configuration: one dataclass, two presets (``small`` for CPUs, ``paper`` for GPUs)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class ModelConfig:
    patch_size: int = 32  # native pixels per patch (token)
    d_model: int = 128  # transformer width
    n_heads: int = 4
    n_enc_layers: int = 4
    n_dec_layers: int = 2
    mlp_ratio: int = 4
    d_embed: int = 128  # pooled embedding size (L2-normalised for search)
    # Latent bottleneck: learned queries that summarise the object; the decoder
    # reads only them. 0 = the earlier design (decoder reads the tokens).
    n_latents: int = 0
    n_latent_layers: int = 2
    # The summary head that maps the latents to the search embedding: linear (0), or
    # an MLP with one hidden layer of this width (set by `spectok align`).
    summary_hidden: int = 0
    n_freq: int = 32  # log-spaced wavelength frequencies (sin + cos each)
    period_min: float = 2.0  # Å: shortest period of the wavelength encoding
    period_max: float = 100_000.0  # Å: longest period
    bad_patch_fraction: float = 0.5  # a patch with more bad pixels than this is excluded
    error_floor: float = 0.01  # relative error floor: ultra-high-S/N pixels do not dominate
    mask_ratio: float = 0.3  # share of valid patches hidden from the encoder in training
    max_patches: int = 1024  # longest input accepted (patch_size * max_patches pixels)
    dropout: float = 0.0
    # The wavelength span (vacuum Å) of the training data: spectra beyond it
    # still embed, with a warning in their metadata.
    trained_wave_min: float = 3300.0
    trained_wave_max: float = 25500.0

    def __post_init__(self):
        """Check every field's type and range before anything is allocated.

        A config.json comes from a model folder anyone may hand over, so a wrong
        type, a negative size or a width that would allocate gigabytes is refused
        here with the field named, not found later by torch.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            wanted = int if f.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                wanted is int and not isinstance(value, int)
            ):
                raise ValueError(f"field {f.name!r} must be {'an integer' if wanted is int else 'a number'}, "
                                 f"not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"field {f.name!r} must be finite, not {value!r}")
        for name, (lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"field {name!r} = {value!r} is outside [{lo}, {hi}]")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.d_embed > self.d_model:
            raise ValueError(f"d_embed ({self.d_embed}) cannot exceed d_model ({self.d_model})")
        if self.summary_hidden and not self.n_latents:
            raise ValueError("summary_hidden needs latents (n_latents > 0): without them the embedding is the mean token")
        if not self.period_min < self.period_max or not self.trained_wave_min < self.trained_wave_max:
            raise ValueError("period_min/trained_wave_min must be below period_max/trained_wave_max")
        if self.n_parameters() > MAX_PARAMETERS:
            raise ValueError(f"this config describes about {self.n_parameters() / 1e6:.0f} M parameters, more "
                             f"than the {MAX_PARAMETERS / 1e6:.0f} M a spectok model may have")

    def n_parameters(self) -> int:
        """Approximate number of weights (to refuse absurd sizes before allocating them)."""
        d, r = self.d_model, self.mlp_ratio
        block = 4 * d * d + 2 * r * d * d  # attention + MLP
        layers = self.n_enc_layers * block + (self.n_dec_layers + self.n_latent_layers) * (block + 4 * d * d)
        head = self.n_latents * d * (self.summary_hidden or d) + self.summary_hidden * d
        return layers + head + d * (self.patch_size * 3 + 8 * self.n_freq + d)

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config.json has unknown fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: Path) -> ModelConfig:
        path = Path(path)
        if path.stat().st_size > 64 * 1024:
            raise ValueError(f"{path.name} is {path.stat().st_size:,} bytes; a config.json is under 64 KB")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path.name} is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path.name} must hold a JSON object of fields")
        return cls.from_dict(data)


MAX_PARAMETERS = 500_000_000
# Allowed range of every field (inclusive).
_RANGES = {
    "patch_size": (1, 1024), "d_model": (2, 4096), "n_heads": (1, 64), "n_enc_layers": (1, 48),
    "n_dec_layers": (1, 48), "mlp_ratio": (1, 16), "d_embed": (1, 4096), "n_latents": (0, 256),
    "n_latent_layers": (1, 16), "summary_hidden": (0, 16384), "n_freq": (1, 512), "period_min": (1e-3, 1e9), "period_max": (1e-3, 1e9),
    "bad_patch_fraction": (0.0, 1.0), "error_floor": (0.0, 1.0), "mask_ratio": (0.0, 0.99),
    "max_patches": (1, 1 << 16), "dropout": (0.0, 0.99), "trained_wave_min": (1.0, 1e8),
    "trained_wave_max": (1.0, 1e8),
}


PRESETS = {
    # The shipped CPU model: trains to a useful state in about an hour on 2 cores.
    "small": ModelConfig(n_latents=8),
    # The paper's size (arXiv 2510.17959): patch 32, 6+6 layers, width 512.
    "paper": ModelConfig(d_model=512, n_heads=8, n_enc_layers=6, n_dec_layers=6, d_embed=256, n_latents=16),
    # For tests: trains in seconds.
    "tiny": ModelConfig(patch_size=16, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                        d_embed=16, n_freq=8, n_latents=4, n_latent_layers=1),
    # The earlier design without the latent bottleneck (n_latents = 0), for comparison.
    "small-tokens": ModelConfig(),
}
