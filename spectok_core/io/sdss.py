"""SDSS-I/II and BOSS/eBOSS optical spectra (the 2.5 m telescope's two spectrograph generations).

Three layouts are read:

``sdss_spec``
    ``spec-PLATE-MJD-FIBER.fits`` of DR8 onwards, and their ``lite`` versions (also
    under other names, e.g. the ``gelato_paper_<objid>.fits`` examples of the GELATO
    emission-line code, which are spec-lite files renamed by photometric object id).
    HDU1 ``COADD`` table: ``flux``, ``loglam``, ``ivar``, ``and_mask``, ...;
    HDU2 ``SPECOBJ`` (SDSS-I/II) or ``SPALL`` (BOSS) with CLASS, SUBCLASS, Z, Z_ERR,
    ZWARNING, PLATE, MJD, FIBERID, PLUG_RA/PLUG_DEC.
``sdss_spspec``
    DR1-DR7 ``spSpec-MJD-PLATE-FIBER.fit``: primary image of 4 rows (flux,
    continuum-subtracted flux, 1-sigma error with 0 for bad pixels, pixel mask),
    log-λ grid ``10**(COEFF0 + COEFF1*i)``, labels in header keywords (Z, Z_ERR,
    Z_WARNIN, SPEC_CLN, RAOBJ, DECOBJ). Written from the DR7 data model
    (classic.sdss.org/dr7/dm/flatFiles/spSpec.html); no real file was at hand, so the
    header keywords read are the documented ones, each optional. The mask row is
    taken to carry the same SPPIXMASK bits as spPlate.
``sdss_spplate``
    ``spPlate-PLATE-MJD.fits``: primary image of flux (one row per fibre, or one 1D
    spectrum) with COEFF0/COEFF1 in the header, HDU1 inverse variance, HDU2 AND mask,
    HDU5 plug map (OBJTYPE, RA, DEC, FIBERID). Written from the spPlate data model;
    sky and unplugged fibres are reported, not returned.

All SDSS/BOSS wavelengths are vacuum (header ``VACUUM = T``); flux is
1e-17 erg/s/cm2/Å; nothing is resampled.

**SDSS or BOSS.** The two spectrographs differ (3800-9200 Å, 3" fibres vs
3600-10400 Å, 2" fibres), so the survey key says which one took the data:
the ``INSTRUMENT`` column of SPECOBJ when present; otherwise the MJD: the BOSS
spectrographs replaced the SDSS ones in the 2009 summer shutdown (SEGUE-2, the last
SDSS-spectrograph programme, ended July 2009; BOSS first light September 2009), so
MJD >= 55050 is BOSS; without an MJD, a grid reaching below 3700 Å or above 9400 Å is
BOSS. RUN2D is not used: it names a pipeline version, and DR17 re-reduced old data.

**Mask.** A pixel is bad when ivar is 0 or its AND mask (set in every exposure)
has one of the SPPIXMASK bits in :data:`BAD_BITS`: calibration failures of the
fibre (NOPLUG, BADTRACE, BADFLAT, BADARC, MANYREJECTED, LARGESHIFT, BADSKYFIBER,
WHOPPER) and pixel failures (LOWFLAT, FULLREJECT, NOSKY, BRIGHTSKY, NODATA,
COMBINEREJ, BADFLUXFACTOR, BADSKYCHI, REDMONSTER). Not bad: MANYBADCOLUMNS (a
fibre-level note that >10 % of a camera's columns are bad; the bad columns
themselves already have ivar 0, and the real files show whole red arms with this
bit and normal flux), NEARBADPIXEL, PARTIALREJECT, SCATTEREDLIGHT, CROSSTALK,
NEARWHOPPER and the SMEAR bits, which describe usable pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spectrum import MIN_GOOD_PIXELS, Spectrum, SpectrumError, sigma_to_ivar
from .fitsvalues import header_value, plain_value
from .image1d import UNCERTAINTY_NAMES, header_text, interpret_mask, uncertainty_to_ivar
from .registry import register
from .source import Source

FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"

#: SPPIXMASK bit numbers (idlutils sdssMaskbits.par).
SPPIXMASK = {
    "NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4,
    "MANYREJECTED": 5, "LARGESHIFT": 6, "BADSKYFIBER": 7, "NEARWHOPPER": 8, "WHOPPER": 9,
    "SMEARIMAGE": 10, "SMEARHIGHSN": 11, "SMEARMEDSN": 12, "NEARBADPIXEL": 16,
    "LOWFLAT": 17, "FULLREJECT": 18, "PARTIALREJECT": 19, "SCATTEREDLIGHT": 20,
    "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23, "NODATA": 24, "COMBINEREJ": 25,
    "BADFLUXFACTOR": 26, "BADSKYCHI": 27, "REDMONSTER": 28,
}
BAD_BITS = (
    "NOPLUG", "BADTRACE", "BADFLAT", "BADARC", "MANYREJECTED", "LARGESHIFT", "BADSKYFIBER",
    "WHOPPER", "LOWFLAT", "FULLREJECT", "NOSKY", "BRIGHTSKY", "NODATA", "COMBINEREJ",
    "BADFLUXFACTOR", "BADSKYCHI", "REDMONSTER",
)
BAD_MASK = sum(1 << SPPIXMASK[name] for name in BAD_BITS)

#: ZWARNING bits of the SDSS redshift pipeline (spectro1d / idlspec2d).
ZWARNING_BITS = (
    "SKY", "LITTLE_COVERAGE", "SMALL_DELTA_CHI2", "NEGATIVE_MODEL", "MANY_OUTLIERS",
    "Z_FITLIMIT", "NEGATIVE_EMISSION", "UNPLUGGED", "BAD_TARGET", "NODATA",
)

#: First MJD of the BOSS spectrographs (installed in the 2009 summer shutdown).
BOSS_FIRST_MJD = 55050

#: spSpec SPEC_CLN codes (DR7 data model) -> our class names.
SPEC_CLN = {1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 6: "STAR", 7: "GALAXY"}


# -- small helpers ----------------------------------------------------------------


def _bits(value: int, names: tuple[str, ...] | dict[str, int]) -> list[str]:
    items = names.items() if isinstance(names, dict) else ((n, i) for i, n in enumerate(names))
    return [name for name, bit in items if value >> bit & 1]


def _mask_values(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer mask values, and where the stored value is no valid bitmask (NaN, negative, huge)."""
    mask = np.asarray(mask)
    if mask.dtype.kind in "iu":
        return mask.astype(np.int64), np.zeros(mask.shape, dtype=bool)
    values = np.asarray(mask, dtype=np.float64)  # spSpec stores its mask row as float
    invalid = ~np.isfinite(values) | (values < 0) | (values >= 2.0**32)
    return np.where(invalid, 0.0, values).astype(np.int64), invalid


def bad_pixels(and_mask: np.ndarray) -> np.ndarray:
    """True where an SDSS AND mask has a bit of :data:`BAD_BITS` (or is no valid mask value)."""
    values, invalid = _mask_values(and_mask)
    return ((values & BAD_MASK) != 0) | invalid


def survey_key(instrument: Any, mjd: Any, wave: np.ndarray) -> str:
    """``sdss`` or ``boss`` by the rule in the module docstring."""
    instrument = plain_value(instrument)
    if isinstance(instrument, str) and instrument.upper() in ("SDSS", "BOSS"):
        return instrument.lower()
    mjd = plain_value(mjd)
    if isinstance(mjd, (int, float)) and mjd > 0:
        return "boss" if mjd >= BOSS_FIRST_MJD else "sdss"
    return "boss" if wave[0] < 3700.0 or wave[-1] > 9400.0 else "sdss"


def loglam_to_wave(loglam: np.ndarray) -> np.ndarray:
    """Vacuum Å from a stored log10 λ column.

    The spec files store loglam as float32, which rounds log10 λ by up to ~1e-7
    dex (0.001-0.003 Å) and makes the steps alternate between 0.99897e-4 and
    1.00136e-4. The pipeline's grid is exactly log10 λ = k * 1e-4 for integer k,
    so when the column lies on that grid to float32 precision the exact grid is
    rebuilt (the same pixels, not a resampling); otherwise the column is used as is.
    """
    loglam = np.asarray(loglam, dtype=np.float64)
    if not np.all(np.isfinite(loglam) & (loglam > 2.5) & (loglam < 5.0)):
        raise SpectrumError(
            "the loglam column holds values that are not log10 of optical wavelengths in Å "
            f"(range {np.nanmin(loglam):.4g} to {np.nanmax(loglam):.4g}); the file is damaged"
        )
    if loglam.size > 1:
        step = 1e-4
        k = np.round(loglam / step)
        if np.all(np.diff(k) == 1) and np.max(np.abs(loglam - k * step)) < 1e-6:
            return 10.0 ** (k * step)
    return 10.0**loglam


def _check_usable(name: str, ivar: np.ndarray, bad: np.ndarray, and_mask, zwarning) -> None:
    """A clear error for a spectrum the pipeline produced but that holds no data."""
    usable = (ivar > 0) & np.isfinite(ivar) & ~bad
    n_good = int(np.sum(usable))
    if n_good >= MIN_GOOD_PIXELS:
        return
    parts = []
    if zwarning:
        parts.append(
            f"the SDSS pipeline flagged this spectrum (ZWARNING={zwarning}: "
            f"{', '.join(_bits(zwarning, ZWARNING_BITS)) or 'unknown bits'})"
        )
    bits = ""
    if and_mask is not None and len(and_mask):
        values, _ = _mask_values(and_mask)
        names = [n for n in _bits(int(np.bitwise_or.reduce(values)), SPPIXMASK) if n in BAD_BITS]
        bits = f"; bad mask bits present: {', '.join(names)}" if names else ""
    what = "no pixel is usable" if n_good == 0 else f"only {n_good} pixels are usable"
    n_bad = ivar.size - n_good
    parts.append(f"{what} ({n_bad} of {ivar.size} have ivar=0 or a bad mask bit{bits})")
    raise SpectrumError(
        f"{name}: " + " and ".join(parts)
        + ". This observation has no spectrum to read; use another plate/MJD/fibre of the object."
    )


def _object_id(survey: str, plate, mjd, fiber) -> str | None:
    if all(isinstance(v, int) for v in (plate, mjd, fiber)):
        return f"{survey}-{plate:04d}-{mjd:05d}-{fiber:04d}"
    return None


def _clean(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if v is not None and v != ""}


# -- spec-PLATE-MJD-FIBER ----------------------------------------------------------


def _coadd_columns(hdu) -> dict[str, str]:
    """Lower-case name -> real name of a table's columns (empty when not a table)."""
    columns = getattr(hdu, "columns", None)
    return {c.lower(): c for c in columns.names} if columns is not None else {}


def _hdu_name(hdu) -> str:
    """EXTNAME upper-cased, or "" when the card is damaged (astropy raises on access)."""
    try:
        return str(hdu.name).upper()
    except Exception:
        return ""


def _is_sdss_header(header) -> bool:
    return str(header_value(header, "TELESCOP") or "").upper().startswith("SDSS")


def _identify_spec(source: Source) -> bool:
    if source.kind != "fits":
        return False
    hdul = source.hdul
    if len(hdul) < 2:
        return False
    cols = _coadd_columns(hdul[1])
    if not {"loglam", "flux", "ivar"} <= set(cols):
        return False
    names = {_hdu_name(hdu) for hdu in hdul}
    return (
        _hdu_name(hdul[1]) == "COADD"
        or bool(names & {"SPECOBJ", "SPALL"})
        or _is_sdss_header(hdul[0].header)
    )


@register(
    "sdss_spec", "fits",
    "SDSS/BOSS spec-PLATE-MJD-FIBER.fits and spec-lite (COADD table + SPECOBJ/SPALL)",
    _identify_spec, priority=20,
)
def read_spec(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    cols = _coadd_columns(hdul[1]) if len(hdul) > 1 else {}
    if not {"loglam", "flux", "ivar"} <= set(cols):
        raise SpectrumError(
            f"{source.name}: not an SDSS spec file: HDU1 must be a table with loglam, flux "
            "and ivar columns"
        )
    coadd = hdul[1].data
    if coadd is None or len(coadd) < 2:
        raise SpectrumError(f"{source.name}: the COADD table is empty; the file holds no spectrum")
    wave = loglam_to_wave(coadd[cols["loglam"]])
    flux = np.asarray(coadd[cols["flux"]], dtype=np.float64)
    ivar = np.asarray(coadd[cols["ivar"]], dtype=np.float64)
    and_mask = coadd[cols["and_mask"]] if "and_mask" in cols else None
    bad = bad_pixels(and_mask) if and_mask is not None else np.zeros(wave.shape, bool)

    header = hdul[0].header
    row: dict[str, Any] = {}
    info = next((hdu for hdu in hdul[2:] if _hdu_name(hdu) in ("SPECOBJ", "SPALL")), None)
    if info is None and len(hdul) > 2 and "z" in _coadd_columns(hdul[2]):
        info = hdul[2]
    if info is not None and info.data is not None and len(info.data):
        row = {name.upper(): plain_value(info.data[name][0]) for name in info.columns.names}

    def pick(*keys):
        for key in keys:
            if row.get(key) is not None:
                return row[key]
            value = header_value(header, key)
            if value is not None:
                return value
        return None

    plate, mjd, fiber = pick("PLATE", "PLATEID"), pick("MJD"), pick("FIBERID")
    zwarning = row.get("ZWARNING")
    _check_usable(source.name, ivar, bad, and_mask, zwarning)
    survey = survey_key(row.get("INSTRUMENT"), mjd, wave)
    # PLUG_RA/DEC is where the fibre was; header RA/DEC is the telescope boresight.
    ra, dec = pick("PLUG_RA"), pick("PLUG_DEC")
    if ra is None or dec is None:
        ra, dec = row.get("RA"), row.get("DEC")
    photo = row.get("BESTOBJID") or row.get("OBJID")
    meta = {
        "object_id": _object_id(survey, plate, mjd, fiber),
        "ra": ra, "dec": dec,
        "class": row["CLASS"].upper() if row.get("CLASS") else None,
        "subclass": row.get("SUBCLASS"),
        "z": row.get("Z"), "z_err": row.get("Z_ERR"), "zwarning": zwarning,
        "snr": row.get("SN_MEDIAN_ALL"),
        "flux_unit": FLUX_UNIT,
        "plate": plate, "mjd": mjd, "fiberid": fiber,
        "run2d": str(row["RUN2D"]) if row.get("RUN2D") is not None else header_value(header, "RUN2D"),
        "specobjid": str(row["SPECOBJID"]) if row.get("SPECOBJID") is not None else None,
        "photo_objid": str(photo) if isinstance(photo, (int, str)) else None,
        "program": row.get("PROGRAMNAME"),
    }
    return [Spectrum(wave, flux, ivar, bad, survey, _clean(meta))]


# -- spSpec (DR1-DR7) --------------------------------------------------------------


def _image_grid(header, n_pixels: int) -> np.ndarray:
    coeff0, coeff1 = header_value(header, "COEFF0"), header_value(header, "COEFF1")
    if not isinstance(coeff0, (int, float)) or not isinstance(coeff1, (int, float)):
        raise SpectrumError(
            "the header lacks a usable COEFF0/COEFF1 log-wavelength solution "
            "(log10 λ = COEFF0 + COEFF1 * pixel)"
        )
    if not (0 < coeff1 < 0.01 and 2.5 < coeff0 < 4.5 and coeff0 + coeff1 * n_pixels < 5.0):
        raise SpectrumError(
            f"COEFF0={coeff0:g}, COEFF1={coeff1:g} is not an optical log10(Å) grid; "
            "the wavelength solution in the header is damaged"
        )
    return 10.0 ** (coeff0 + coeff1 * np.arange(n_pixels))


def _primary_image(hdul):
    data = hdul[0].data
    return data if isinstance(data, np.ndarray) and data.ndim in (1, 2) else None


def _require_image(source: Source, rows: str) -> np.ndarray:
    data = _primary_image(source.hdul)
    if data is None or data.shape[-1] < 2:
        raise SpectrumError(
            f"{source.name}: the primary HDU holds no spectrum image ({rows}); "
            "this is not an SDSS spSpec/spPlate file"
        )
    with np.errstate(all="ignore"):  # damaged values become NaN/inf, masked by Spectrum
        return np.asarray(data, dtype=np.float64)


def _identify_spspec(source: Source) -> bool:
    if source.kind != "fits":
        return False
    hdul = source.hdul
    header, data = hdul[0].header, _primary_image(hdul)
    if data is None or data.ndim != 2 or not 3 <= data.shape[0] <= 5:
        return False
    if header_value(header, "COEFF0") is None or header_value(header, "COEFF1") is None:
        return False
    if not (_is_sdss_header(header) or header_value(header, "SPEC_CLN") is not None):
        return False
    # spPlate has an ivar image of the same shape in HDU1; spSpec has tables there.
    return not (len(hdul) > 1 and getattr(hdul[1].data, "shape", None) == data.shape)


@register(
    "sdss_spspec", "fits",
    "SDSS DR1-DR7 spSpec image (rows flux, continuum-subtracted, error, mask; COEFF0/1 grid)",
    _identify_spspec, priority=20,
)
def read_spspec(source: Source) -> list[Spectrum]:
    header = source.hdul[0].header
    image = _require_image(source, "rows flux, continuum-subtracted flux, error, mask")
    if image.ndim != 2 or image.shape[0] < 3:
        raise SpectrumError(
            f"{source.name}: an spSpec image needs at least 3 rows (flux, continuum-subtracted "
            f"flux, error), got shape {image.shape}"
        )
    wave = _image_grid(header, image.shape[1])
    flux = image[0]
    ivar = sigma_to_ivar(image[2])  # the error row is 0 where the pipeline had no data
    mask_row = image[3] if image.shape[0] > 3 else None
    bad = bad_pixels(mask_row) if mask_row is not None else np.zeros(wave.shape, bool)

    def key(name):
        return header_value(header, name)

    zwarning = key("Z_WARNIN") if key("Z_WARNIN") is not None else key("ZWARNING")
    _check_usable(source.name, ivar, bad, mask_row, zwarning)
    plate, mjd, fiber = key("PLATEID"), key("MJD"), key("FIBERID")
    spec_cln = key("SPEC_CLN")
    meta = {
        "object_id": _object_id("sdss", plate, mjd, fiber),
        "ra": key("RAOBJ"), "dec": key("DECOBJ"),
        "class": SPEC_CLN.get(spec_cln) if isinstance(spec_cln, int) else None,
        "z": key("Z"), "z_err": key("Z_ERR"), "zwarning": zwarning,
        "flux_unit": FLUX_UNIT,
        "plate": plate, "mjd": mjd, "fiberid": fiber,
        "spec_cln": spec_cln,
    }
    return [Spectrum(wave, flux, ivar, bad, survey_key(None, mjd, wave), _clean(meta))]


# -- spPlate -----------------------------------------------------------------------


def _identify_spplate(source: Source) -> bool:
    if source.kind != "fits":
        return False
    hdul = source.hdul
    header, data = hdul[0].header, _primary_image(hdul)
    if data is None or header_value(header, "COEFF0") is None or header_value(header, "COEFF1") is None:
        return False
    if not _is_sdss_header(header):
        return False
    return len(hdul) > 1 and getattr(hdul[1].data, "shape", None) == data.shape


@register(
    "sdss_spplate", "fits",
    "SDSS/BOSS spPlate: flux image with COEFF0/1 grid, ivar and AND-mask images, plug map",
    _identify_spplate, priority=20,
)
def read_spplate(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    header = hdul[0].header
    flux = np.atleast_2d(_require_image(source, "one flux row per fibre"))
    if len(hdul) < 2 or getattr(hdul[1].data, "shape", None) != hdul[0].data.shape:
        raise SpectrumError(
            f"{source.name}: an spPlate file needs an inverse-variance image in HDU1 "
            "of the same shape as the flux image"
        )
    # Analysis packages that save a spectrum in this layout may store 1σ or variance
    # instead of ivar, and a good-pixel mask instead of the AND mask: their HDU names
    # and headers say so (image1d: the writers' conventions).
    kind = UNCERTAINTY_NAMES.get(_hdu_name(hdul[1]), "ivar")
    ivar = np.atleast_2d(uncertainty_to_ivar(hdul[1].data, kind))
    and_mask = mask_hdu = None
    if len(hdul) > 2 and getattr(hdul[2].data, "shape", None) == hdul[0].data.shape:
        mask_hdu = hdul[2]
        and_mask = np.atleast_2d(np.asarray(hdul[2].data))
    wave = _image_grid(header, flux.shape[1])
    plug = next((h.data for h in hdul[1:] if _hdu_name(h).startswith("PLUGMAP")), None)
    if plug is None and len(hdul) > 5 and getattr(hdul[5], "columns", None) is not None:
        plug = hdul[5].data
    plug_cols = {c.upper(): c for c in plug.columns.names} if plug is not None else {}
    if plug is not None and len(plug) != flux.shape[0]:
        plug, plug_cols = None, {}

    plate, mjd = header_value(header, "PLATEID"), header_value(header, "MJD")
    survey = survey_key(None, mjd, wave)
    spectra = []
    for i in range(flux.shape[0]):

        def col(name, i=i):
            return plain_value(plug[plug_cols[name]][i]) if name in plug_cols else None

        fiber = col("FIBERID") or i + 1
        objtype = col("OBJTYPE")
        label = f"fibre {fiber}"
        if objtype and objtype.upper() in ("SKY", "NA"):
            what = "sky fibre" if objtype.upper() == "SKY" else "unplugged fibre (OBJTYPE=NA)"
            source.report(f"{label}: {what}, not an astronomical spectrum; skipped")
            continue
        bad, convention = np.zeros(wave.shape, bool), None
        if and_mask is not None:
            bad, convention = interpret_mask(
                and_mask[i], _hdu_name(mask_hdu), header_text(mask_hdu.header),
                boolean=str(mask_hdu.header.get("BFORM", "")).strip().upper() in ("L", "X"),
                unmeasured=~(ivar[i] > 0) | ~np.isfinite(flux[i]), bitmask=bad_pixels)
        meta = {
            "object_id": _object_id(survey, plate, mjd, fiber),
            "ra": col("RA"), "dec": col("DEC"), "objtype": objtype,
            "flux_unit": FLUX_UNIT, "plate": plate, "mjd": mjd, "fiberid": fiber,
            "mask_convention": convention,
        }
        spectrum = source.keep(
            label,
            lambda i=i, bad=bad, meta=meta: Spectrum(
                wave, flux[i], ivar[i], bad, survey, _clean(meta)
            ),
        )
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra
