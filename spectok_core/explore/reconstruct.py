"""Reconstruction residuals, and rendering a spectrum on another instrument's native grid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import surveys
from ..spectrum import Spectrum, SpectrumError

if TYPE_CHECKING:  # heavy imports only for type checkers
    from ..model.tokenizer import Tokenizer


# -- reconstruction and other instruments ---------------------------------------------------


def residuals_sigma(spectrum: Spectrum, model: Spectrum) -> np.ndarray:
    """(data − model) / σ_data per pixel on the data's grid; NaN on masked pixels."""
    if len(model) != len(spectrum) or not np.allclose(model.wave, spectrum.wave):
        raise SpectrumError("the model spectrum is not on the data's grid; reconstruct with wave=None")
    sigma = np.where(spectrum.good, 1.0 / np.sqrt(np.maximum(spectrum.ivar, 1e-30)), np.nan)
    return (spectrum.flux.astype(np.float64) - model.flux.astype(np.float64)) / sigma


def residual_summary(residuals: np.ndarray) -> dict[str, float]:
    """χ² per usable pixel, the median |residual| and the share beyond 3σ."""
    good = residuals[np.isfinite(residuals)]
    if good.size == 0:
        return {"chi2_per_pixel": float("nan"), "median_abs": float("nan"), "beyond_3sigma": float("nan")}
    return {
        "chi2_per_pixel": float(np.mean(good**2)),
        "median_abs": float(np.median(np.abs(good))),
        "beyond_3sigma": float(np.mean(np.abs(good) > 3.0)),
    }


def rendering_instruments() -> list[str]:
    """Instruments whose native grid the registry can draw (the simulated ones)."""
    from ..data.instruments import SIMULATED_SURVEYS

    return list(SIMULATED_SURVEYS)


def overlap(spectrum: Spectrum, key: str) -> tuple[float, float] | None:
    """The wavelength range an input and instrument ``key`` share, or None."""
    from ..data.instruments import native_wave

    grid = native_wave(key)
    lo = max(spectrum.wave[0], grid[0])
    hi = min(spectrum.wave[-1], grid[-1])
    return (float(lo), float(hi)) if hi > lo else None


def render_on(tokenizer: Tokenizer, spectrum: Spectrum, key: str, min_pixels: int = 16) -> Spectrum:
    """The model's rendering of ``spectrum`` on instrument ``key``'s native grid, over the overlap.

    Raises SpectrumError when the two share no wavelengths (or fewer than
    ``min_pixels`` of the target's pixels): the model decodes only what it read.
    """
    from ..data.instruments import native_wave

    if key not in rendering_instruments():
        raise SpectrumError(f"no native grid known for {key!r}; choose one of "
                            f"{', '.join(rendering_instruments())}")
    grid = native_wave(key)
    lo, hi = spectrum.wave_range
    inside = grid[(grid >= lo) & (grid <= hi)]
    name = surveys.get(key).name
    if inside.size < min_pixels:
        raise SpectrumError(
            f"{name} covers {grid[0]:,.0f}–{grid[-1]:,.0f} Å and this spectrum "
            f"{lo:,.0f}–{hi:,.0f} Å: they share {'no' if inside.size == 0 else 'too few'} "
            "wavelengths, so there is nothing the model can draw on that grid"
        )
    rendered = tokenizer.reconstruct(spectrum, wave=inside, survey=key)
    rendered.meta["rendered_on"] = key
    rendered.meta["coverage"] = float(inside.size / grid.size)
    return rendered


