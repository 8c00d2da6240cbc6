"""The Spectrum record: one observed spectrum on its native wavelength grid.

Everything downstream (corpus, model, index, app) takes these records, so the
validation here is the one gate every reader passes through. Readers convert
air wavelengths to vacuum and units to Ångström; they never resample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A spectrum needs at least this many usable pixels to be worth embedding.
MIN_GOOD_PIXELS = 16

#: Wavelengths a spectrum may have, in Å: hard X-rays (0.1 Å) to radio (10 cm). Far wider
#: than any instrument spectok models; values outside are a unit mistake or garbage.
WAVE_RANGE = (0.1, 1e9)


class SpectrumError(ValueError):
    """Raised for any input that cannot become a valid Spectrum.

    The message always names the problem and, where possible, what to do.
    """


@dataclass(eq=False)
class Spectrum:
    """One spectrum on its native grid.

    wave: float64, Å, vacuum, strictly increasing.
    flux: float32, in the file's units (recorded in ``meta['flux_unit']``).
    ivar: float32, inverse variance of ``flux``, >= 0.
    mask: bool, True marks a bad pixel. Pixels with ``ivar == 0`` or a
        non-finite flux are always marked bad (and their flux/ivar set to 0),
        so ``~mask`` alone selects the usable pixels.
    survey: a key of :data:`spectok_core.surveys.SURVEYS`.
    meta: object id, ra/dec, class, redshift, stellar labels, source file, ...
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray | None = None
    survey: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .surveys import SURVEYS

        try:
            wave = np.asarray(self.wave, dtype=np.float64)
            flux = np.asarray(self.flux, dtype=np.float64)
            ivar = np.asarray(self.ivar, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise SpectrumError(f"wave, flux and ivar must be numeric arrays ({err})") from None
        mask = (
            np.zeros(wave.shape, dtype=bool)
            if self.mask is None
            else np.asarray(self.mask).astype(bool)
        )
        for name, arr in (("wave", wave), ("flux", flux), ("ivar", ivar), ("mask", mask)):
            if arr.ndim != 1:
                raise SpectrumError(f"{name} must be one-dimensional, got shape {arr.shape}")
        sizes = {"wave": wave.size, "flux": flux.size, "ivar": ivar.size, "mask": mask.size}
        if len(set(sizes.values())) != 1:
            raise SpectrumError(
                "length mismatch between arrays: "
                + ", ".join(f"{k}={v}" for k, v in sizes.items())
            )
        if wave.size < MIN_GOOD_PIXELS:
            raise SpectrumError(
                f"too few pixels: {wave.size} (a spectrum needs at least {MIN_GOOD_PIXELS})"
            )
        if not np.all(np.isfinite(wave)):
            raise SpectrumError(
                f"non-finite wavelengths: {int(np.sum(~np.isfinite(wave)))} of {wave.size} "
                "are NaN or inf"
            )
        if wave[0] <= 0:
            raise SpectrumError(f"wavelengths must be positive (first is {wave[0]:g} Å)")
        low, high = float(np.min(wave)), float(np.max(wave))
        if low < WAVE_RANGE[0] or high > WAVE_RANGE[1]:
            raise SpectrumError(
                f"wavelengths {low:.6g}-{high:.6g} Å are outside the physical range "
                f"{WAVE_RANGE[0]:g}-{WAVE_RANGE[1]:g} Å (X-ray to radio); the unit is probably "
                "wrong: give wavelengths in Å, or state the unit (e.g. wave_unit='nm')"
            )
        steps = np.diff(wave)
        if np.any(steps <= 0):
            first = int(np.argmax(steps <= 0))
            raise SpectrumError(
                "wavelengths are not strictly increasing: "
                f"pixel {first + 1} ({wave[first + 1]:.6g} Å) follows {wave[first]:.6g} Å"
            )
        if np.any(ivar < 0):
            raise SpectrumError(
                f"negative inverse variance in {int(np.sum(ivar < 0))} pixels; "
                "ivar must be >= 0 (use 0 for pixels without a measurement)"
            )
        # ivar is stored as float32: a positive value that underflows to 0 there is no measurement.
        with np.errstate(over="ignore", invalid="ignore"):
            underflow = ivar.astype(np.float32) == 0
        bad = mask | ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0) | underflow
        n_good = int(np.sum(~bad))
        if n_good == 0:
            raise SpectrumError(
                "every pixel is bad (masked, zero inverse variance, or NaN/inf flux): "
                "there is nothing to read in this spectrum"
            )
        if n_good < MIN_GOOD_PIXELS:
            raise SpectrumError(
                f"too few usable pixels: {n_good} (at least {MIN_GOOD_PIXELS} needed)"
            )
        flux = np.where(bad, 0.0, flux)
        ivar = np.where(bad, 0.0, ivar)
        # Values beyond float32 would overflow to inf on the cast.
        f32 = np.finfo(np.float32).max
        if np.any(np.abs(flux) > f32) or np.any(ivar > f32):
            raise SpectrumError(
                "flux or ivar values exceed the float32 range; rescale the flux units"
            )
        if self.survey not in SURVEYS:
            raise SpectrumError(
                f"unknown survey key {self.survey!r}; use one of {sorted(SURVEYS)}"
            )
        self.wave = wave
        self.flux = flux.astype(np.float32)
        self.ivar = ivar.astype(np.float32)
        self.mask = bad
        self.meta = dict(self.meta or {})

    # -- derived quantities ---------------------------------------------------

    def __len__(self) -> int:
        return int(self.wave.size)

    def __repr__(self) -> str:
        oid = self.meta.get("object_id", "?")
        return (
            f"Spectrum(survey={self.survey!r}, object_id={oid!r}, n_pixels={len(self)}, "
            f"wave={self.wave[0]:.1f}-{self.wave[-1]:.1f} Å, snr={self.median_snr:.1f})"
        )

    @property
    def good(self) -> np.ndarray:
        """Usable pixels: not masked (which implies ivar > 0 and finite flux)."""
        return ~self.mask

    @property
    def median_snr(self) -> float:
        """Median per-pixel signal-to-noise over usable pixels."""
        good = self.good
        return float(np.median(self.flux[good] * np.sqrt(self.ivar[good])))

    @property
    def wave_range(self) -> tuple[float, float]:
        return float(self.wave[0]), float(self.wave[-1])

    def to_specutils(self):
        """This spectrum as a specutils ``Spectrum`` (needs the optional extra spectok[specutils]).

        Wavelengths in Å (vacuum), the flux unit from ``meta['flux_unit']`` where astropy reads
        it, an InverseVariance uncertainty and the mask (True = bad, as in NDData);
        ``read_spectra`` reads the object back.
        """
        from .io.specutils_objects import to_specutils

        return to_specutils(self)

    def copy(self) -> Spectrum:
        return Spectrum(
            self.wave.copy(), self.flux.copy(), self.ivar.copy(), self.mask.copy(),
            self.survey, dict(self.meta),
        )


# -- helpers shared by readers -------------------------------------------------


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Convert air wavelengths (Å) to vacuum (Å).

    The IAU standard refractive index of Morton (2000, ApJS 130, 403), which
    SDSS and the stellar-library papers use; accurate to ~0.01 Å in the optical.
    Wavelengths below 2000 Å are vacuum by convention and left unchanged.
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    sigma2 = (1e4 / wave_air) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - sigma2) + 1.5998e-4 / (38.9 - sigma2)
    return np.where(wave_air < 2000.0, wave_air, wave_air * n)


def vacuum_to_air(wave_vac: np.ndarray) -> np.ndarray:
    """Inverse of :func:`air_to_vacuum` (Morton 2000), for tests and simulators."""
    wave_vac = np.asarray(wave_vac, dtype=np.float64)
    sigma2 = (1e4 / wave_vac) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - sigma2) + 1.5998e-4 / (38.9 - sigma2)
    return np.where(wave_vac < 2000.0, wave_vac, wave_vac / n)


def sigma_to_ivar(sigma: np.ndarray) -> np.ndarray:
    """Inverse variance from 1-sigma errors; zero where the error is unusable."""
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = 1.0 / sigma**2
    return np.where(np.isfinite(ivar) & (sigma > 0), ivar, 0.0)


def estimate_ivar(flux: np.ndarray, good: np.ndarray | None = None) -> np.ndarray:
    """Estimate a constant-S/N inverse variance for spectra shipped without errors.

    Stellar libraries (MILES, STELIB) give flux only. The noise is estimated
    from the pixel-to-pixel scatter: the robust standard deviation of the
    second difference, which removes the smooth continuum and most line
    profiles, divided by sqrt(6) (the variance of a second difference of white
    noise is six times the pixel variance). The noise is taken proportional to
    the flux level (photon noise of a bright source is dominated by the
    continuum) and floored so that ultra-smooth synthetic spectra do not get
    infinite weight (S/N at most 1000).
    """
    flux = np.asarray(flux, dtype=np.float64)
    good = np.isfinite(flux) if good is None else (good & np.isfinite(flux))
    values = flux[good]
    if values.size < 8:
        return np.zeros_like(flux)
    second = np.diff(values, 2)
    mad = np.median(np.abs(second - np.median(second)))
    sigma_pix = 1.4826 * mad / np.sqrt(6.0)
    level = np.median(np.abs(values))
    rel = sigma_pix / level if level > 0 else 0.0
    rel = max(rel, 1e-3)
    sigma = rel * np.maximum(np.abs(flux), 0.05 * level)
    ivar = sigma_to_ivar(sigma)
    return np.where(good, ivar, 0.0)
