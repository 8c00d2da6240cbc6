"""Generic tables: CSV, ECSV and whitespace-separated text, and FITS binary tables.

The last resort for a file no survey reader claims (priority 95). The columns
are sniffed by name, case-insensitively: a wavelength (``wave``, ``wavelength``,
``lambda``, ``lam``, ``wl``; ``loglam`` = log10 Å), a flux (``flux``,
``f_lambda``, ``fnu``, ...), optionally an error (``err``, ``sigma``,
``uncertainty``, ...; or ``ivar`` / ``var``) and a mask (``mask``, ``bad``,
``and_mask``: non-zero = bad). A headerless table of 2 or 3 numeric columns is
read as (wave, flux[, error]).

Wavelength unit, first match wins: the ``wave_unit=`` reader option; the
column's own unit (ECSV / FITS TUNIT); a unit in the column name
(``wavelength [nm]``, ``wave_um``); ``loglam`` names; a header comment such as
``# wavelength (nm)``; and only then the value range (1e3-1e5 Å, 100-3000 nm,
0.3-30 µm, 3-5 log10 Å). A range that fits two units (e.g. 1000-3000 could be
Å or nm) is refused rather than guessed.

Air or vacuum: the ``wave_medium=`` option, then a column name (``wave_air``),
an ``AIRORVAC`` / ``VACUUM`` keyword, or a header comment that says so; air is
converted to vacuum. When nothing says, vacuum is assumed and recorded in
``meta['wave_medium_assumed']``.

A table is not an instrument grid: rows out of wavelength order are sorted
(``meta['wave_sorted']``). A table of overlapping arms or orders written one
after the other (wavelength rises, falls back into the range already covered,
rises again; each run at least 16 rows, at most 16 runs, mostly on wavelengths
of its own) is read as one spectrum per arm, in order of wavelength (``meta['arm']``, ``meta['n_arms']``),
because sorting it would interleave the overlap into a zig-zag; other
repeated wavelengths are refused (two spectra pasted together), rows without a wavelength (NaN or <= 0) are dropped and
reported (padding of array columns only counted in meta), and NaN fluxes
become masked pixels. Without an error column the inverse variance is
estimated from the pixel-to-pixel scatter (``meta['ivar_estimated']``).

The survey is ``unknown`` unless the ``survey=`` option, a SURVEY / INSTRUME /
TELESCOP keyword or a ``survey`` column names a registry instrument.

:func:`survey_key` and :func:`meta_from_columns` are shared with the HDF5
shard reader (:mod:`.mmu`).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError, air_to_vacuum, estimate_ivar, sigma_to_ivar
from ..surveys import SURVEYS
from .registry import register
from .source import Source

# -- column names ----------------------------------------------------------------

WAVE_NAMES = ("wave", "wavelength", "wavelengths", "waves", "lambda", "lam", "wl", "wav", "wavelen")
LOGWAVE_NAMES = (
    "loglam", "log_lam", "loglambda", "log_lambda", "log_wave", "logwave", "log_wavelength",
    "log10_wave", "log10_lambda", "log10lam", "log10_wavelength",
)
FLUX_NAMES = (
    "flux", "f_lambda", "flam", "f_lam", "flux_lambda", "fnu", "f_nu", "flux_nu", "fluxes",
    "flux_density", "norm_flux", "flux_norm", "normalized_flux", "normalised_flux",
    "fluxd",  # CDS / AAS machine-readable tables ("FluxD": flux density)
)
FNU_NAMES = ("fnu", "f_nu", "flux_nu")
ERROR_NAMES = (
    "err", "error", "errors", "sigma", "flux_err", "flux_error", "flux_sigma", "err_flux",
    "error_flux", "e_flux", "eflux", "ferr", "fluxerr", "dflux", "unc", "uncertainty",
    "flux_unc", "flux_uncertainty", "noise", "std", "stddev", "flux_std",
    "e_fluxd",  # CDS / AAS machine-readable tables: "e_X" is the error of X
)
IVAR_NAMES = ("ivar", "inverse_variance", "invvar", "inv_var", "flux_ivar", "ivar_flux")
VAR_NAMES = ("var", "variance", "flux_var", "flux_variance")
MASK_NAMES = (
    "mask", "bad", "and_mask", "andmask", "badpix", "bad_pixel", "bad_pixels", "pixel_mask",
    "flux_mask", "bad_mask",
)
#: Good-pixel masks (1 = use the pixel), as analysis packages write them; used without a mask.
GOOD_NAMES = ("good", "goodpix", "good_pix", "good_pixel", "good_pixels", "good_mask", "valid",
              "valid_mask")
ROLE_NAMES = {
    "wave": WAVE_NAMES, "loglam": LOGWAVE_NAMES, "flux": FLUX_NAMES, "error": ERROR_NAMES,
    "ivar": IVAR_NAMES, "var": VAR_NAMES, "mask": MASK_NAMES, "good": GOOD_NAMES,
}

# -- wavelength units --------------------------------------------------------------

ANGSTROM_UNITS = {"a", "aa", "ang", "angs", "angstrom", "angstroms", "å", "0.1nm", "0.1 nm"}
UNIT_FACTORS = {  # to Å
    **{u: 1.0 for u in ANGSTROM_UNITS},
    **{u: 10.0 for u in ("nm", "nanometer", "nanometers", "nanometre", "nanometres")},
    **{u: 1e4 for u in ("um", "micron", "microns", "micrometer", "micrometers", "micrometre",
                        "micrometres", "mum")},
    "mm": 1e7, "cm": 1e8, "m": 1e10, "meter": 1e10, "metre": 1e10, "meters": 1e10,
}
LOG_UNITS = {"log10(angstrom)", "log(angstrom)", "dex(angstrom)", "log10(a)", "log10(aa)",
             "log_angstrom", "log10_angstrom", "loglam", "log10 angstrom", "log angstrom", "dex"}
# Unit words recognised inside a column name ("wavelength_nm", "lambda_A"); "m" is left out
# because a name such as "wave_m" is more likely something else than metres.
NAME_UNIT_TOKENS = {u for u in UNIT_FACTORS if " " not in u and u not in ("m", "meter", "metre",
                                                                         "meters", "0.1nm")}
MEDIUM_TOKENS = {"air": "air", "vac": "vacuum", "vacuum": "vacuum"}

#: Plausible value ranges per unit, used only when nothing names the unit.
VALUE_RANGES = (("Angstrom", 1e3, 1e5), ("nm", 100.0, 3000.0), ("micron", 0.3, 30.0),
                ("log10(Angstrom)", 3.0, 5.0))

# The patterns below cannot backtrack far: every open-ended repeat is possessive (*+, ++),
# the only lazy one is bounded ({0,40}?), and header text is cut to MAX_COMMENT characters
# a line first, so their cost grows linearly with the header (tests/io/test_hostile.py).
WAVE_WORDS = r"(?:wave\w*+|lambda|wl)"
UNIT_WORDS = r"(angstroms?|å|aa|nm|nanomet\w++|um|µm|μm|microns?|micromet\w++)"
COMMENT_UNIT = re.compile(
    rf"\b{WAVE_WORDS}\b[^\n]{{0,40}}?(?:\(|\[|\bin\b|:|=|\bunits?\b)\s*+{UNIT_WORDS}(?![a-z])",
    re.IGNORECASE,
)
KEYWORD_LINE = re.compile(r"\s*+([A-Za-z][A-Za-z0-9_\-]{0,19}+)\s*+[:=]")
MAX_COMMENT = 400  # characters of one header or comment line that are looked at
MAX_ARMS = 16  # overlapping wavelength runs split into separate spectra, at most


# -- survey names and metadata, shared with the HDF5 shard reader -------------------------------

SURVEY_ALIASES = (  # (substring, registry key), first match wins; specific before general
    ("desi", "desi"), ("apogee", "apogee"), ("lamost_mrs", "lamost_mrs"),
    ("lamost mrs", "lamost_mrs"), ("lamost-mrs", "lamost_mrs"), ("lamost", "lamost_lrs"),
    ("mastar", "mastar"), ("manga", "manga"), ("eboss", "boss"), ("boss", "boss"),
    ("segue", "sdss"), ("sdss", "sdss"), ("gaia", "gaia_xp"), ("miles", "miles"),
    ("stelib", "stelib"), ("spex", "spex"), ("irtf", "spex"),
)


def survey_key(name: Any) -> str | None:
    """The registry key a survey / instrument / telescope name refers to, or None."""
    text = plain(name)
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip().lower()
    if text in SURVEYS and text != "unknown":
        return text
    for alias, key in SURVEY_ALIASES:
        if alias in text:
            return key
    return None


def plain(value: Any) -> Any:
    """A numpy scalar, bytes or 0-d array as a plain Python value (str, int, float, bool)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            return None
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace").strip()
    if isinstance(value, (np.str_, str)):
        return str(value).strip()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (np.float16, np.float32)):
        return float(str(value))  # the shortest decimal: 0.1, not 0.10000000149011612
    if isinstance(value, (float, np.floating)):
        return float(value)
    return None


#: Catalogue column (lower case) -> our meta key. Survey catalogues use upper case.
META_ALIASES = {
    "object_id": "object_id", "objid": "object_id", "obj_id": "object_id",
    "source_id": "object_id", "specobjid": "object_id", "apogee_id": "object_id",
    "targetid": "targetid", "ra": "ra", "ra_deg": "ra", "plug_ra": "ra", "target_ra": "ra",
    "dec": "dec", "dec_deg": "dec", "plug_dec": "dec", "target_dec": "dec",
    "class": "class", "spectype": "class", "subclass": "subclass",
    "z": "z", "redshift": "z", "z_err": "z_err", "zerr": "z_err", "redshift_err": "z_err",
    "zwarning": "zwarning", "zwarn": "zwarning",
    "teff": "teff", "logg": "logg", "feh": "feh", "fe_h": "feh", "alpha_m": "alpha_m",
    "teff_err": "teff_err", "e_teff": "teff_err", "logg_err": "logg_err", "e_logg": "logg_err",
    "feh_err": "feh_err", "fe_h_err": "feh_err", "alpha_m_err": "alpha_m_err",
    "spectral_type": "spectral_type", "sptype": "spectral_type", "spt": "spectral_type",
    "snr": "snr", "plate": "plate", "mjd": "mjd", "fiberid": "fiberid", "fiber": "fiberid",
    "healpix": "healpix",
}
STRING_KEYS = {"object_id", "class", "subclass", "spectral_type", "targetid"}
LABEL_KEYS = {"teff", "logg", "feh", "alpha_m", "teff_err", "logg_err", "feh_err", "alpha_m_err",
              "z", "z_err", "snr", "ra", "dec"}


def meta_from_columns(values: dict[str, Any]) -> dict[str, Any]:
    """Our meta keys from catalogue columns of one object (names matched case-insensitively).

    Unknown values are left out: NaN, empty strings, and the -9999 sentinel that
    APOGEE-style catalogues use for a missing label. ``class`` is upper case;
    ids are strings. The first column that maps to a key wins.
    """
    meta: dict[str, Any] = {}
    for name, raw in values.items():
        key = META_ALIASES.get(str(name).strip().lower())
        if key is None or key in meta:
            continue
        value = plain(raw)
        if value is None or (isinstance(value, str) and not value):
            continue
        if isinstance(value, float) and not np.isfinite(value):
            continue
        if key in LABEL_KEYS and isinstance(value, (int, float)) and value <= -9990:
            continue
        if key in LABEL_KEYS and isinstance(value, str):
            try:  # a header may give "0.123"; "12:30:00" is not decimal degrees, so it is skipped
                value = float(value)
            except ValueError:
                continue
            if not np.isfinite(value):
                continue
        if key in STRING_KEYS:
            value = str(value)
        if key == "class":
            value = value.upper()
        meta[key] = value
    if "object_id" not in meta and "targetid" in meta:
        meta["object_id"] = meta["targetid"]
    return meta


# -- a table, however it was stored ---------------------------------------------------------------


@dataclass
class Table:
    """Columns by name (1-D per pixel, or 2-D with one spectrum per row) plus header facts."""

    columns: dict[str, np.ndarray]
    units: dict[str, str] = field(default_factory=dict)
    keywords: dict[str, Any] = field(default_factory=dict)  # upper-case header keywords
    comments: list[str] = field(default_factory=list)
    container: str = "text table"


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9µμå]+", name.lower()) if t]


def _split_name(name: str) -> tuple[str, str | None, str | None]:
    """(base name for role matching, unit named in it, medium named in it)."""
    unit = None
    # "wave [nm]": the text between the first opening bracket and the next closing one
    # (found by scanning, not by a pattern that could backtrack).
    opening = next((i for i, ch in enumerate(name) if ch in "([{"), -1)
    closing = next((i for i in range(opening + 1, len(name)) if name[i] in ")]}"), -1) \
        if opening >= 0 else -1
    if closing >= 0:
        unit = name[opening + 1 : closing].strip()
        name = name[:opening] + name[closing + 1:]
    kept, medium = [], None
    for token in _tokens(name):
        if token in MEDIUM_TOKENS:
            medium = MEDIUM_TOKENS[token]
        elif token in NAME_UNIT_TOKENS and kept:
            unit = unit or token
        else:
            kept.append(token)
    return "_".join(kept), unit, medium


def _find_columns(columns: dict[str, np.ndarray]) -> dict[str, str]:
    """role -> column name, the best-ranked name for each role."""
    found: dict[str, tuple[int, str]] = {}
    for name, values in columns.items():
        if values.dtype.kind not in "biuf":
            continue
        base = _split_name(name)[0]
        for role, names in ROLE_NAMES.items():
            if base in names:
                rank = names.index(base)
                if role not in found or rank < found[role][0]:
                    found[role] = (rank, name)
    roles = {role: name for role, (_, name) in found.items()}
    if "loglam" in roles and "wave" not in roles:
        roles["wave"] = roles["loglam"]
    else:
        roles.pop("loglam", None)
    return roles


def _accepted_names() -> str:
    return (
        f"wavelength: {', '.join(WAVE_NAMES + LOGWAVE_NAMES[:1])} (loglam = log10 Å); "
        f"flux: {', '.join(FLUX_NAMES[:6])}; error (optional): {', '.join(ERROR_NAMES[:8])}, "
        f"ivar, var; mask (optional): {', '.join(MASK_NAMES[:3])}"
    )


# -- units and medium --------------------------------------------------------------------------


def parse_wave_unit(unit: str | None) -> float | str | None:
    """Å per unit, or ``"log"`` for log10 Å, or None when ``unit`` is not a wavelength unit."""
    if unit is None:
        return None
    text = str(unit).strip().lower().replace("µ", "u").replace("μ", "u").replace("ångström", "å")
    if not text:
        return None
    if text in UNIT_FACTORS:
        return UNIT_FACTORS[text]
    if text in LOG_UNITS or text.replace(" ", "") in LOG_UNITS:
        return "log"
    try:
        import astropy.units as u

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factor = u.Unit(str(unit), parse_strict="silent").to(u.AA)
        return float(factor) if np.isfinite(factor) and factor > 0 else None
    except Exception:  # not a length: a flux unit, a typo, anything else
        return None


def _wave_factor(table: Table, wave_name: str, role: str, values: np.ndarray,
                 options: dict) -> tuple[float | str, str]:
    """(Å per unit or "log", where that came from)."""
    if options.get("wave_unit") is not None:
        factor = parse_wave_unit(options["wave_unit"])
        if factor is None:
            raise SpectrumError(
                f"wave_unit={options['wave_unit']!r} is not a wavelength unit; use one of "
                "'Angstrom', 'nm', 'micron', 'm' or 'log10(Angstrom)'"
            )
        return factor, "the wave_unit option"
    column_unit = table.units.get(wave_name)
    if column_unit:
        factor = parse_wave_unit(column_unit)
        if factor is not None:
            return factor, f"the column unit {column_unit!r}"
    name_unit = _split_name(wave_name)[1]
    if name_unit:
        factor = parse_wave_unit(name_unit)
        if factor is not None:
            return factor, f"the column name {wave_name!r}"
    if role == "loglam":
        return "log", f"the column name {wave_name!r} (log10 Å)"
    for comment in table.comments:
        match = COMMENT_UNIT.search(comment)
        if match:
            factor = parse_wave_unit(match.group(1))
            if factor is not None:
                return factor, f"the header line {comment.strip()[:60]!r}"
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size == 0:
        raise SpectrumError(f"the wavelength column {wave_name!r} holds no numbers")
    lo, hi = float(finite.min()), float(finite.max())
    fits = [unit for unit, low, high in VALUE_RANGES if low <= lo and hi <= high]
    if len(fits) == 1:
        unit = fits[0]
        return parse_wave_unit(unit), f"the value range {lo:g}-{hi:g} (taken as {unit})"
    why = (f"fits {' and '.join(fits)}" if fits else "fits no usual unit "
           "(1e3-1e5 Å, 100-3000 nm, 0.3-30 µm, 3-5 log10 Å)")
    raise SpectrumError(
        f"cannot tell the wavelength unit of column {wave_name!r}: its range {lo:g}-{hi:g} {why}. "
        "Put the unit in the column header (e.g. 'wavelength_nm' or 'wave [Angstrom]'), or "
        "pass it: read_spectra(..., wave_unit='nm')"
    )


def _keyword(table: Table, *names: str) -> Any:
    for name in names:
        if name in table.keywords:
            return table.keywords[name]
    return None


def _medium(table: Table, wave_name: str, options: dict) -> tuple[str, bool]:
    """('air' or 'vacuum', whether something said so)."""
    option = options.get("wave_medium")
    if option is not None:
        text = str(option).strip().lower()
        if text not in ("air", "vacuum", "vac"):
            raise SpectrumError(f"wave_medium={option!r}: use 'air' or 'vacuum'")
        return ("air" if text == "air" else "vacuum"), True
    named = _split_name(wave_name)[2]
    if named:
        return named, True
    airorvac = plain(_keyword(table, "AIRORVAC", "WAVE_MEDIUM", "MEDIUM"))
    if isinstance(airorvac, str) and airorvac:
        low = airorvac.lower()
        if low.startswith("air"):
            return "air", True
        if low.startswith("vac"):
            return "vacuum", True
    vacuum = plain(_keyword(table, "VACUUM"))
    if isinstance(vacuum, bool):
        return ("vacuum" if vacuum else "air"), True
    if isinstance(vacuum, str) and vacuum.upper() in ("T", "F", "TRUE", "FALSE"):
        return ("vacuum" if vacuum.upper().startswith("T") else "air"), True
    # A comment decides only when it speaks of the wavelengths ("airmass" does not count).
    said_air = said_vacuum = False
    for comment in table.comments:
        low = comment.lower()
        if not re.search(WAVE_WORDS, low):
            continue
        said_vacuum |= bool(re.search(r"\bvac(uum)?\b", low))
        said_air |= bool(re.search(r"\bair\b", low))
    if said_vacuum:  # "converted from air to vacuum" names both; vacuum is the result
        return "vacuum", True
    if said_air:
        return "air", True
    return "vacuum", False


def survey_option(options: dict) -> str | None:
    """The registry key a caller forced with ``survey=``, checked; None when not given."""
    if options.get("survey") is None:
        return None
    key = str(options["survey"]).strip().lower()
    if key not in SURVEYS:
        raise SpectrumError(
            f"survey={options['survey']!r} is not a known survey key; use one of "
            f"{', '.join(sorted(SURVEYS))}"
        )
    return key


def _survey(table: Table, options: dict) -> str:
    chosen = survey_option(options)
    if chosen:
        return chosen
    for name in ("SURVEY", "INSTRUME", "INSTRUMENT", "TELESCOP", "TELESCOPE"):
        key = survey_key(table.keywords.get(name))
        if key:
            return key
    for name, values in table.columns.items():
        if name.strip().lower() == "survey" and values.size:
            key = survey_key(np.ravel(values)[0])
            if key:
                return key
    return "unknown"


def _header_meta(table: Table) -> dict[str, Any]:
    meta = meta_from_columns(table.keywords)
    for name in ("OBJECT", "OBJNAME", "OBJ_NAME", "STARNAME", "NAME"):
        value = plain(table.keywords.get(name))
        if value not in (None, ""):
            meta.setdefault("object_id", str(value))
            break
    return meta


# -- turning columns into spectra ----------------------------------------------------------------


def _overlapping_runs(wave: np.ndarray) -> list[slice] | None:
    """The increasing runs of a table that holds several overlapping arms or orders, else None.

    A table of two arms one after the other (4000-6000 Å, then 5800-9000 Å)
    goes up, drops back, and goes up again; sorting it would interleave the
    overlap into a zig-zag. Long runs (each a spectrum's worth of pixels, at most
    MAX_ARMS of them) whose ranges overlap are such arms. Rows merely out of
    order (short runs), a descending table, or arms that do not overlap are
    not: those are sorted into one spectrum.
    """
    from ..spectrum import MIN_GOOD_PIXELS

    breaks = np.flatnonzero(np.diff(wave) < 0) + 1
    if not 0 < len(breaks) < MAX_ARMS:
        return None
    bounds = [0, *breaks.tolist(), len(wave)]
    runs = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if any(run.stop - run.start < MIN_GOOD_PIXELS for run in runs):
        return None
    runs = sorted(runs, key=lambda run: wave[run.start])
    covered, overlapping = -np.inf, 0
    for run in runs:
        overlapping += int(np.count_nonzero(wave[run] <= covered))
        covered = max(covered, wave[run.stop - 1])
    if overlapping == 0:
        return None
    # The same wavelengths again are the same spectrum pasted twice, not a second arm.
    repeated = wave.size - np.unique(wave).size
    return None if 2 * repeated > overlapping else runs


def _one_spectrum(table: Table, roles: dict[str, str], row: int | None, source: Source,
                  settings: dict[str, Any]) -> Spectrum:
    spectra = _spectra(table, roles, row, source, settings)
    if len(spectra) > 1:
        raise SpectrumError(
            f"the row holds {len(spectra)} overlapping wavelength runs (arms or orders); "
            "store one spectrum per row"
        )
    return spectra[0]


def _spectra(table: Table, roles: dict[str, str], row: int | None, source: Source,
             settings: dict[str, Any]) -> list[Spectrum]:
    """The spectrum of a table (or of one row); several when it holds overlapping arms."""
    def column(role: str) -> np.ndarray | None:
        if role not in roles:
            return None
        values = table.columns[roles[role]]
        return np.asarray(values[row] if row is not None else values, dtype=np.float64).ravel()

    wave, flux = column("wave"), column("flux")
    if wave.size != flux.size:
        raise SpectrumError(f"wavelength and flux have different lengths ({wave.size}, {flux.size})")
    error, ivar, var = column("error"), column("ivar"), column("var")
    if error is not None:
        ivar = sigma_to_ivar(error)
    elif var is not None:
        ivar = sigma_to_ivar(np.sqrt(np.where(var > 0, var, np.nan)))
    elif ivar is not None:  # a negative or NaN weight marks a pixel without a measurement
        ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
    meta = dict(settings["meta"])
    mask = np.zeros(wave.size, dtype=bool)
    mask_name = roles.get("mask", roles.get("good"))
    if mask_name is not None:  # which convention the writer used: see image1d.interpret_mask
        from .image1d import interpret_mask

        raw = table.columns[mask_name]
        raw = np.asarray(raw[row] if row is not None else raw).ravel()
        unmeasured = ~np.isfinite(flux) if ivar is None else ~(ivar > 0)
        if "mask" in roles:
            mask, meta["mask_convention"] = interpret_mask(
                raw, mask_name, boolean=raw.dtype.kind == "b", unmeasured=unmeasured)
            mask = mask | (np.isnan(raw) if raw.dtype.kind == "f" else False)
        else:
            mask = np.nan_to_num(raw.astype(np.float64), nan=0.0) == 0
            meta["mask_convention"] = f"good-pixel column {mask_name!r} (1 = good)"

    placed = np.isfinite(wave) & (wave > 0)  # NaN, or 0 / -1 padding of array columns
    if not np.all(placed):
        n_dropped = int(np.sum(~placed))
        if row is None:  # in array columns (one spectrum per row) this is just padding
            source.report(f"{n_dropped} table rows without a wavelength (NaN or <= 0) were dropped")
        meta["rows_dropped_no_wavelength"] = n_dropped
        wave, flux, mask = wave[placed], flux[placed], mask[placed]
        ivar = ivar[placed] if ivar is not None else None

    factor = settings["factor"]
    if factor == "log":
        if wave.size and (wave.min() < 0 or wave.max() > 10):
            raise SpectrumError(
                f"column {roles['wave']!r} is taken as log10(wavelength/Å) but holds values "
                f"{wave.min():g}-{wave.max():g}; pass wave_unit= with the real unit"
            )
        wave = 10.0**wave
    else:
        wave = wave * factor
    if settings["medium"] == "air":
        wave = air_to_vacuum(wave)

    arms = _overlapping_runs(wave) if wave.size > 1 else None
    if arms:
        note = (f"the table holds {len(arms)} overlapping wavelength runs (arms or orders), "
                "read as separate spectra in order of wavelength")
        return [
            _finish(wave[run], flux[run], None if ivar is None else ivar[run], mask[run],
                    {**meta, "arm": number, "n_arms": len(arms), "wave_split": note}, settings)
            for number, run in enumerate(arms)
        ]
    if wave.size > 1 and not np.all(np.diff(wave) > 0):
        order = np.argsort(wave, kind="stable")
        wave, flux, mask = wave[order], flux[order], mask[order]
        ivar = ivar[order] if ivar is not None else None
        repeated = np.flatnonzero(np.diff(wave) == 0)
        if repeated.size:
            value = wave[repeated[0]]
            raise SpectrumError(
                f"the wavelength {value:.6g} Å appears more than once ({repeated.size} repeated "
                "wavelengths): a table must hold one spectrum. If it holds several orders, arms "
                "or spectra, split them into separate files"
            )
        meta["wave_sorted"] = "rows were not in wavelength order; sorted by wavelength"
    return [_finish(wave, flux, ivar, mask, meta, settings)]


def _finish(wave, flux, ivar, mask, meta: dict, settings: dict[str, Any]) -> Spectrum:
    if ivar is None:
        good = np.isfinite(flux) & ~mask
        ivar = estimate_ivar(flux, good)
        meta["ivar_estimated"] = True
    return Spectrum(wave, flux, ivar, mask, settings["survey"], meta)


def spectra_from_table(table: Table, source: Source) -> list[Spectrum]:
    """Every spectrum in ``table`` (one, or one per row for array columns)."""
    options = source.options
    roles = _find_columns(table.columns)
    if "wave" not in roles or "flux" not in roles:
        found = ", ".join(repr(name) for name in table.columns) or "none"
        missing = " and ".join(r for r in ("wave", "flux") if r not in roles)
        raise SpectrumError(
            f"{table.container} without a recognisable {missing} column. Columns found: {found}. "
            f"Accepted names (any case; units may follow in brackets, e.g. 'wave [nm]'): "
            f"{_accepted_names()}"
        )
    wave_name = roles["wave"]
    wave_values = np.asarray(table.columns[wave_name], dtype=np.float64)
    role = "loglam" if _split_name(wave_name)[0] in LOGWAVE_NAMES else "wave"
    factor, unit_from = _wave_factor(table, wave_name, role, wave_values, options)
    medium, medium_stated = _medium(table, wave_name, options)

    meta = _header_meta(table)
    meta["wave_unit_from"] = unit_from
    if medium_stated:
        meta["wave_medium_original"] = medium
    else:
        meta["wave_medium_assumed"] = "vacuum"
    flux_unit = table.units.get(roles["flux"]) or _split_name(roles["flux"])[1]
    flux_unit = flux_unit or plain(_keyword(table, "BUNIT", "FLUXUNIT", "FLUX_UNIT"))
    if flux_unit:
        meta["flux_unit"] = str(flux_unit)
    elif _split_name(roles["flux"])[0] in FNU_NAMES:
        meta["flux_unit"] = "f_nu (unit not stated)"
    settings = {"factor": factor, "medium": medium, "survey": _survey(table, options), "meta": meta}

    if wave_values.ndim == 1:
        return _spectra(table, roles, None, source, settings)
    if wave_values.ndim != 2 or np.asarray(table.columns[roles["flux"]]).shape != wave_values.shape:
        raise SpectrumError(
            f"array columns {wave_name!r} and {roles['flux']!r} have different shapes "
            f"{wave_values.shape} and {np.asarray(table.columns[roles['flux']]).shape}"
        )
    scalar = {n: v for n, v in table.columns.items() if np.ndim(v) == 1}
    spectra = []
    for row in range(wave_values.shape[0]):
        row_settings = dict(settings)
        row_settings["meta"] = {**meta, **meta_from_columns({n: v[row] for n, v in scalar.items()})}
        spectrum = source.keep(
            f"table row {row}", lambda r=row, s=row_settings: _one_spectrum(table, roles, r, source, s)
        )
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


# -- text -------------------------------------------------------------------------------------------


def _split_fields(line: str, delimiter: str | None) -> list[str]:
    if delimiter is not None:
        return [f.strip().strip('"').strip("'") for f in line.split(delimiter)]
    fields: list[str] = []
    for token in line.split():
        # "wavelength (nm)" is one column name, not two
        if fields and len(token) > 1 and token[0] in "([{" and token[-1] in ")]}":
            fields[-1] += " " + token
        else:
            fields.append(token)
    return fields


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _delimiter(line: str) -> str | None:
    for delimiter in ("\t", ";", ",", "|"):
        if delimiter in line:
            return delimiter
    return None


def _looks_tabular(text: str) -> bool:
    head = text[: 1 << 20].splitlines()[:200]
    lines = [ln for ln in head if ln.strip() and not ln.lstrip().startswith("#")]
    for line in lines[:20]:
        delimiter = _delimiter(line)
        if delimiter == ";":
            line = line.replace(",", ".")
        fields = _split_fields(line, delimiter)
        if sum(_is_number(f) for f in fields) >= 2:
            return True
    return False


def _text_table(source: Source) -> Table:
    import pandas as pd

    text = source.text or ""
    lines = text.splitlines()
    comments = [ln.strip().lstrip("#").strip()[:MAX_COMMENT] for ln in lines
                if ln.strip().startswith("#")]
    body = [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not body:
        raise SpectrumError("the text file holds only comments or blank lines, no table rows")
    _check_rows(len(body) - 1, source)
    delimiter = _delimiter(body[0]) if len(body) == 1 else (_delimiter(body[1]) or _delimiter(body[0]))
    first = _split_fields(body[0], delimiter)
    if len(first) > source.limits.max_columns:
        raise SpectrumError(
            f"the table has {len(first):,} columns, over the {source.limits.max_columns:,} spectok "
            "reads; a spectrum table needs a wavelength, a flux and perhaps an error column"
        )
    header: list[str] | None = None
    if not all(_is_number(f) for f in first if f):
        header, body = first, body[1:]
    else:
        # "# wave flux error" just above the numbers is a header too
        last_comment = None
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                last_comment = stripped.lstrip("#").strip()
            elif stripped:
                break
        if last_comment:
            names = _split_fields(last_comment, delimiter)
            if len(names) == len(first) and not any(_is_number(n) for n in names):
                header = names
    if not body:
        raise SpectrumError("the table has a header line but no rows of numbers")
    if delimiter == ";" and any("," in line for line in body[:20]):
        body = [line.replace(",", ".") for line in body]  # "4000,5;1,2": decimal commas
    sep = delimiter if delimiter is not None else r"\s+"
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(body)), sep=sep, header=None, engine="c" if sep != "|" else "python",
            skipinitialspace=True, quotechar='"', comment=None,
        )
    except Exception as err:  # pandas: ParserError, EmptyDataError, ...
        raise SpectrumError(
            f"the table rows do not parse ({type(err).__name__}: {str(err).strip()[:200]}); "
            "every row must have the same number of values as the header has names"
        ) from None
    n_columns = frame.shape[1]
    if header is None:
        if n_columns not in (2, 3):
            raise SpectrumError(
                f"a table without a header line with {n_columns} columns: spectok only guesses the "
                "layout of 2 or 3 columns (wavelength, flux[, error]). Add a header line naming "
                f"the columns. Accepted names: {_accepted_names()}"
            )
        header = ["wave", "flux", "error"][:n_columns]
    if len(header) != n_columns:
        raise SpectrumError(
            f"the header names {len(header)} columns ({', '.join(header)}) but the rows hold "
            f"{n_columns} values; make the header and the rows agree"
        )
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(header):
        values = frame.iloc[:, index]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.dtype.kind in "biuf" or numeric.notna().sum() >= 0.5 * len(values):
            columns[name or f"col{index + 1}"] = numeric.to_numpy(dtype=np.float64)
        else:
            columns[name or f"col{index + 1}"] = values.astype(str).to_numpy()
    keywords = {}
    for comment in comments:
        match = KEYWORD_LINE.match(comment)
        if match:
            value = comment[match.end():].strip().strip("'\"")
            keywords.setdefault(match.group(1).upper(), value)
    return Table(columns, {}, keywords, comments, "text table")


def _astropy_columns(table) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """An astropy table's columns as numpy arrays (masked floats filled with NaN) and their units."""
    columns, units = {}, {}
    for name in table.colnames:
        column = table[name]
        data = column.filled(np.nan) if hasattr(column, "filled") and column.dtype.kind in "f" else column
        array = np.asarray(data)
        columns[name] = array.astype(np.float64) if array.dtype.kind in "biuf" else array.astype(str)
        if column.unit is not None:
            units[name] = column.unit.to_string()
    return columns, units


def _ecsv_table(source: Source) -> Table:
    from astropy.table import Table as AstropyTable

    text = source.text or ""
    n_header = sum(1 for line in text[: 1 << 24].splitlines() if line.startswith("#"))
    if n_header > source.limits.max_header_cards:
        raise SpectrumError(f"the ECSV header has more than {source.limits.max_header_cards:,} "
                            "lines; that is no spectrum table spectok reads")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = AstropyTable.read((source.text or "").splitlines(), format="ascii.ecsv")
    except Exception as err:
        raise SpectrumError(
            f"the ECSV header or rows do not parse ({type(err).__name__}: {str(err)[:200]}); "
            "check the file, or save it as plain CSV with a header line"
        ) from None
    columns, units = _astropy_columns(table)
    keywords = {str(k).upper(): v for k, v in table.meta.items() if plain(v) is not None}
    comments = [str(c)[:MAX_COMMENT] for c in table.meta.get("comments", [])]
    return Table(columns, units, keywords, comments, "ECSV table")


MRT_MARK = "Byte-by-byte Description of file"


def _is_mrt(text: str) -> bool:
    """A CDS / AAS machine-readable table (byte-by-byte column description above the rows)."""
    return MRT_MARK.lower() in text[: 1 << 16].lower()


def _mrt_table(source: Source) -> Table:
    """A CDS / AAS machine-readable table, as journals publish spectra (e.g. SDSS composites)."""
    from astropy.table import Table as AstropyTable

    text = source.text or ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = AstropyTable.read(text.splitlines(), format="ascii.mrt")
    except Exception as err:
        raise SpectrumError(
            f"a machine-readable (CDS/MRT) table whose byte-by-byte description or rows do not "
            f"parse ({type(err).__name__}: {str(err)[:200]}); save it as plain CSV with a header line"
        ) from None
    if len(table.colnames) > source.limits.max_columns:
        raise SpectrumError(f"the table has {len(table.colnames):,} columns, over the "
                            f"{source.limits.max_columns:,} spectok reads")
    columns, units = _astropy_columns(table)
    keywords, comments = {}, []
    for line in text[: 1 << 16].splitlines():
        if line.startswith("=") or line.lower().startswith("byte-by-byte"):
            break
        comments.append(line.strip()[:MAX_COMMENT])
        match = KEYWORD_LINE.match(line)
        if match and match.group(1).upper() in ("TITLE", "TABLE"):
            keywords.setdefault(match.group(1).upper(), line[match.end():].strip()[:MAX_COMMENT])
    return Table(columns, units, keywords, comments, "machine-readable (MRT) table")


def _check_rows(n_rows: int, source: Source) -> None:
    """A text table holds one pixel per row: more rows than the pixel limit are refused."""
    if n_rows > source.limits.max_pixels:
        raise SpectrumError(
            f"the table has about {n_rows:,} rows, one per pixel: over the "
            f"{source.limits.max_pixels:,} limit on the pixels of one spectrum; split it, or raise "
            "the limit with max_pixels= or SPECTOK_MAX_PIXELS"
        )


def _identify_text(source: Source) -> bool:
    text = source.text or ""
    return text.lstrip().startswith("# %ECSV") or _is_mrt(text) or _looks_tabular(text)


@register(
    "text_table", "text",
    "generic CSV / ECSV / CDS-MRT / whitespace table with wavelength, flux[, error] columns",
    _identify_text, priority=95,
)
def read_text_table(source: Source) -> list[Spectrum]:
    text = source.text or ""
    # Count lines before anything is split or parsed: a bomb of rows stops here.
    _check_rows(max(text.count("\n"), text.count("\r")) - source.limits.max_header_cards, source)
    if text.lstrip().startswith("# %ECSV"):
        table = _ecsv_table(source)
    elif _is_mrt(text):
        table = _mrt_table(source)
    else:
        table = _text_table(source)
    return spectra_from_table(table, source)


# -- FITS tables -------------------------------------------------------------------------------------


def _fits_tables(source: Source) -> list:
    from astropy.io import fits

    return [hdu for hdu in source.hdul
            if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and hdu.columns.names]


def _identify_fits(source: Source) -> bool:
    return bool(_fits_tables(source))


@register(
    "fits_table", "fits",
    "generic FITS binary table with wavelength, flux[, error] columns (per pixel or per row)",
    _identify_fits, priority=95,
)
def read_fits_table(source: Source) -> list[Spectrum]:
    hdus = _fits_tables(source)
    primary = source.hdul[0].header
    described = []
    for index, hdu in enumerate(hdus):
        data = hdu.data
        if data is None or len(data) == 0:
            described.append(f"{hdu.name or index}: empty")
            continue
        columns = {}
        for name in hdu.columns.names:
            try:
                array = np.asarray(data[name])
            except Exception:  # a malformed column: skip it, the others may do
                continue
            if array.dtype.kind == "S":
                text = [bytes(v).decode("utf-8", "replace").strip() for v in array.ravel()]
                columns[name] = np.array(text, dtype=str).reshape(array.shape)
            elif array.dtype.kind == "U":
                columns[name] = np.char.strip(array)
            elif array.dtype.kind in "biuf":
                columns[name] = array  # native type: a float32 z of 0.1 stays 0.1 in meta
        if not {"wave", "flux"} <= set(_find_columns(columns)):
            described.append(f"{hdu.name or index}: {', '.join(hdu.columns.names)}")
            continue
        units = {c.name: c.unit for c in hdu.columns if c.unit}
        keywords = {k.upper(): plain(v) for k, v in list(primary.items()) + list(hdu.header.items())
                    if k and plain(v) is not None}
        table = Table(columns, units, keywords, [], f"FITS table (HDU {hdu.name or index})")
        return spectra_from_table(table, source)
    raise SpectrumError(
        "FITS tables without a recognisable wavelength and flux column. Tables found: "
        f"{'; '.join(described)}. Accepted names (any case): {_accepted_names()}"
    )
