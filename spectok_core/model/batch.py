"""From Spectrum records to model inputs: normalise, patchify, pad.

Each spectrum keeps its native pixels. Flux is divided by a robust median of
its usable pixels (the log of that scale is kept so reconstructions return to
physical units) and combined with its per-pixel error. Pixels are cut into
fixed-size patches; a patch with too many bad pixels is marked invalid and the
network never attends to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import surveys
from ..spectrum import Spectrum
from .config import ModelConfig

N_PIXEL_FEATURES = 3  # normalised flux, log10 normalised sigma, good flag
N_INFO_FEATURES = 3  # log10 pixel width dλ/λ, log10 R, good fraction


@dataclass
class Prepared:
    """One spectrum, normalised and patchified (numpy, float32 unless noted)."""

    pixels: np.ndarray  # (n_patches, patch_size, N_PIXEL_FEATURES)
    wave: np.ndarray  # (n_patches, patch_size) float64; padding repeats the last wavelength
    good: np.ndarray  # (n_patches, patch_size) bool: usable pixel (padding is not)
    target: np.ndarray  # (n_patches, patch_size) normalised flux
    weight: np.ndarray  # (n_patches, patch_size) inverse variance with the error floor, 0 if bad
    info: np.ndarray  # (n_patches, N_INFO_FEATURES)
    valid: np.ndarray  # (n_patches,) bool: enough good pixels to be attended to
    log_scale: float
    n_pixels: int


def resolving_power(spectrum: Spectrum) -> float:
    """The instrument's typical R, or two pixels per FWHM when unknown."""
    r = surveys.get(spectrum.survey).resolving_power if spectrum.survey in surveys.SURVEYS else np.nan
    if not np.isfinite(r):
        step = np.median(np.diff(spectrum.wave) / spectrum.wave[:-1])
        r = 1.0 / (2.0 * step)
    return float(r)


def grid_info(wave: np.ndarray, patch_size: int, r: float) -> np.ndarray:
    """Per-patch sampling and resolution features for a (padded) wavelength grid."""
    n_patches = wave.size // patch_size
    width = np.gradient(wave) / wave
    width = np.maximum(width, 1e-7).reshape(n_patches, patch_size)
    info = np.empty((n_patches, N_INFO_FEATURES), dtype=np.float32)
    # Standardised around typical values (dλ/λ ~ 1e-4, R ~ 2000) to keep inputs O(1).
    info[:, 0] = (np.log10(np.median(width, axis=1)) + 4.0) / 1.5
    info[:, 1] = (np.log10(r) - 3.3) / 1.0
    info[:, 2] = 0.0
    return info


def pad_to_patches(array: np.ndarray, patch_size: int, fill) -> np.ndarray:
    n = array.size
    n_patches = max(1, -(-n // patch_size))
    out = np.full(n_patches * patch_size, fill, dtype=array.dtype)
    out[:n] = array
    return out


def padded_wave(wave: np.ndarray, patch_size: int) -> np.ndarray:
    """Pad a grid to whole patches, continuing its last step (keeps it increasing)."""
    n = wave.size
    padded = pad_to_patches(wave, patch_size, 0.0)
    extra = padded.size - n
    if extra:
        step = wave[-1] - wave[-2] if n > 1 else 1.0
        padded[n:] = wave[-1] + step * np.arange(1, extra + 1)
    return padded


def prepare(spectrum: Spectrum, config: ModelConfig) -> Prepared:
    p = config.patch_size
    n = len(spectrum)
    wave = padded_wave(spectrum.wave, p)
    good = pad_to_patches(spectrum.good, p, False).reshape(-1, p)
    valid = good.mean(axis=1) >= (1.0 - config.bad_patch_fraction)
    if not valid.any():  # a sparse spectrum: keep the patches that hold anything at all
        valid = good.any(axis=1)
    # The scale comes only from pixels the encoder will see, so an excluded
    # patch cannot influence the output through the normalisation either.
    seen = (good & valid[:, None]).reshape(-1)[:n]
    flux = spectrum.flux.astype(np.float64)
    level = np.median(flux[seen])
    if not level > 0:
        level = np.median(np.abs(flux[seen]))
    if not level > 0:
        level = 1.0
    x = flux / level
    ivar = spectrum.ivar.astype(np.float64) * level**2
    with np.errstate(divide="ignore"):
        sigma = np.where(spectrum.good, 1.0 / np.sqrt(np.maximum(ivar, 1e-30)), 0.0)
    x = np.clip(x, -20.0, 20.0)
    good_flat = pad_to_patches(spectrum.good, p, False)
    x_pad = pad_to_patches(np.where(spectrum.good, x, 0.0), p, 0.0)
    logsig = pad_to_patches(np.where(spectrum.good, np.log10(np.clip(sigma, 1e-4, 1e2)), 0.0), p, 0.0)
    pixels = np.stack([x_pad, logsig, good_flat.astype(np.float64)], axis=-1).reshape(-1, p, 3)
    with np.errstate(divide="ignore"):
        weight = np.where(spectrum.good, 1.0 / (sigma**2 + config.error_floor**2), 0.0)
    weight = pad_to_patches(weight, p, 0.0).reshape(-1, p)
    info = grid_info(wave, p, resolving_power(spectrum))
    info[:, 2] = good.mean(axis=1)
    return Prepared(
        pixels=pixels.astype(np.float32),
        wave=wave.reshape(-1, p),
        good=good,
        target=x_pad.reshape(-1, p).astype(np.float32),
        weight=weight.astype(np.float32),
        info=info,
        valid=valid,
        log_scale=float(np.log(level)),
        n_pixels=n,
    )


@dataclass
class Batch:
    """Padded tensors for a batch of prepared spectra."""

    pixels: torch.Tensor  # (B, N, P, 3)
    wave: torch.Tensor  # (B, N, P) float64
    good: torch.Tensor  # (B, N, P) bool
    target: torch.Tensor  # (B, N, P)
    weight: torch.Tensor  # (B, N, P)
    info: torch.Tensor  # (B, N, 3)
    valid: torch.Tensor  # (B, N) bool
    log_scale: torch.Tensor  # (B,)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})


def collate(items: Sequence[Prepared]) -> Batch:
    b = len(items)
    n = max(item.valid.size for item in items)
    p = items[0].wave.shape[1]
    pixels = np.zeros((b, n, p, N_PIXEL_FEATURES), np.float32)
    wave = np.ones((b, n, p), np.float64)
    good = np.zeros((b, n, p), bool)
    target = np.zeros((b, n, p), np.float32)
    weight = np.zeros((b, n, p), np.float32)
    info = np.zeros((b, n, N_INFO_FEATURES), np.float32)
    valid = np.zeros((b, n), bool)
    for i, item in enumerate(items):
        k = item.valid.size
        pixels[i, :k] = item.pixels
        wave[i, :k] = item.wave
        wave[i, k:] = item.wave[-1, -1]  # padding: a harmless repeated wavelength
        good[i, :k] = item.good
        target[i, :k] = item.target
        weight[i, :k] = item.weight
        info[i, :k] = item.info
        valid[i, :k] = item.valid
    return Batch(
        pixels=torch.from_numpy(pixels),
        wave=torch.from_numpy(wave),
        good=torch.from_numpy(good),
        target=torch.from_numpy(target),
        weight=torch.from_numpy(weight),
        info=torch.from_numpy(info),
        valid=torch.from_numpy(valid),
        log_scale=torch.tensor([item.log_scale for item in items], dtype=torch.float32),
    )


@dataclass
class TargetGrid:
    """A wavelength grid to decode onto (any length, any instrument), in patches."""

    wave: torch.Tensor  # (B, M, P) float64
    info: torch.Tensor  # (B, M, 3)
    n_pixels: list[int]

    def to(self, device: torch.device | str) -> TargetGrid:
        return TargetGrid(self.wave.to(device), self.info.to(device), self.n_pixels)


def target_grid(waves: Sequence[np.ndarray], rs: Sequence[float], config: ModelConfig) -> TargetGrid:
    p = config.patch_size
    padded = [padded_wave(np.asarray(w, np.float64), p) for w in waves]
    m = max(w.size // p for w in padded)
    wave = np.ones((len(waves), m, p), np.float64)
    info = np.zeros((len(waves), m, N_INFO_FEATURES), np.float32)
    for i, (w, r) in enumerate(zip(padded, rs)):
        k = w.size // p
        wave[i, :k] = w.reshape(k, p)
        wave[i, k:] = w[-1]
        info[i, :k] = grid_info(w, p, r)
        info[i, :k, 2] = 1.0
    return TargetGrid(torch.from_numpy(wave), torch.from_numpy(info), [len(w) for w in waves])
