"""Gaia DR3 BP/RP (XP) spectra as GaiaXPy writes them.

``gaiaxpy.calibrate()`` gives one row per source: ``source_id``, ``flux`` and
``flux_error``, each array stored as a string, ``"(1.2, 3.4, ...)"`` in CSV or
``"[1.2, null, ...]"`` in ECSV, in W m^-2 nm^-1, BP and RP already merged. The
sampling (nm) is not in the CSV: GaiaXPy writes it to a separate
``<name>_sampling.csv`` (one ``pos`` column). The ECSV of recent GaiaXPy
versions carries it in its header (``# meta: sampling: [...]``) and the FITS
output in the table keyword ``SAMPLING``. Without a stated sampling, 343
samples are GaiaXPy's default, 336-1020 nm in 2 nm steps (recorded in
``meta['wave_sampling_assumed']``); any other length needs the
``sampling=`` reader option (the ``pos`` values, in nm).

Flux is rescaled from W m^-2 nm^-1 to 1e-17 erg s^-1 cm^-2 Å^-1 (x 1e19):
faint sources have errors near 1e-20 W m^-2 nm^-1, whose inverse variance
would overflow float32, and the SDSS unit puts Gaia next to the other surveys.
A source whose BP or RP is missing has NaN samples; those pixels are masked.

Two other GaiaXPy products are recognised and refused with what to do, because
neither is a spectrum on a wavelength scale:

* continuous spectra (``XP_CONTINUOUS_RAW``, columns ``bp_coefficients``,
  ``rp_coefficients``, ...): coefficients of GaiaXPy's Hermite basis functions,
  which only GaiaXPy's basis configuration turns into a spectrum;
* ``gaiaxpy.convert()`` output (an ``xp`` column, one row per BP or RP): the
  internal system, sampled in pseudo-wavelength (pixels, 0-60), not in nm.
"""

from __future__ import annotations

import csv
import io
import os
import re
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

COEFFICIENT_MESSAGE = (
    "this is a Gaia XP *continuous* spectrum file (columns {columns}): it holds the "
    "coefficients of GaiaXPy's Hermite basis functions, not a sampled spectrum, and cannot be "
    "turned into a spectrum without GaiaXPy's basis configuration. Run GaiaXPy on it first, "
    "e.g. `from gaiaxpy import calibrate; calibrate('{name}', output_format='ecsv')`, which "
    "writes sampled spectra on 336-1020 nm, and read that output"
)
CONVERT_MESSAGE = (
    "this is GaiaXPy convert() output (an 'xp' column, one row per BP or RP spectrum): BP and "
    "RP in Gaia's internal system, sampled in pseudo-wavelength (pixels), not in nm, so it has "
    "no wavelength scale. Run GaiaXPy's calibrate() instead of convert() on the continuous "
    "(XP_CONTINUOUS_RAW) data and read that output"
)
SAMPLING_FILE_MESSAGE = (
    "this is a GaiaXPy sampling file (one 'pos' column): it holds only the wavelengths that go "
    "with a spectra file. Read the spectra file and pass these values: "
    "read_spectra('output_spectra.csv', sampling=[...])"
)


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


def _refuse(kind: str, names: list[str], source: Source) -> None:
    if kind == "continuous":
        columns = ", ".join(n for n in names if "coefficient" in n)
        raise SpectrumError(COEFFICIENT_MESSAGE.format(columns=columns, name=os.path.basename(source.name)))
    if kind == "convert":
        raise SpectrumError(CONVERT_MESSAGE)
    if kind == "sampling":
        raise SpectrumError(SAMPLING_FILE_MESSAGE)


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
            "pseudo-wavelength (pixels) of convert() output, not nm. " + CONVERT_MESSAGE
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


def _read_rows(source: Source, rows: list[dict[str, Any]], names: list[str],
               stated: np.ndarray | None, flux_unit: str | None) -> list[Spectrum]:
    error_name = "flux_error" if "flux_error" in names else "error"
    lengths = []
    for row in rows[:50]:
        try:
            lengths.append(parse_array(row["flux"]).size)
        except SpectrumError:  # a damaged row is reported below, with its source_id
            continue
    lengths = [n for n in lengths if n > 0]
    if not lengths:
        raise SpectrumError("no row holds a readable flux array (numbers in brackets); the file is damaged")
    sampling, extra = _sampling(max(set(lengths), key=lengths.count), stated, source)
    scale, unit_meta = _flux_scale(flux_unit)
    extra.update(unit_meta)
    spectra = []
    for index, row in enumerate(rows):
        label = f"row {index} (source_id {plain(row.get('source_id'))})"
        spectrum = source.keep(label, lambda r=row: _spectrum(r, error_name, sampling, extra, scale))
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


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
    "Gaia XP sampled spectra written by GaiaXPy calibrate() (CSV / ECSV, arrays as strings)",
    _identify_csv,
)
def read_gaiaxpy_csv(source: Source) -> list[Spectrum]:
    text = source.text or ""
    names = _header_names(text)
    kind = _kind(names)
    _refuse(kind, names, source)
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
    return _read_rows(source, rows, names, sampling, flux_unit)


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
    "Gaia XP sampled spectra written by GaiaXPy calibrate() as FITS (SAMPLING keyword)",
    lambda source: _fits_table(source) is not None,
)
def read_gaiaxpy_fits(source: Source) -> list[Spectrum]:
    hdu = _fits_table(source)
    if hdu is None:
        raise SpectrumError("no GaiaXPy table (a binary table with a SAMPLING keyword)")
    names = [n.lower() for n in hdu.columns.names]
    _refuse(_kind(names), names, source)
    data = hdu.data
    original = {n.lower(): n for n in hdu.columns.names}
    rows = [{n: data[original[n]][i] for n in names} for i in range(len(data))]
    if not rows:
        raise SpectrumError("the GaiaXPy table has no rows")
    units = {c.name.lower(): c.unit for c in hdu.columns if c.unit}
    stated = parse_array(hdu.header["SAMPLING"])
    return _read_rows(source, rows, names, stated, units.get("flux"))
