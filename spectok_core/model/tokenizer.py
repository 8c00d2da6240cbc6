"""The public face of the model: ``Tokenizer.from_pretrained()``, embed, tokenize, reconstruct.

Weights live as safetensors beside a ``config.json`` — never pickles — so a
model folder handed over by anyone can be loaded without running their code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .. import surveys
from ..data.fetch import sha256_of
from ..spectrum import Spectrum, SpectrumError
from .batch import Prepared, collate, prepare, resolving_power, target_grid
from .config import ModelConfig
from .network import SpecTok

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "assets" / "models" / "spectok-small"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class TokenSet:
    """One spectrum's tokens: a vector per patch and the wavelengths it spans."""

    tokens: np.ndarray  # (n_patches, d_model) float32
    wave_min: np.ndarray  # (n_patches,) Å, first pixel of each patch
    wave_max: np.ndarray  # (n_patches,) Å, last real pixel of each patch
    valid: np.ndarray  # (n_patches,) bool: False for excluded (mostly bad) patches


def _read_weights(weights: Path, model: SpecTok, device: str) -> dict[str, torch.Tensor]:
    """The tensors of ``weights``, checked against ``model``'s names and shapes before any
    is read, and refused if any value is not finite."""
    from safetensors import safe_open

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    size = weights.stat().st_size
    budget = 4 * sum(int(np.prod(shape)) for shape in expected.values()) + (1 << 20)
    if size > budget:
        raise SpectrumError(f"{weights} is {size:,} bytes, more than its config.json's model needs "
                            f"({budget:,}); the folder may be damaged or mixed from two models")
    try:
        with safe_open(str(weights), framework="pt", device=device) as handle:
            names = set(handle.keys())
            if names != set(expected):
                missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
                raise SpectrumError(f"{weights} does not match its config.json (missing {missing[:3]}, "
                                    f"unexpected {extra[:3]}); the folder may be mixed from two models")
            state = {}
            for name in expected:
                shape = tuple(handle.get_slice(name).get_shape())
                if shape != expected[name]:
                    raise SpectrumError(f"{weights}: tensor {name} has shape {shape}, its config.json "
                                        f"implies {expected[name]}; the folder may be mixed from two models")
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise SpectrumError(f"{weights}: tensor {name} holds NaN or infinite values; "
                                        "these weights cannot be used (retrain or restore the folder)")
                state[name] = tensor
    except SpectrumError:
        raise
    except Exception as err:  # a damaged safetensors header or body
        raise SpectrumError(f"{weights} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    return state


def _model_id(meta_path: Path, default: str) -> str:
    try:
        if meta_path.stat().st_size > 1 << 20:
            raise ValueError("larger than 1 MB")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model_id = meta.get("model_id", default) if isinstance(meta, dict) else None
        if not isinstance(model_id, str) or not model_id.isprintable() or len(model_id) > 200:
            raise ValueError("its model_id is not a short printable string")
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise SpectrumError(f"{meta_path} is not a valid model metadata file ({err})") from None
    return model_id


class Tokenizer:
    """A trained (or fresh) spectok model with a numpy-in, numpy-out API."""

    def __init__(self, model: SpecTok, model_id: str = "untrained", weights_hash: str = ""):
        self.model = model.eval()
        self.config: ModelConfig = model.config
        self.model_id = model_id
        self.weights_hash = weights_hash
        self.device = next(model.parameters()).device

    # -- loading and saving ---------------------------------------------------------

    @classmethod
    def from_config(cls, config: ModelConfig | str = "small", seed: int = 0) -> Tokenizer:
        from .config import PRESETS

        if isinstance(config, str):
            config = PRESETS[config]
        torch.manual_seed(seed)
        return cls(SpecTok(config))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "cpu") -> Tokenizer:
        """Load weights from a model folder (default: the shipped spectok-small), no network."""
        folder = Path(path) if path is not None else DEFAULT_MODEL
        weights, config_path = folder / WEIGHTS, folder / CONFIG
        for required in (weights, config_path):
            if not required.is_file():
                raise SpectrumError(
                    f"model folder {folder} lacks {required.name}; a model folder holds "
                    f"{WEIGHTS} and {CONFIG} (train one with `spectok train`)"
                )
        try:
            config = ModelConfig.from_json(config_path)
        except (ValueError, TypeError, OSError) as err:
            raise SpectrumError(f"{config_path} is not a valid spectok config: {err}") from None
        model = SpecTok(config)
        state = _read_weights(weights, model, device)
        model.load_state_dict(state)
        meta_path = folder / "metadata.json"
        model_id = folder.name
        if meta_path.is_file():
            model_id = _model_id(meta_path, model_id)
        return cls(model.to(device), model_id=model_id, weights_hash=sha256_of(weights))

    def save(self, folder: str | os.PathLike, model_id: str | None = None, **metadata) -> Path:
        """Write model.safetensors, config.json and metadata.json atomically into ``folder``."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        self.config.to_json(tmp / CONFIG)
        self.model_id = model_id or self.model_id
        (tmp / "metadata.json").write_text(json.dumps({"model_id": self.model_id, **metadata}, indent=1))
        folder.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS, CONFIG, "metadata.json"):
            os.replace(tmp / name, folder / name)
        tmp.rmdir()
        self.weights_hash = sha256_of(folder / WEIGHTS)
        return folder

    # -- inference -------------------------------------------------------------------

    def _check(self, spectrum: Spectrum) -> None:
        """Warn (in the spectrum's metadata) where the model is out of its depth."""
        warnings = []
        lo, hi = spectrum.wave_range
        if spectrum.survey == "unknown":
            warnings.append("unknown instrument: resolution estimated from the pixel sampling")
        if lo < self.config.trained_wave_min or hi > self.config.trained_wave_max:
            warnings.append(
                f"wavelengths {lo:.0f}-{hi:.0f} Å reach outside the trained span "
                f"{self.config.trained_wave_min:.0f}-{self.config.trained_wave_max:.0f} Å"
            )
        n_patches = -(-len(spectrum) // self.config.patch_size)
        if n_patches > self.config.max_patches:
            raise SpectrumError(
                f"spectrum of {len(spectrum)} pixels is longer than this model reads "
                f"({self.config.max_patches * self.config.patch_size} pixels)"
            )
        if warnings:
            spectrum.meta["spectok_warnings"] = warnings

    def _batches(self, spectra: Sequence[Spectrum], batch_size: int):
        """Prepared batches, grouped by length so little is padding; yields (indices, batch)."""
        for spectrum in spectra:
            self._check(spectrum)
        order = sorted(range(len(spectra)), key=lambda i: len(spectra[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            prepared: list[Prepared] = [prepare(spectra[i], self.config) for i in idx]
            yield idx, prepared, collate(prepared).to(self.device)

    @torch.inference_mode()
    def embed(self, spectra: Sequence[Spectrum] | Spectrum, batch_size: int = 32) -> np.ndarray:
        """(N, d_embed) float32 embeddings, L2-normalised; a batch may mix surveys and lengths."""
        if isinstance(spectra, Spectrum):
            spectra = [spectra]
        out = np.zeros((len(spectra), self.config.d_embed), np.float32)
        for idx, _, batch in self._batches(spectra, batch_size):
            summary = self.model.summarise(*self.model.encode(batch))
            out[idx] = self.model.pool(summary.vector).cpu().numpy()
        return out

    @torch.inference_mode()
    def calibrate(self, spectra: Sequence[Spectrum], batch_size: int = 32, shrink: float = 0.01) -> None:
        """Fit the embedding's centring and whitening on (training) spectra; see
        :meth:`SpecTok.calibrate_pooling` (a large ``shrink`` centres and rotates without
        whitening). Call once after training, before saving."""
        if len(spectra) <= self.config.d_embed:
            raise SpectrumError(
                f"calibration needs more spectra than embedding dimensions ({self.config.d_embed}); "
                f"got {len(spectra)}"
            )
        self.model.calibrate_pooling(self.summaries(spectra, batch_size), shrink=shrink)

    @torch.inference_mode()
    def summaries(self, spectra: Sequence[Spectrum], batch_size: int = 32) -> torch.Tensor:
        """(N, d_model) summary vectors (from the latents; the mean token when the model has
        none) before the embedding's calibration: what :meth:`calibrate` fits and what the
        contrastive terms compare."""
        pooled = torch.zeros(len(spectra), self.config.d_model)
        for idx, _, batch in self._batches(spectra, batch_size):
            pooled[idx] = self.model.summarise(*self.model.encode(batch)).vector.cpu()
        return pooled

    @torch.inference_mode()
    def tokenize(self, spectra: Sequence[Spectrum] | Spectrum, batch_size: int = 32) -> list[TokenSet]:
        """Per-spectrum token arrays and the wavelength span of each token."""
        if isinstance(spectra, Spectrum):
            spectra = [spectra]
        result: list[TokenSet | None] = [None] * len(spectra)
        for idx, prepared, batch in self._batches(spectra, batch_size):
            tokens, _ = self.model.encode(batch)
            tokens = tokens.cpu().numpy()
            for row, (i, item) in enumerate(zip(idx, prepared)):
                k = item.valid.size
                wave = spectra[i].wave
                starts = np.arange(k) * self.config.patch_size
                ends = np.minimum(starts + self.config.patch_size, len(wave)) - 1
                result[i] = TokenSet(tokens[row, :k].copy(), wave[starts], wave[ends], item.valid.copy())
        return result  # type: ignore[return-value]

    @torch.inference_mode()
    def reconstruct(self, spectrum: Spectrum, wave: np.ndarray | None = None, survey: str | None = None) -> Spectrum:
        """The model's rendering of ``spectrum`` on ``wave`` (default: its own grid).

        ``survey`` names the instrument whose resolution the target grid has
        (default: the input's). Flux returns to the input's physical units. The
        returned ivar is nominal — the training error floor — not a model
        uncertainty; ``meta['reconstruction']`` is True.
        """
        self._check(spectrum)
        item = prepare(spectrum, self.config)
        batch = collate([item]).to(self.device)
        target_wave = spectrum.wave if wave is None else np.asarray(wave, np.float64)
        target_survey = survey or spectrum.survey
        if wave is None or target_survey == spectrum.survey:
            r = resolving_power(spectrum)
        else:
            r = surveys.get(target_survey).resolving_power
        grid = target_grid([target_wave], [r], self.config)
        summary = self.model.summarise(*self.model.encode(batch))
        normalised = self.model.decode(summary, grid.to(self.device))
        normalised = normalised.reshape(-1)[: len(target_wave)].cpu().numpy().astype(np.float64)
        scale = float(np.exp(item.log_scale))
        ivar = np.full(len(target_wave), 1.0 / (self.config.error_floor * scale) ** 2)
        meta = dict(spectrum.meta, reconstruction=True, model_id=self.model_id)
        return Spectrum(target_wave, normalised * scale, ivar, None, target_survey, meta)
