"""Gaia DR3 BP/RP (XP) spectra: GaiaXPy output and the archive's continuous spectra.

Three layouts, told apart by their columns:

* ``gaiaxpy.calibrate()`` output (``source_id``, ``flux``, ``flux_error``): one row
  per source, each array stored as a string, ``"(1.2, 3.4, ...)"`` in CSV or
  ``"[1.2, null, ...]"`` in ECSV, in W m^-2 nm^-1, BP and RP already merged. The
  sampling (nm) is not in the CSV: GaiaXPy writes it to a separate
  ``<name>_sampling.csv`` (one ``pos`` column). The ECSV of recent GaiaXPy versions
  carries it in its header (``# meta: sampling: [...]``) and the FITS output in the
  table keyword ``SAMPLING``. Without a stated sampling, 343 samples are GaiaXPy's
  default, 336-1020 nm in 2 nm steps (recorded in ``meta['wave_sampling_assumed']``);
  any other length needs the ``sampling=`` reader option (the ``pos`` values, in nm).
  Flux is rescaled from W m^-2 nm^-1 to 1e-17 erg s^-1 cm^-2 Å^-1 (x 1e19): faint
  sources have errors near 1e-20 W m^-2 nm^-1, whose inverse variance would overflow
  float32, and the SDSS unit puts Gaia next to the other surveys. A source whose BP
  or RP is missing has NaN samples; those pixels are masked.

* ``gaiaxpy.convert()`` output (an ``xp`` column: one row per source and band): BP and
  RP in Gaia's *internal* system, sampled on a pseudo-wavelength grid u (pixels of
  the 60-pixel spectrum window). The grid is not in the file either; 600 samples are
  convert()'s default ``linspace(0, 60, 600)``, 481 samples ``linspace(0, 60, 481)``
  (what GaiaXPy's own test files use; checked: our conversion of the same sources'
  continuous spectra reproduces that file to 1e-15); otherwise pass ``sampling=``
  (the u values).

* continuous spectra (archive ``XP_CONTINUOUS``: ``bp_coefficients``,
  ``bp_coefficient_errors``, ``bp_coefficient_correlations``, same for RP): the
  coefficients of 55 Hermite functions per band. They are evaluated here, as
  convert() does, on convert()'s default grid (or ``sampling=``, in u): flux(u) =
  c . B(u) with B = T psi(a u + b), T GaiaXPy's 55x55 basis transformation and psi
  the orthonormal Hermite functions; the error is the diagonal of the covariance,
  sigma^2(u) = B(u)^T diag(e) R diag(e) B(u) with e the coefficient errors and R their
  correlations (the solution's ``standard_deviation`` cancels out, as in GaiaXPy).
  Neighbouring samples of the 600-sample grid (10 per pixel) are strongly
  correlated; ivar ignores that, as GaiaXPy's flux_error does.

Both internal layouts become ONE spectrum per source: each band's samples are put
on wavelengths with GaiaXPy's DR3 dispersion function (linear interpolation in its
1-nm table, as ``gaiaxpy.pwl_to_wl`` does), BP kept for 330 <= lambda < 639 nm and RP
for 639 <= lambda <= 1020 nm, on their own samples (no resampling). 330-643 and
635-1020 nm are GaiaXPy's band ranges; 639 nm is where calibrate()'s linear BP/RP
merge weights (635-643 nm) cross 0.5. The flux is NOT flux-calibrated: it is in
e-/s per pseudo-wavelength pixel, the internal system, which differs between BP and
RP (response, and nm per pixel: ~23 nm for BP and ~6 nm for RP at 639 nm), so the
spectrum jumps at the join (to ~0.4 of the BP level for a solar-type star). meta
says so: ``xp_calibration='internal'``, ``flux_unit``, ``xp_join_nm``. A band
missing from the file leaves its part of the grid masked. Wavelengths are taken as
vacuum, as for calibrate(); at R ~ 30-100 the difference is far below a resolution
element.

The numbers behind this (basis transformations, dispersion table) come from
GaiaXPy 2.1.5 (BSD-3-Clause) and live in ``data/gaia_xp_dr3_internal.npz`` (see
``data/README.md``); GaiaXPy is not needed. Only DR3's basis set (ids 56 BP, 57 RP)
is known; a file naming another is refused. Externally calibrated spectra from
continuous ones (calibrate()) need GaiaXPy's large external-calibration model and
are not made here: for W m^-2 nm^-1, run calibrate() and read its output.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError, sigma_to_ivar
from .registry import register
from .source import Source
from .table import meta_from_columns, plain

#: GaiaXPy calibrate()'s default sampling, nm.
DEFAULT_SAMPLING_NM = np.arange(336.0, 1020.0 + 1.0, 2.0)
#: 1 W m^-2 nm^-1 = 100 erg s^-1 cm^-2 Å^-1 = 1e19 x 1e-17 erg s^-1 cm^-2 Å^-1.
W_M2_NM_TO_SDSS = 1e19
FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"
ORIGINAL_FLUX_UNIT = "W m-2 nm-1"

# -- Gaia DR3's internal calibration, from GaiaXPy 2.1.5 (BSD-3-Clause, (c) DPAC CU5 DPCI) ----------
#: Per band, from gaiaxpy/config/OptimisedCalibratedBases_BpId32_RpId37_withNormalisation.xml:
#: (basis_function_id, number of Hermite functions, pseudo-wavelength range, normalised range).
#: Their 55x55 transformation matrices are in data/gaia_xp_dr3_internal.npz.
XP_BASES = {
    "bp": (56, 55, (0.0, 59.0), (-9.800, 9.467)),
    "rp": (57, 55, (0.0, 59.0), (-9.933, 9.600)),
}
#: Wavelengths (nm) kept per band: GaiaXPy's core/satellite.py BP_WL (330, 643) and RP_WL
#: (635, 1020), cut where calibrate()'s linear BP/RP merge weights over 635-643 nm cross 0.5.
JOIN_NM = 639.0
BAND_KEEP_NM = {"bp": (330.0, JOIN_NM), "rp": (JOIN_NM, 1020.0)}
#: Lengths of convert() grids the file does not state: linspace(0, 60, n) in pseudo-wavelength.
CONVERT_GRIDS = {
    600: "GaiaXPy convert() default: 600 samples on 0-60 pseudo-wavelength",
    481: "481 samples on 0-60 pseudo-wavelength (the grid of GaiaXPy's own test files)",
}
CONVERT_DEFAULT_N = 600
PWL_LIMITS = (-10.0, 70.0)  # what GaiaXPy's convert() accepts as a sampling
INTERNAL_FLUX_UNIT = "e-/s per pseudo-wavelength pixel (Gaia internal system, not flux-calibrated)"
DATA_FILE = Path(__file__).parent / "data" / "gaia_xp_dr3_internal.npz"

SAMPLING_FILE_MESSAGE = (
    "this is a GaiaXPy sampling file (one 'pos' column): it holds only the positions that go "
    "with a spectra file. Read the spectra file and pass these values: "
    "read_spectra('output_spectra.csv', sampling=[...])"
)


@functools.lru_cache(maxsize=1)
def _internal_model() -> dict[str, np.ndarray]:
    try:
        with np.load(DATA_FILE, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except OSError as err:
        raise SpectrumError(
            f"Gaia XP internal-calibration data {DATA_FILE.name} is missing or unreadable ({err}); "
            "reinstall spectok"
        ) from None


def hermite_functions(n: int, x: np.ndarray) -> np.ndarray:
    """psi_0..psi_{n-1} at x, shape (n, x.size): the orthonormal Hermite functions.

    psi_k(x) = (2^k k! sqrt(pi))^-1/2 H_k(x) exp(-x^2/2), by the stable three-term
    recurrence psi_k = sqrt(2/k) x psi_{k-1} - sqrt((k-1)/k) psi_{k-2}.
    """
    x = np.asarray(x, dtype=np.float64)
    psi = np.empty((n, x.size))
    psi[0] = np.pi ** -0.25 * np.exp(-0.5 * x * x)
    if n > 1:
        psi[1] = np.sqrt(2.0) * x * psi[0]
    for k in range(2, n):
        psi[k] = np.sqrt(2.0 / k) * x * psi[k - 1] - np.sqrt((k - 1) / k) * psi[k - 2]
    return psi


def design_matrix(band: str, u: np.ndarray) -> np.ndarray:
    """The band's 55 DR3 basis functions at pseudo-wavelengths u, shape (55, u.size)."""
    _, n, (lo, hi), (norm_lo, norm_hi) = XP_BASES[band]
    scale = (norm_hi - norm_lo) / (hi - lo)
    x = norm_lo + (np.asarray(u, dtype=np.float64) - lo) * scale
    return _internal_model()[f"{band}_transformation"] @ hermite_functions(n, x)


def pwl_to_nm(band: str, u: np.ndarray) -> np.ndarray:
    """Wavelength (nm) of pseudo-wavelengths u: GaiaXPy's DR3 table, linearly interpolated.

    Outside the table (300-1100 nm) the value is clamped to its end, which lies outside
    BAND_KEEP_NM, so such samples are dropped rather than extrapolated.
    """
    model = _internal_model()
    nm, pwl = model["dispersion_nm"], model[f"dispersion_{band}_pwl"]
    known = np.isfinite(pwl)
    nm, pwl = nm[known], pwl[known]
    order = np.argsort(pwl)  # BP's pseudo-wavelength falls with wavelength, RP's rises
    return np.interp(np.asarray(u, dtype=np.float64), pwl[order], nm[order])


def _band_part(band: str, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices into u, their wavelengths in nm, increasing) of the samples kept for a band."""
    nm = pwl_to_nm(band, u)
    lo, hi = BAND_KEEP_NM[band]
    inside = (nm >= lo) & (nm < hi) if band == "bp" else (nm >= lo) & (nm <= hi)
    index = np.flatnonzero(inside)
    index = index[np.argsort(nm[index], kind="stable")]
    return index, nm[index]


def _joined(bands: dict[str, tuple[np.ndarray, np.ndarray] | None], u: np.ndarray,
            meta: dict[str, Any]) -> Spectrum:
    """One spectrum from BP and RP (flux, error) on the pseudo-wavelength grid u."""
    waves, fluxes, errors, present = [], [], [], []
    for band in ("bp", "rp"):
        index, nm = _band_part(band, u)
        values = bands.get(band)
        if values is None:
            flux = error = np.full(index.size, np.nan)
        else:
            flux, error = values[0][index], values[1][index]
            present.append(band.upper())
        waves.append(nm)
        fluxes.append(flux)
        errors.append(error)
    if not present:
        raise SpectrumError("neither a BP nor an RP spectrum: nothing to read for this source")
    wave = np.concatenate(waves)
    if wave.size and np.any(np.diff(wave) <= 0):
        raise SpectrumError("the pseudo-wavelength sampling has repeated positions")
    meta = dict(meta, xp_bands="+".join(present))
    # Internal (not flux-calibrated) units: its own registry key, never mixed with calibrated XP.
    return Spectrum(wave * 10.0, np.concatenate(fluxes), sigma_to_ivar(np.concatenate(errors)),
                    None, "gaia_xp_internal", meta)


def _pwl_sampling(n_samples: int | None, stated: np.ndarray | None,
                  source: Source) -> tuple[np.ndarray, dict]:
    """The pseudo-wavelength grid of internal spectra, and what to record about it."""
    option = source.options.get("sampling")
    meta: dict[str, Any] = {}
    if option is not None:
        u = parse_array(option)
        meta["xp_sampling"] = "the sampling option (pseudo-wavelength)"
    elif stated is not None:
        u = stated
        meta["xp_sampling"] = "the file header (pseudo-wavelength)"
    elif n_samples is None:  # continuous spectra: we choose the grid
        u = np.linspace(0.0, 60.0, CONVERT_DEFAULT_N)
        meta["xp_sampling"] = CONVERT_GRIDS[CONVERT_DEFAULT_N]
    elif n_samples in CONVERT_GRIDS:
        u = np.linspace(0.0, 60.0, n_samples)
        meta["xp_sampling"] = meta["wave_sampling_assumed"] = CONVERT_GRIDS[n_samples]
    else:
        raise SpectrumError(
            f"the convert() spectra have {n_samples} samples and the file does not say where "
            "they are. GaiaXPy writes them to a separate '<name>_sampling.csv' (column 'pos', "
            "pseudo-wavelength); pass those values: read_spectra(path, sampling=[...])"
        )
    if u.size == 0 or not np.all(np.isfinite(u)) or np.any(np.diff(u) <= 0):
        raise SpectrumError("the sampling is not a strictly increasing list of pseudo-wavelengths")
    if u.min() < PWL_LIMITS[0] or u.max() > PWL_LIMITS[1]:
        raise SpectrumError(
            f"the sampling runs {u.min():g}-{u.max():g}, but Gaia XP internal spectra are "
            "sampled in pseudo-wavelength (pixels, about 0-60), not in nm: give the convert() "
            "positions ('pos' of its _sampling.csv)"
        )
    return u, meta


def _internal_meta(row: dict[str, Any], sampling_meta: dict) -> dict[str, Any]:
    meta = meta_from_columns({k: v for k, v in row.items()
                              if not k.endswith(("coefficients", "coefficient_errors",
                                                 "coefficient_correlations"))
                              and k not in ("flux", "error", "flux_error", "xp")})
    source_id = _source_id(row)
    if source_id:
        meta["object_id"] = meta["source_id"] = source_id
    meta.update(sampling_meta)
    meta.update(flux_unit=INTERNAL_FLUX_UNIT, xp_calibration="internal", xp_join_nm=JOIN_NM)
    return meta


def _source_id(row: dict[str, Any]) -> str:
    value = plain(row.get("source_id"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value)


# -- continuous spectra: Hermite coefficients -> internal spectra -----------------------------------


def _correlation_matrix(values: np.ndarray, n: int) -> np.ndarray:
    """The archive's correlations (lower triangle without the diagonal, row by row) as n x n."""
    if values.size != n * (n - 1) // 2:
        raise SpectrumError(
            f"{values.size} coefficient correlations for {n} coefficients (expected "
            f"{n * (n - 1) // 2}, the lower triangle of the correlation matrix)"
        )
    matrix = np.eye(n)
    rows, cols = np.tril_indices(n, k=-1)
    matrix[rows, cols] = values
    matrix[cols, rows] = values
    return matrix


def _continuous_band(row: dict[str, Any], band: str, u: np.ndarray, meta: dict
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    coefficients = parse_array(row.get(f"{band}_coefficients", ""))
    if coefficients.size == 0 or np.all(np.isnan(coefficients)):
        return None  # the archive leaves a band without a spectrum empty
    basis_id, n, _, _ = XP_BASES[band]
    stated_id = plain(row.get(f"{band}_basis_function_id"))
    if stated_id in (None, ""):
        meta["xp_basis_assumed"] = True
    else:
        try:
            stated_id = int(float(stated_id))
        except ValueError:
            raise SpectrumError(f"{band}_basis_function_id {stated_id!r} is not a number") from None
        if stated_id != basis_id:
            raise SpectrumError(
                f"{band.upper()} uses basis set {stated_id}; only Gaia DR3's ({XP_BASES['bp'][0]} "
                f"BP, {XP_BASES['rp'][0]} RP) is known. Convert it with GaiaXPy's convert() "
                "and read that output with sampling=[...]"
            )
    if coefficients.size != n:
        raise SpectrumError(f"{coefficients.size} {band.upper()} coefficients; Gaia DR3 has {n}")
    errors = parse_array(row.get(f"{band}_coefficient_errors", ""))
    if errors.size != n:
        raise SpectrumError(f"{errors.size} {band}_coefficient_errors for {n} coefficients")
    correlation = _correlation_matrix(parse_array(row.get(f"{band}_coefficient_correlations", "")), n)
    design = design_matrix(band, u)
    flux = coefficients @ design
    scaled = errors[:, None] * design  # diag(e) B: the covariance is diag(e) R diag(e)
    variance = np.einsum("is,ij,js->s", scaled, correlation, scaled)
    return flux, np.sqrt(np.clip(variance, 0.0, None))


def _read_continuous(source: Source, rows: list[dict[str, Any]]) -> list[Spectrum]:
    u, sampling_meta = _pwl_sampling(None, None, source)
    spectra = []

    def make(row: dict[str, Any]) -> Spectrum:
        meta = _internal_meta(row, sampling_meta)
        meta["xp_basis"] = "Gaia DR3 Hermite bases 56 (BP) and 57 (RP), from GaiaXPy 2.1.5"
        bands = {band: _continuous_band(row, band, u, meta) for band in ("bp", "rp")}
        return _joined(bands, u, meta)

    for index, row in enumerate(rows):
        spectrum = source.keep(f"row {index} (source_id {_source_id(row)})", lambda r=row: make(r))
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


# -- convert() output: internal spectra on a pseudo-wavelength grid ---------------------------------


def _read_convert(source: Source, rows: list[dict[str, Any]], names: list[str],
                  stated: np.ndarray | None) -> list[Spectrum]:
    error_name = "flux_error" if "flux_error" in names else "error"
    by_source: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        band = str(plain(row.get("xp")) or "").strip().lower()
        if band not in ("bp", "rp"):
            raise SpectrumError(f"xp is {row.get('xp')!r}; convert() output has 'BP' or 'RP'")
        bands = by_source.setdefault(_source_id(row), {})
        if band in bands:
            raise SpectrumError(f"source_id {_source_id(row)} has two {band.upper()} rows")
        bands[band] = row
    u, sampling_meta = _pwl_sampling(_typical_length(rows), stated, source)

    def band_values(row: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
        if row is None:
            return None
        flux, error = parse_array(row["flux"]), parse_array(row[error_name])
        if flux.size == 0 or np.all(np.isnan(flux)):
            return None  # GaiaXPy's row for a band the source lacks
        if flux.size != u.size or error.size != u.size:
            raise SpectrumError(
                f"{flux.size} flux and {error.size} error values for {u.size} sampling positions; "
                "the sampling does not belong to these spectra"
            )
        return flux, error

    def make(bands: dict[str, dict[str, Any]]) -> Spectrum:
        first = next(iter(bands.values()))
        values = {band: band_values(bands.get(band)) for band in ("bp", "rp")}
        return _joined(values, u, _internal_meta(first, sampling_meta))

    spectra = []
    for source_id, bands in by_source.items():
        spectrum = source.keep(f"source_id {source_id}", lambda b=bands: make(b))
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


def parse_array(text: Any) -> np.ndarray:
    """A GaiaXPy array string, "(1.0, 2.0)" or "[1.0, null]", as float64 (null -> NaN)."""
    if isinstance(text, (list, tuple, np.ndarray)):
        return np.asarray(text, dtype=np.float64).ravel()
    body = str(text).strip().strip("\"'").strip()
    if body[:1] in "([" and body[-1:] in ")]":
        body = body[1:-1]
    if not body.strip():
        return np.zeros(0)
    try:
        return np.array(
            [float(v) if v.strip().lower() not in ("null", "none", "") else np.nan
             for v in body.split(",")],
            dtype=np.float64,
        )
    except ValueError:
        raise SpectrumError(f"an array value is not a list of numbers: {body[:60]!r}...") from None


def _header_names(text: str) -> list[str]:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return [name.strip().strip('"').lower() for name in next(csv.reader([stripped]))]
    return []


def _kind(names: list[str]) -> str | None:
    """What GaiaXPy product the column names say this is, or None."""
    if names == ["pos"]:
        return "sampling"
    if "source_id" not in names:
        return None
    if any(n.endswith(("_coefficients", "_coefficient_errors")) for n in names):
        return "continuous"
    if "flux" in names and ("flux_error" in names or "error" in names):
        return "convert" if "xp" in names else "sampled"
    return None


def _sampling(n_samples: int, stated: np.ndarray | None, source: Source) -> tuple[np.ndarray, dict]:
    """Sampling in nm plus what to record about where it came from."""
    meta: dict[str, Any] = {}
    option = source.options.get("sampling")
    if option is not None:
        sampling = parse_array(option)
        meta["wave_sampling_from"] = "the sampling option"
    elif stated is not None:
        sampling = stated
        meta["wave_sampling_from"] = "the file header"
    elif n_samples == DEFAULT_SAMPLING_NM.size:
        sampling = DEFAULT_SAMPLING_NM
        meta["wave_sampling_assumed"] = "GaiaXPy default: 336-1020 nm in 2 nm steps"
    else:
        raise SpectrumError(
            f"the spectra have {n_samples} samples and the file does not say where they are. "
            "GaiaXPy writes the sampling to a separate '<name>_sampling.csv' (column 'pos', nm); "
            "pass those values: read_spectra(path, sampling=[...]), or save with "
            "output_format='ecsv', which keeps the sampling in the file"
        )
    if sampling.size == 0 or not np.all(np.isfinite(sampling)) or np.any(np.diff(sampling) <= 0):
        raise SpectrumError("the sampling is not a strictly increasing list of wavelengths (nm)")
    if sampling.max() <= 100.0:
        raise SpectrumError(
            f"the sampling runs {sampling.min():g}-{sampling.max():g}: that is GaiaXPy's "
            "pseudo-wavelength (pixels) of convert() output, not nm, but this file has no 'xp' "
            "column, so it is calibrate() output, sampled in nm: give the sampling in nm"
        )
    if sampling.min() < 200.0 or sampling.max() > 1200.0:
        raise SpectrumError(
            f"the sampling runs {sampling.min():g}-{sampling.max():g}, outside Gaia XP's "
            "330-1050 nm; give the sampling in nm"
        )
    return sampling, meta


def _spectrum(row: dict[str, Any], error_name: str, sampling_nm: np.ndarray, extra: dict,
              scale: float) -> Spectrum:
    flux = parse_array(row["flux"])
    error = parse_array(row[error_name])
    if flux.size != sampling_nm.size or error.size != sampling_nm.size:
        raise SpectrumError(
            f"{flux.size} flux and {error.size} error values for {sampling_nm.size} sampling "
            "positions; the sampling does not belong to these spectra"
        )
    meta = meta_from_columns({k: v for k, v in row.items() if k not in ("flux", error_name)})
    source_id = plain(row.get("source_id"))
    if source_id not in (None, ""):
        meta["object_id"] = str(int(source_id)) if isinstance(source_id, (int, float)) else source_id
        meta["source_id"] = meta["object_id"]
    meta.update(extra)
    return Spectrum(sampling_nm * 10.0, flux * scale, sigma_to_ivar(error * scale), None,
                    "gaia_xp", meta)


def _flux_scale(unit: str | None) -> tuple[float, dict]:
    if unit is None or re.sub(r"[\s.*^]", "", unit.lower()) in ("wm-2nm-1", "w/m2/nm", "wm**-2nm**-1"):
        return W_M2_NM_TO_SDSS, {"flux_unit": FLUX_UNIT, "flux_unit_original": ORIGINAL_FLUX_UNIT}
    return 1.0, {"flux_unit": unit}


def _typical_length(rows: list[dict[str, Any]]) -> int:
    """The most common flux-array length among the first rows (damaged rows are skipped
    here and reported later with their source_id)."""
    lengths = []
    for row in rows[:50]:
        try:
            lengths.append(parse_array(row["flux"]).size)
        except SpectrumError:
            continue
    lengths = [n for n in lengths if n > 0]
    if not lengths:
        raise SpectrumError("no row holds a readable flux array (numbers in brackets); the file is damaged")
    return max(set(lengths), key=lengths.count)


def _read_rows(source: Source, rows: list[dict[str, Any]], names: list[str],
               stated: np.ndarray | None, flux_unit: str | None) -> list[Spectrum]:
    error_name = "flux_error" if "flux_error" in names else "error"
    sampling, extra = _sampling(_typical_length(rows), stated, source)
    scale, unit_meta = _flux_scale(flux_unit)
    extra.update(unit_meta)
    spectra = []
    for index, row in enumerate(rows):
        label = f"row {index} (source_id {plain(row.get('source_id'))})"
        spectrum = source.keep(label, lambda r=row: _spectrum(r, error_name, sampling, extra, scale))
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


def _read_any(source: Source, rows: list[dict[str, Any]], names: list[str],
              stated: np.ndarray | None, flux_unit: str | None) -> list[Spectrum]:
    """Rows of any of the three layouts; ``stated`` is the sampling the file gives, if any."""
    kind = _kind(names)
    if kind == "continuous":
        return _read_continuous(source, rows)
    if kind == "convert":
        return _read_convert(source, rows, names, stated)
    return _read_rows(source, rows, names, stated, flux_unit)


# -- CSV and ECSV ---------------------------------------------------------------------------------


def _ecsv_header(text: str) -> tuple[np.ndarray | None, str | None]:
    """(sampling from '# meta: sampling: [...]', the flux column's unit) of a GaiaXPy ECSV."""
    sampling, flux_unit, current = None, None, None
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith("sampling:"):
            sampling = parse_array(body.split(":", 1)[1])
        elif body.startswith("- name:") or body.startswith("name:"):
            current = body.split(":", 1)[1].strip()
        elif body.startswith("unit:") and current == "flux":
            flux_unit = body.split(":", 1)[1].strip().strip("'\"")
        compact = re.search(r"name:\s*flux\s*,[^}]*\bunit:\s*([^,}]+)", body)
        if compact:  # astropy's own style: "- {name: flux, unit: ..., datatype: string}"
            flux_unit = compact.group(1).strip().strip("'\"")
    return sampling, flux_unit


def _identify_csv(source: Source) -> bool:
    text = source.text or ""
    names = _header_names(text)
    kind = _kind(names)
    if kind not in ("sampled", "convert"):
        return kind is not None
    # A per-pixel table that happens to have source_id, flux and error columns is not ours:
    # its flux is one number, GaiaXPy's an array in brackets.
    if any(n in names for n in ("wave", "wavelength", "lambda", "loglam")):
        return False
    rows = (ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    next(rows, None)
    first = next(csv.reader([next(rows, "")]), [])
    flux = first[names.index("flux")].strip() if len(first) == len(names) else ""
    try:
        float(flux)
    except ValueError:
        return True
    return False


@register(
    "gaiaxpy", "text",
    "Gaia XP spectra as GaiaXPy and the archive write them (CSV / ECSV, arrays as strings): "
    "calibrate() output; convert() output and continuous (XP_CONTINUOUS) spectra as internally "
    "calibrated BP+RP spectra",
    _identify_csv,
)
def read_gaiaxpy_csv(source: Source) -> list[Spectrum]:
    text = source.text or ""
    names = _header_names(text)
    if _kind(names) == "sampling":
        raise SpectrumError(SAMPLING_FILE_MESSAGE)
    body = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = []
    for fields in csv.reader(io.StringIO("\n".join(body[1:]))):
        if len(fields) != len(names):
            raise SpectrumError(
                f"a row has {len(fields)} fields for {len(names)} columns; the CSV is damaged"
            )
        rows.append(dict(zip(names, fields)))
    if not rows:
        raise SpectrumError("the GaiaXPy file has a header but no sources")
    sampling, flux_unit = _ecsv_header(text) if text.lstrip().startswith("# %ECSV") else (None, None)
    return _read_any(source, rows, names, sampling, flux_unit)


# -- FITS -------------------------------------------------------------------------------------------


def _fits_table(source: Source):
    from astropy.io import fits

    for hdu in source.hdul:
        if isinstance(hdu, fits.BinTableHDU) and "SAMPLING" in hdu.header:
            names = [n.lower() for n in hdu.columns.names]
            if _kind(names) is not None:  # with flux an array column (GaiaXPy's nD or PD())
                return hdu
    return None


@register(
    "gaiaxpy_fits", "fits",
    "Gaia XP sampled spectra written by GaiaXPy calibrate() or convert() as FITS (SAMPLING keyword)",
    lambda source: _fits_table(source) is not None,
)
def read_gaiaxpy_fits(source: Source) -> list[Spectrum]:
    hdu = _fits_table(source)
    if hdu is None:
        raise SpectrumError("no GaiaXPy table (a binary table with a SAMPLING keyword)")
    names = [n.lower() for n in hdu.columns.names]
    data = hdu.data
    original = {n.lower(): n for n in hdu.columns.names}
    rows = [{n: data[original[n]][i] for n in names} for i in range(len(data))]
    if not rows:
        raise SpectrumError("the GaiaXPy table has no rows")
    units = {c.name.lower(): c.unit for c in hdu.columns if c.unit}
    stated = parse_array(hdu.header["SAMPLING"])
    return _read_any(source, rows, names, stated, units.get("flux"))
