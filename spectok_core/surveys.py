"""The one registry of instruments.

Readers, the simulator, the model and the app ask this registry about an
instrument (its wavelength coverage, resolving power, native sampling, whether
its files give air or vacuum wavelengths, typical S/N) instead of
special-casing surveys anywhere else. All wavelengths here are vacuum Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arm:
    """One spectrograph arm or detector chip, with its own native grid."""

    name: str
    wave_min: float
    wave_max: float


@dataclass(frozen=True)
class Survey:
    key: str
    name: str
    wave_min: float  # vacuum Å, the instrument's usual coverage
    wave_max: float
    resolving_power: float  # typical R = λ/Δλ(FWHM)
    resolving_power_range: tuple[float, float]
    sampling: str  # "log" (constant Δlog10 λ), "linear" (constant Δλ) or "irregular"
    step: float  # Δlog10 λ (dex) for "log", Å for "linear", 0 for "irregular"
    air_wavelengths: bool  # True when the survey's files give air wavelengths
    snr_range: tuple[float, float]  # typical median S/N per pixel (5th-95th percentile)
    credit: str
    arms: tuple[Arm, ...] = ()
    file_wave_unit: str = "Angstrom"
    notes: str = ""

    @property
    def n_pixels(self) -> int:
        """Typical number of native pixels over the full coverage."""
        if self.sampling == "log":
            return int(round(np.log10(self.wave_max / self.wave_min) / self.step)) + 1
        if self.sampling == "linear":
            return int(round((self.wave_max - self.wave_min) / self.step)) + 1
        return 0

    def native_grid(self, arm: str | None = None) -> np.ndarray:
        """The instrument's native wavelength grid (vacuum Å), or one arm's."""
        lo, hi = self.wave_min, self.wave_max
        if arm is not None:
            match = [a for a in self.arms if a.name == arm]
            if not match:
                raise KeyError(f"{self.key} has no arm {arm!r}; arms: {[a.name for a in self.arms]}")
            lo, hi = match[0].wave_min, match[0].wave_max
        if self.sampling == "log":
            start = np.log10(lo)
            n = int(np.floor(np.log10(hi / lo) / self.step + 1e-9)) + 1
            return 10.0 ** (start + self.step * np.arange(n))
        if self.sampling == "linear":
            n = int(np.floor((hi - lo) / self.step + 1e-9)) + 1
            return lo + self.step * np.arange(n)
        raise ValueError(f"{self.key} has irregular sampling: its grid comes from its files")

    def fwhm(self, wave: np.ndarray | float) -> np.ndarray:
        """Line-spread FWHM in Å at the given wavelengths, from the typical R."""
        return np.asarray(wave, dtype=np.float64) / self.resolving_power

    def covers(self, wave_min: float, wave_max: float, tolerance: float = 0.02) -> bool:
        """Whether [wave_min, wave_max] lies within this instrument's coverage."""
        pad = tolerance * (self.wave_max - self.wave_min)
        return wave_min >= self.wave_min - pad and wave_max <= self.wave_max + pad


SDSS_CREDIT = (
    "Funding for the Sloan Digital Sky Survey has been provided by the Alfred P. Sloan "
    "Foundation, the Participating Institutions, NSF, and the U.S. Department of Energy. "
    "SDSS web site: www.sdss.org."
)

SURVEYS: dict[str, Survey] = {
    s.key: s
    for s in [
        Survey(
            key="sdss",
            name="SDSS-I/II spectrograph (Legacy)",
            wave_min=3800.0, wave_max=9200.0,
            resolving_power=2000.0, resolving_power_range=(1850.0, 2200.0),
            sampling="log", step=1e-4, air_wavelengths=False,
            snr_range=(3.0, 40.0),
            arms=(Arm("b", 3800.0, 6150.0), Arm("r", 5800.0, 9200.0)),
            credit=SDSS_CREDIT,
            notes="Coadded b+r arms on one log-λ grid (loglam step 1e-4 dex, 69 km/s).",
        ),
        Survey(
            key="boss",
            name="BOSS / eBOSS spectrograph (SDSS-III/IV)",
            wave_min=3600.0, wave_max=10400.0,
            resolving_power=2000.0, resolving_power_range=(1560.0, 2650.0),
            sampling="log", step=1e-4, air_wavelengths=False,
            snr_range=(1.0, 30.0),
            arms=(Arm("b", 3600.0, 6350.0), Arm("r", 5650.0, 10400.0)),
            credit=SDSS_CREDIT,
        ),
        Survey(
            key="desi",
            name="DESI spectrograph",
            wave_min=3600.0, wave_max=9824.0,
            resolving_power=3500.0, resolving_power_range=(2000.0, 5500.0),
            sampling="linear", step=0.8, air_wavelengths=False,
            snr_range=(0.5, 20.0),
            arms=(Arm("b", 3600.0, 5930.0), Arm("r", 5660.0, 7720.0), Arm("z", 7520.0, 9824.0)),
            credit=(
                "This research used data obtained with the Dark Energy Spectroscopic "
                "Instrument (DESI), funded by the U.S. Department of Energy Office of Science."
            ),
            notes="Three arms on one linear 0.8 Å grid; arms overlap at 5660-5930 and 7520-7720 Å.",
        ),
        Survey(
            key="lamost_lrs",
            name="LAMOST low-resolution survey",
            wave_min=3690.0, wave_max=9100.0,
            resolving_power=1800.0, resolving_power_range=(1000.0, 2000.0),
            sampling="log", step=1e-4, air_wavelengths=False,
            snr_range=(5.0, 100.0),
            credit=(
                "Guoshoujing Telescope (LAMOST) is a National Major Scientific Project built "
                "by the Chinese Academy of Sciences, funded by the National Development and "
                "Reform Commission, operated by the National Astronomical Observatories, CAS."
            ),
        ),
        Survey(
            key="lamost_mrs",
            name="LAMOST medium-resolution survey",
            wave_min=4950.0, wave_max=6800.0,
            resolving_power=7500.0, resolving_power_range=(7000.0, 8000.0),
            sampling="log", step=2.5e-5, air_wavelengths=False,
            snr_range=(10.0, 150.0),
            arms=(Arm("B", 4950.0, 5350.0), Arm("R", 6300.0, 6800.0)),
            credit=(
                "Guoshoujing Telescope (LAMOST) is a National Major Scientific Project built "
                "by the Chinese Academy of Sciences."
            ),
            notes="Two separate windows (blue around Mg b, red around Hα).",
        ),
        Survey(
            key="apogee",
            name="APOGEE (SDSS-III/IV), H band",
            wave_min=15100.0, wave_max=17000.0,
            resolving_power=22500.0, resolving_power_range=(20000.0, 25000.0),
            sampling="log", step=6e-6, air_wavelengths=False,
            snr_range=(50.0, 500.0),
            arms=(
                Arm("blue", 15140.0, 15810.0),
                Arm("green", 15850.0, 16440.0),
                Arm("red", 16470.0, 16960.0),
            ),
            credit=SDSS_CREDIT + " APOGEE is part of SDSS-III and SDSS-IV.",
            notes="apStar: 8575 px from log10 λ = 4.179 in 6e-6 dex steps; chip gaps are zero.",
        ),
        Survey(
            key="gaia_xp",
            name="Gaia DR3 BP/RP (XP) sampled spectra",
            wave_min=3360.0, wave_max=10200.0,
            resolving_power=50.0, resolving_power_range=(20.0, 100.0),
            sampling="linear", step=20.0, air_wavelengths=False,
            snr_range=(20.0, 1000.0),
            file_wave_unit="nm",
            credit=(
                "This work has made use of data from the European Space Agency (ESA) mission "
                "Gaia (https://www.cosmos.esa.int/gaia), processed by the Gaia Data Processing "
                "and Analysis Consortium (DPAC)."
            ),
            notes="343 samples 336-1020 nm in 2 nm steps; neighbouring samples are correlated.",
        ),
        Survey(
            key="miles",
            name="MILES stellar library v9.1",
            wave_min=3525.0, wave_max=7500.0,
            resolving_power=2000.0, resolving_power_range=(1400.0, 3000.0),
            sampling="linear", step=0.9, air_wavelengths=True,
            snr_range=(50.0, 300.0),
            credit="MILES library: Sánchez-Blázquez et al. 2006, MNRAS 371, 703; Falcón-Barroso et al. 2011.",
            notes="Constant 2.5 Å FWHM, so R grows with wavelength; files give air wavelengths.",
        ),
        Survey(
            key="stelib",
            name="STELIB stellar library",
            wave_min=3200.0, wave_max=9300.0,
            resolving_power=1700.0, resolving_power_range=(1000.0, 2500.0),
            sampling="linear", step=1.0, air_wavelengths=True,
            snr_range=(30.0, 200.0),
            credit="STELIB: Le Borgne et al. 2003, A&A 402, 433.",
            notes="About 3 Å FWHM; files give air wavelengths.",
        ),
        Survey(
            key="mastar",
            name="MaStar stellar library (SDSS-IV MaNGA)",
            wave_min=3622.0, wave_max=10354.0,
            resolving_power=1800.0, resolving_power_range=(1400.0, 2600.0),
            sampling="log", step=1e-4, air_wavelengths=False,
            snr_range=(30.0, 300.0),
            credit=SDSS_CREDIT + " MaStar: Yan et al. 2019, ApJ 883, 175.",
        ),
        Survey(
            key="manga",
            name="MaNGA integral-field spectra (SDSS-IV)",
            wave_min=3622.0, wave_max=10354.0,
            resolving_power=2000.0, resolving_power_range=(1400.0, 2600.0),
            sampling="log", step=1e-4, air_wavelengths=False,
            snr_range=(5.0, 60.0),
            credit=SDSS_CREDIT + " MaNGA: Bundy et al. 2015, ApJ 798, 7.",
        ),
        Survey(
            key="spex",
            name="IRTF SpeX prism",
            wave_min=6500.0, wave_max=25500.0,
            resolving_power=120.0, resolving_power_range=(75.0, 200.0),
            sampling="irregular", step=0.0, air_wavelengths=False,
            snr_range=(10.0, 300.0),
            file_wave_unit="micron",
            credit=(
                "SpeX Prism Library (Burgasser 2014, ASInrpj 11, 7), via the SPLAT package; "
                "IRTF is operated by the University of Hawaii under contract with NASA."
            ),
            notes="Prism dispersion: pixel width grows with wavelength; grids differ per file.",
        ),
        Survey(
            key="unknown",
            name="Unknown instrument",
            wave_min=1.0, wave_max=1e7,
            resolving_power=float("nan"), resolving_power_range=(float("nan"), float("nan")),
            sampling="irregular", step=0.0, air_wavelengths=False,
            snr_range=(float("nan"), float("nan")),
            credit="",
            notes="Anything read from a generic table; the model needs only the wavelengths.",
        ),
    ]
}


def get(key: str) -> Survey:
    """The registry entry for ``key``, with a helpful error for a bad key."""
    try:
        return SURVEYS[key]
    except KeyError:
        raise KeyError(f"unknown survey {key!r}; known: {', '.join(sorted(SURVEYS))}") from None


def guess_from_wavelengths(wave: np.ndarray) -> str:
    """The registry key whose coverage best matches a grid, for generic tables.

    Only a hint for display: a generic table is labelled ``unknown`` unless its
    sampling also matches. Returns ``unknown`` when nothing matches well.
    """
    wave = np.asarray(wave, dtype=np.float64)
    lo, hi = float(wave[0]), float(wave[-1])
    best, best_overlap = "unknown", 0.0
    for survey in SURVEYS.values():
        if survey.key == "unknown":
            continue
        inter = min(hi, survey.wave_max) - max(lo, survey.wave_min)
        union = max(hi, survey.wave_max) - min(lo, survey.wave_min)
        overlap = inter / union if union > 0 else 0.0
        if overlap > best_overlap:
            best, best_overlap = survey.key, overlap
    return best if best_overlap > 0.9 else "unknown"
