"""Simulated survey observations: a source seen through an instrument.

A :class:`SimSource` is what is out there — a rest-frame, high-resolution
spectrum with its redshift and labels (from a real stellar library, SSP
templates plus emission lines, or a quasar model; see :mod:`.astro`). An
instrument from the :mod:`spectok_core.surveys` registry observes it
(:mod:`.instruments`): redshift, line-spread function, native grid, noise and
masks, giving a :class:`~spectok_core.Spectrum` like a reader would return.
Observing one source with several instruments gives same-object pairs, the
ground truth for cross-survey alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SimSource:
    """A source spectrum before any instrument sees it.

    wave_rest: vacuum Å in the source's rest frame, strictly increasing, and
        sampled finely enough for the sharpest instrument that will observe it.
    flux: f_λ in arbitrary units (only shapes matter; observations are
        normalised by the instrument's flux calibration scale).
    fwhm_rest: the template's own line-spread FWHM in rest-frame Å (scalar or
        per pixel): an instrument only adds blur in quadrature above it.
    z: redshift; the observed wavelength is wave_rest * (1 + z).
    meta: object_id, class, subclass, z, teff/logg/feh/alpha_m, spectral_type,
        origin of the template (e.g. "MILES HD 12345"), ...
    """

    object_id: str
    wave_rest: np.ndarray
    flux: np.ndarray
    fwhm_rest: float | np.ndarray
    z: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.wave_rest = np.asarray(self.wave_rest, dtype=np.float64)
        self.flux = np.asarray(self.flux, dtype=np.float64)
        if self.wave_rest.shape != self.flux.shape or self.wave_rest.ndim != 1:
            raise ValueError("wave_rest and flux must be 1-D arrays of one length")
        if np.any(np.diff(self.wave_rest) <= 0):
            raise ValueError("wave_rest must be strictly increasing")
        if not np.all(np.isfinite(self.flux)):
            raise ValueError("source flux must be finite everywhere")
        self.meta = {"object_id": self.object_id, **self.meta}
        self.meta.setdefault("z", float(self.z))

    @property
    def wave_observed(self) -> np.ndarray:
        return self.wave_rest * (1.0 + self.z)

    @property
    def fwhm_observed(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.fwhm_rest, dtype=np.float64), self.wave_rest.shape) * (
            1.0 + self.z
        )
