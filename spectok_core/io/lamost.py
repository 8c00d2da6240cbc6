"""LAMOST spectra: the low-resolution (LRS) and medium-resolution (MRS) survey files.

LRS (R ~ 1800, 3700-9100 Å, 3909 pixels on a log-linear grid, 1e-4 dex):

* DR1-DR7 layout (``spec-LMJD-PLANID_spSS-FFF.fits``): the primary image has
  five rows of N pixels: flux, inverse variance, wavelength (Å), ANDMASK, ORMASK.
* DR8+ layout, written from the LAMOST data model (no real example was at hand):
  a header-only primary HDU and a binary table (EXTNAME ``COADD``) with one row
  of array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK (NORMALIZATION and
  others are ignored). The reader goes by column names, so it also reads the
  one-row-per-pixel variant of that table.

Both layouts keep the pipeline's results in the primary header: CLASS,
SUBCLASS, Z, Z_ERR and the per-band S/N SNRU...SNRZ (kept as ``snr_u``...
``snr_z``; there is no single S/N to call ``snr``).

MRS (R ~ 7500, ``med-LMJD-PLANID_spSS-FFF.fits``): tables ``COADD_B`` (about
4890-5400 Å) and ``COADD_R`` (about 6270-6880 Å), one row per pixel with FLUX,
IVAR, LOGLAM, ANDMASK, ORMASK, on log-linear grids of 1e-5 dex, plus one table
per exposure and arm (``B-LMJM`` / ``R-LMJM``: FLUX, IVAR, LOGLAM, PIXMASK, on
the native CCD pixels, the red arm stored with falling wavelength). The two
coadded arms become ONE spectrum: blue pixels then red pixels, so the grid
simply jumps across the 5400-6270 Å gap between the arms (no pixels are
invented there; the model sees the physical wavelengths). The per-exposure
tables are ignored unless ``mrs_exposures=True`` is passed, which returns one
spectrum per exposure (its B and R tables joined the same way) instead of the
coadd; a file without coadded tables falls back to its exposures. The arms'
S/N are kept as ``snr_b`` and ``snr_r``. MRS spectra are not flux-calibrated.

Wavelengths: every LAMOST header seen says ``VACUUM = T`` (vacuum wavelengths,
heliocentric frame). When the keyword says F they are converted from air to
vacuum; when it is absent they are taken as vacuum, which is what the LAMOST
pipeline has always written. The float32 wavelengths are used as stored (their
rounding is below 0.03 pixel).

Masks: LAMOST pixel mask bits are 1 BADCCD, 2 BADPROFILE, 4 NOSKY, 8 BRIGHTSKY,
16 BADCENTER, 32 NODATA. A pixel is bad when any bit is set in ANDMASK (bad in
every exposure that went into the coadd) or, for a single exposure, in PIXMASK.
ORMASK (bad in at least one exposure) is not used: the coadd still has data
from the other exposures there, with an inverse variance that accounts for it.
"""

from __future__ import annotations

import numpy as np

from ..spectrum import Spectrum, SpectrumError, air_to_vacuum
from .registry import register
from .source import Source

LRS = "lamost_lrs"
MRS = "lamost_mrs"

MASK_BITS = {1: "BADCCD", 2: "BADPROFILE", 4: "NOSKY", 8: "BRIGHTSKY", 16: "BADCENTER", 32: "NODATA"}

MRS_COADDS = ("COADD_B", "COADD_R")
LRS_ROWS = ("flux", "ivar", "wavelength", "andmask", "ormask")
LRS_FLUX_UNIT = "relative flux (LAMOST relative flux calibration, arbitrary scale)"
MRS_FLUX_UNIT = "counts (LAMOST MRS spectra are not flux-calibrated)"


# -- header helpers --------------------------------------------------------------


def _is_lamost(header) -> bool:
    signs = (header.get("TELESCOP"), header.get("ORIGIN"), header.get("AUTHOR"))
    return any(isinstance(value, str) and "LAMOST" in value.upper() for value in signs)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > -9999.0 else None


def _text(value) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _integer(value) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _observation_meta(header) -> dict:
    """What every LAMOST primary header says about the target and the observation."""
    meta: dict = {}
    obsid = _integer(header.get("OBSID"))
    designation = _text(header.get("DESIG"))
    if obsid is not None:
        meta["object_id"] = f"lamost-{obsid}"
        meta["obsid"] = obsid
    elif designation is not None:
        meta["object_id"] = designation
    entries = {
        "designation": designation,
        "ra": _number(header.get("RA")),
        "dec": _number(header.get("DEC")),
        "lmjd": _integer(header.get("LMJD")),
        "mjd": _integer(header.get("MJD")),
        "planid": _text(header.get("PLANID")),
        "spid": _integer(header.get("SPID")),
        "fiberid": _integer(header.get("FIBERID")),
        "data_release": _text(header.get("DATA_V")),
    }
    meta.update({key: value for key, value in entries.items() if value is not None})
    helio = header.get("HELIO")
    if isinstance(helio, bool):
        meta["heliocentric"] = helio
    return meta


def _classification_meta(header) -> dict:
    """The LRS pipeline's class, subclass, redshift and per-band S/N."""
    meta: dict = {}
    cls = (_text(header.get("CLASS")) or "").upper()
    if cls in ("STAR", "GALAXY", "QSO"):
        meta["class"] = cls
    subclass = _text(header.get("SUBCLASS"))
    if subclass is not None and subclass.lower() not in ("non", "unknown"):
        meta["subclass"] = subclass
    for key in ("Z", "Z_ERR"):
        value = _number(header.get(key))
        if value is not None:
            meta[key.lower()] = value
    for band in "ugriz":
        value = _number(header.get(f"SNR{band.upper()}"))
        if value is not None:
            meta[f"snr_{band}"] = value
    return meta


def _to_vacuum(wave: np.ndarray, header, meta: dict) -> np.ndarray:
    if header.get("VACUUM") is False:
        meta["converted_from_air"] = True
        return air_to_vacuum(wave)
    return wave


# -- table columns ----------------------------------------------------------------


def _column(hdu, *names: str) -> np.ndarray | None:
    """One column as a 1-D array; a single row of array cells (DR8+) is unwrapped."""
    columns = {name.upper(): name for name in hdu.columns.names}
    for name in names:
        if name in columns:
            values = np.asarray(hdu.data[columns[name]])
            if values.ndim == 2 and values.shape[0] == 1:
                values = values[0]
            if values.ndim != 1:
                raise SpectrumError(
                    f"{hdu.name}: column {name} has shape {values.shape}; expected one spectrum "
                    "(one row of arrays, or one row per pixel)"
                )
            return values
    return None


def _table_spectrum(hdu, mask_columns: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """(wave, flux, ivar, bad) from a LAMOST spectrum table, sorted by wavelength."""
    if hdu.data is None or len(hdu.data) == 0:
        raise SpectrumError(f"{hdu.name}: the table is empty")
    flux = _column(hdu, "FLUX")
    ivar = _column(hdu, "IVAR")
    wave = _column(hdu, "WAVELENGTH")
    if wave is None:
        loglam = _column(hdu, "LOGLAM")
        wave = None if loglam is None else 10.0 ** np.asarray(loglam, dtype=np.float64)
    if flux is None or ivar is None or wave is None:
        raise SpectrumError(
            f"{hdu.name}: a LAMOST spectrum table needs FLUX, IVAR and WAVELENGTH or LOGLAM "
            f"columns; it has {', '.join(hdu.columns.names)}"
        )
    if not flux.shape == ivar.shape == wave.shape:
        raise SpectrumError(
            f"{hdu.name}: FLUX {flux.shape}, IVAR {ivar.shape} and wavelength {wave.shape} differ"
        )
    bits = _column(hdu, *mask_columns)
    bad = np.zeros(flux.shape, bool) if bits is None else _mask_bits(bits) != 0
    order = np.argsort(wave, kind="stable")
    return wave[order].astype(np.float64), flux[order], ivar[order], bad[order]


def _mask_bits(bits: np.ndarray) -> np.ndarray:
    # The DR1-7 LRS image stores its masks as float rows.
    bits = np.asarray(bits)
    if bits.dtype.kind == "f":
        bits = np.nan_to_num(bits.astype(np.float64), nan=1.0, posinf=1.0, neginf=1.0)
    return bits.astype(np.int64)


# -- LRS ----------------------------------------------------------------------------


def _lrs_table(hdul):
    for hdu in hdul[1:]:
        if hdu.is_image or hdu.name in MRS_COADDS or hdu.name[:2] in ("B-", "R-"):
            continue
        names = {name.upper() for name in hdu.columns.names}
        if {"FLUX", "IVAR"} <= names and names & {"WAVELENGTH", "LOGLAM"}:
            return hdu
    return None


def _is_lrs(source: Source) -> bool:
    hdul = source.hdul
    if not _is_lamost(hdul[0].header) or any(hdu.name in MRS_COADDS for hdu in hdul):
        return False
    image = hdul[0].data
    if image is not None and image.ndim == 2 and image.shape[0] == len(LRS_ROWS):
        return True
    return _lrs_table(hdul) is not None


@register(
    "lamost_lrs", "fits",
    "LAMOST low-resolution spectrum (DR1-7 5-row image, or DR8+ table)",
    _is_lrs, priority=20,
)
def read_lrs(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    header = hdul[0].header
    image = hdul[0].data
    if image is not None and image.ndim == 2:
        flux, ivar, wave, andmask, _ormask = np.asarray(image)
        order = np.argsort(wave, kind="stable")
        wave, flux, ivar = wave[order].astype(np.float64), flux[order], ivar[order]
        bad = _mask_bits(andmask[order]) != 0
    else:
        wave, flux, ivar, bad = _table_spectrum(_lrs_table(hdul), ("ANDMASK",))
    meta = _observation_meta(header)
    meta.update(_classification_meta(header))
    meta["flux_unit"] = _text(header.get("BUNIT")) or LRS_FLUX_UNIT
    wave = _to_vacuum(wave, header, meta)
    return [Spectrum(wave, flux, ivar, bad, LRS, meta)]


# -- MRS ----------------------------------------------------------------------------


def _exposure_hdus(hdul) -> dict[str, dict[str, object]]:
    """Single-exposure tables grouped by exposure (LMJM): {lmjm: {"B": hdu, "R": hdu}}."""
    groups: dict[str, dict[str, object]] = {}
    for hdu in hdul[1:]:
        arm, _, lmjm = hdu.name.partition("-")
        if arm in ("B", "R") and lmjm and not hdu.is_image:
            groups.setdefault(lmjm, {})[arm] = hdu
    return dict(sorted(groups.items()))


def _is_mrs(source: Source) -> bool:
    hdul = source.hdul
    if not _is_lamost(hdul[0].header):
        return False
    return any(hdu.name in MRS_COADDS for hdu in hdul) or bool(_exposure_hdus(hdul))


def _join_arms(arms: dict[str, object], mask_columns: tuple[str, ...]):
    """One spectrum from the blue and red arm tables: blue pixels, then red."""
    pieces = [_table_spectrum(arms[arm], mask_columns) for arm in sorted(arms)]
    if len(pieces) == 2 and pieces[0][0][-1] >= pieces[1][0][0]:
        raise SpectrumError(
            f"the blue arm ends at {pieces[0][0][-1]:.1f} Å, beyond the red arm's start at "
            f"{pieces[1][0][0]:.1f} Å; LAMOST MRS arms do not overlap, so the file is damaged"
        )
    return tuple(np.concatenate(parts) for parts in zip(*pieces))


def _mrs_spectrum(arms: dict, mask_columns, header, meta: dict) -> Spectrum:
    wave, flux, ivar, bad = _join_arms(arms, mask_columns)
    meta["arms"] = "+".join(sorted(arms))
    for arm, hdu in arms.items():
        snr = _number(hdu.header.get("SNR"))
        if snr is not None:
            meta[f"snr_{arm.lower()}"] = snr
    meta["flux_unit"] = MRS_FLUX_UNIT
    wave = _to_vacuum(wave, header, meta)
    return Spectrum(wave, flux, ivar, bad, MRS, meta)


@register(
    "lamost_mrs", "fits",
    "LAMOST medium-resolution spectrum (COADD_B + COADD_R tables as one spectrum)",
    _is_mrs, priority=20,
)
def read_mrs(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    header = hdul[0].header
    base = _observation_meta(header)
    exposures = source.options.get("mrs_exposures", False)
    if not isinstance(exposures, bool):
        raise SpectrumError(f"mrs_exposures must be True or False, not {exposures!r}")
    coadds = {name[-1]: hdul[name] for name in MRS_COADDS if name in hdul}
    if coadds and not exposures:
        meta = dict(base, spectrum_kind="coadd")
        for arm in ("B", "R"):
            n_exp = _integer(header.get(f"NEXP_{arm}"))
            if n_exp is not None:
                meta[f"nexp_{arm.lower()}"] = n_exp
        return [_mrs_spectrum(coadds, ("ANDMASK",), header, meta)]
    if not coadds:
        source.report("no coadded COADD_B/COADD_R table in the file; read its single exposures")
    spectra = []
    for lmjm, arms in _exposure_hdus(hdul).items():
        meta = dict(base, spectrum_kind="exposure", lmjm=int(lmjm) if lmjm.isdigit() else lmjm)
        exptime = _number(next(iter(arms.values())).header.get("EXPTIME"))
        if exptime is not None:
            meta["exptime"] = exptime
        spectrum = source.keep(
            f"exposure {lmjm}",
            lambda arms=arms, meta=meta: _mrs_spectrum(arms, ("PIXMASK",), header, meta),
        )
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra
