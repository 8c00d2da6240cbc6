"""Model configuration: one dataclass, two presets (``small`` for CPUs, ``paper`` for GPUs)."""

from __future__ import annotations

import json
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
        return cls.from_dict(json.loads(Path(path).read_text()))


PRESETS = {
    # The shipped CPU model: trains to a useful state in about an hour on 2 cores.
    "small": ModelConfig(),
    # The paper's size (arXiv 2510.17959): patch 32, 6+6 layers, width 512.
    "paper": ModelConfig(d_model=512, n_heads=8, n_enc_layers=6, n_dec_layers=6, d_embed=256),
    # For tests: trains in seconds.
    "tiny": ModelConfig(patch_size=16, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                        d_embed=16, n_freq=8),
}
