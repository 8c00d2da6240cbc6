"""APOGEE (SDSS-III/IV) H-band spectra: apStar, apVisit, aspcapStar, and The Payne's .npz files.

APOGEE wavelengths are vacuum Ångström in every product, so nothing is converted.

* ``apStar`` (combined spectra of one star, DR17 layout): HDU1 flux, HDU2 error,
  HDU3 APOGEE_PIXMASK, each with one row per spectrum on the log-linear grid
  ``10**(CRVAL1 + CDELT1 * i)`` (CRVAL1 = 4.179, CDELT1 = 6e-6, 8575 pixels,
  15100.8-16999.4 Å), shifted to the star's rest frame. Row 0 is the combined
  spectrum with pixel-based weighting, row 1 the combination with global
  weighting, rows 2.. the individual visits (only when NVISITS > 1; a
  single-visit DR17 file has two rows and row 1 is empty). spectok reads row 0,
  the spectrum the APOGEE pipeline itself analyses; the option
  ``apstar_row=N`` picks another row. The chip gaps hold NaN (combined rows) or
  zero flux and error (visit rows) and are masked.
* ``apVisit`` (one visit): HDU1 flux, HDU2 error, HDU3 APOGEE_PIXMASK and HDU4
  wavelength, each 3 chips x 4096 pixels. The chips are stored red to blue with
  wavelength falling along each row, so the pixels are sorted into increasing
  wavelength. These spectra are in the observed (topocentric) frame.
* ``aspcapStar`` (ASPCAP's continuum-normalised combined spectrum, DR17 data
  model): HDU1 normalised flux, HDU2 error, HDU3 ASPCAP best-fit model, all
  one-dimensional on the apStar grid, and usually an HDU4 table. Labels are
  taken only from columns named TEFF, LOGG, FE_H, M_H, ALPHA_M (+ ``_ERR``) when
  such a table is present; otherwise the spectrum carries none.
* The Payne (Ting et al. 2019) ``.npz`` spectra: continuum-normalised APOGEE
  spectra of 7214 pixels with the chip gaps cut out. They hold no wavelengths:
  their grid is the ASPCAP (DR12+) pixel selection of the apStar grid, apStar
  pixels 322-3241, 3648-6047 and 6412-8305 (The Payne's ``toAspcapGrid``), and
  is rebuilt from that definition (a test checks it against the wavelength file
  The Payne ships). That wavelength file is refused with a clear message.

Bad pixels. APOGEE_PIXMASK (DR17) bits 0-7 and 14 mark pixels without a usable
measurement; they are the bits the APOGEE pipeline itself flags as "bad"
(``PixelBitMask`` level 1): BADPIX, CRPIX, SATPIX, UNFIXABLE, BADDARK, BADFLAT,
BADERR, NOSKY and NOT_ENOUGH_PSF. The other bits (LITTROW_GHOST, PERSIST_HIGH,
PERSIST_MED, PERSIST_LOW, SIG_SKYLINE, SIG_TELLURIC) are warnings about pixels
that still hold data, whose errors the pipeline has already inflated; they are
not masked. In continuum-normalised products (aspcapStar, The Payne) the
pipelines exclude a pixel by inflating its error (The Payne uses ~100), so a
pixel whose error is at least the continuum level (sigma >= 1) is masked.
"""

from __future__ import annotations

import re

import numpy as np

from ..spectrum import Spectrum, SpectrumError, sigma_to_ivar
from .registry import register
from .source import Source

SURVEY = "apogee"

#: APOGEE_PIXMASK bit names (DR17 data model).
PIXMASK_BITS = {
    0: "BADPIX", 1: "CRPIX", 2: "SATPIX", 3: "UNFIXABLE", 4: "BADDARK", 5: "BADFLAT",
    6: "BADERR", 7: "NOSKY", 8: "LITTROW_GHOST", 9: "PERSIST_HIGH", 10: "PERSIST_MED",
    11: "PERSIST_LOW", 12: "SIG_SKYLINE", 13: "SIG_TELLURIC", 14: "NOT_ENOUGH_PSF",
}
BAD_PIXMASK_BITS = (
    "BADPIX", "CRPIX", "SATPIX", "UNFIXABLE", "BADDARK", "BADFLAT", "BADERR", "NOSKY",
    "NOT_ENOUGH_PSF",
)
BAD_PIXMASK = sum(1 << bit for bit, name in PIXMASK_BITS.items() if name in BAD_PIXMASK_BITS)

#: The apStar log-linear grid.
APSTAR_LOG10_START = 4.179
APSTAR_LOG10_STEP = 6e-6
APSTAR_NPIX = 8575
#: apStar pixel ranges [start, stop) kept on the ASPCAP grid (blue, green, red chips).
ASPCAP_PIXEL_RANGES = ((322, 3242), (3648, 6048), (6412, 8306))
ASPCAP_NPIX = sum(stop - start for start, stop in ASPCAP_PIXEL_RANGES)  # 7214

#: Anything whose grid falls inside this window is H band, i.e. APOGEE.
H_BAND = (14_000.0, 18_000.0)

APSTAR_ROWS = "0 = combined (pixel-based weighting), 1 = combined (global weighting), 2.. = visits"


def apstar_wavelengths() -> np.ndarray:
    """The 8575-pixel apStar grid (vacuum Å)."""
    return 10.0 ** (APSTAR_LOG10_START + APSTAR_LOG10_STEP * np.arange(APSTAR_NPIX))


def aspcap_wavelengths() -> np.ndarray:
    """The 7214-pixel ASPCAP grid: the apStar grid without the chip gaps (vacuum Å)."""
    index = np.concatenate([np.arange(start, stop) for start, stop in ASPCAP_PIXEL_RANGES])
    return apstar_wavelengths()[index]


# -- header helpers --------------------------------------------------------------


def _number(value) -> float | None:
    """A finite header/table number as float; None for blanks and APOGEE's -9999 fill values."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(number) or number <= -9999.0:
        return None
    return number


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    return text or None


def _flux_unit(header) -> str:
    bunit = _text(header.get("BUNIT")) or ""
    if "10^-17" in bunit and "erg" in bunit:
        return "1e-17 erg/s/cm2/Angstrom"
    return bunit or "unknown"


def _put(meta: dict, key: str, value) -> None:
    """Store a plain Python value, skipping missing ones."""
    if value is None:
        return
    if isinstance(value, (np.bool_, bool)):
        meta[key] = bool(value)
    elif isinstance(value, (np.integer, int)):
        meta[key] = int(value)
    elif isinstance(value, (np.floating, float)):
        number = _number(value)
        if number is not None:
            meta[key] = number
    else:
        text = _text(value)
        if text is not None:
            meta[key] = text


def _target_meta(header) -> dict:
    """Identity and position of the star, common to apStar, apVisit and aspcapStar headers."""
    meta: dict = {}
    _put(meta, "object_id", _text(header.get("OBJID")) or _text(header.get("APOGEE_ID")))
    _put(meta, "ra", _number(header.get("RA")))
    _put(meta, "dec", _number(header.get("DEC")))
    _put(meta, "field", header.get("FIELD"))
    _put(meta, "telescope", header.get("TELESCOP"))
    return meta


# -- log-linear grid --------------------------------------------------------------


def _wcs_header(hdul):
    """The header that holds the log-λ WCS: HDU1's, else the primary's."""
    for header in (hdul[1].header, hdul[0].header):
        if "CRVAL1" in header and ("CDELT1" in header or "CD1_1" in header):
            return header
    return None


def _loglam_grid(header, n_pixels: int) -> np.ndarray | None:
    """``10**(CRVAL1 + CDELT1 * (i + 1 - CRPIX1))``, or None when the WCS is not log10 Å."""
    crval = _number(header.get("CRVAL1"))
    cdelt = _number(header.get("CDELT1", header.get("CD1_1")))
    crpix = _number(header.get("CRPIX1", 1.0))
    # A log10(Å) start lies between 3 and 5; a linear-Å WCS would overflow here.
    if crval is None or cdelt is None or crpix is None or not 3.0 < crval < 5.0 or cdelt <= 0:
        return None
    return 10.0 ** (crval + cdelt * (np.arange(n_pixels) + 1.0 - crpix))


def _h_band_grid(hdul) -> np.ndarray | None:
    """The log-λ grid of HDU1 when it lies in the H band (apStar/aspcapStar), else None."""
    if len(hdul) < 4 or hdul[1].data is None or hdul[1].data.ndim not in (1, 2):
        return None
    header = _wcs_header(hdul)
    if header is None:
        return None
    wave = _loglam_grid(header, hdul[1].data.shape[-1])
    if wave is None or not (H_BAND[0] < wave[0] and wave[-1] < H_BAND[1]):
        return None
    return wave


def _same_shape_image(hdul, index: int, shape: tuple, kinds: str) -> bool:
    data = hdul[index].data if len(hdul) > index else None
    return data is not None and getattr(data, "shape", None) == shape and data.dtype.kind in kinds


# -- apStar -----------------------------------------------------------------------


def _is_apstar(source: Source) -> bool:
    hdul = source.hdul
    return _h_band_grid(hdul) is not None and _same_shape_image(
        hdul, 2, hdul[1].data.shape, "f"
    ) and _same_shape_image(hdul, 3, hdul[1].data.shape, "iu")


def _apstar_row(source: Source, n_rows: int) -> int:
    row = source.options.get("apstar_row", 0)
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
        raise SpectrumError(f"apstar_row must be a row number ({APSTAR_ROWS}), not {row!r}")
    if not 0 <= row < n_rows:
        raise SpectrumError(
            f"apstar_row={row} is out of range: this apStar file has rows 0-{n_rows - 1} "
            f"({APSTAR_ROWS})"
        )
    return int(row)


@register(
    "apogee_apstar", "fits",
    "APOGEE apStar combined spectrum (flux/error/APOGEE_PIXMASK rows on the log-λ grid)",
    _is_apstar, priority=20,
)
def read_apstar(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    header = hdul[0].header
    wave = _h_band_grid(hdul)
    flux = np.atleast_2d(hdul[1].data)
    error = np.atleast_2d(hdul[2].data)
    bits = np.atleast_2d(hdul[3].data)
    row = _apstar_row(source, flux.shape[0])
    values = flux[row]
    if not np.any(np.isfinite(values) & (values != 0)):
        hint = (
            " (a single-visit apStar file holds its spectrum in row 0 only)"
            if row == 1 else ""
        )
        raise SpectrumError(f"row {row} of the apStar flux is empty (all zero or NaN){hint}")

    meta = _target_meta(header)
    nvisits = _number(header.get("NVISITS"))
    if nvisits is not None:
        meta["nvisits"] = int(nvisits)
    meta["apstar_row"] = row
    if row < 2:
        meta["spectrum_kind"] = "combined, pixel-based weighting" if row == 0 else "combined, global weighting"
        _put(meta, "snr", _number(header.get("SNR")))
        _put(meta, "vhelio", _number(header.get("VHELIO")))
    else:
        visit = row - 1
        meta["spectrum_kind"] = f"visit {visit}"
        _put(meta, "snr", _number(header.get(f"SNRVIS{visit}")))
        _put(meta, "vhelio", _number(header.get(f"VHELIO{visit}")))
        _put(meta, "visit_file", header.get(f"SFILE{visit}"))
    # The Doppler RV fit's template labels: the only stellar labels an apStar file carries.
    labels = {k: _number(header.get(f"RV_{k.upper()}")) for k in ("teff", "logg", "feh")}
    if any(v is not None for v in labels.values()):
        for key, value in labels.items():
            _put(meta, key, value)
        meta["label_source"] = "apStar Doppler RV fit (RV_TEFF, RV_LOGG, RV_FEH)"
    meta["restframe"] = True
    meta["flux_unit"] = _flux_unit(hdul[1].header)
    mask = (bits[row].astype(np.int64) & BAD_PIXMASK) != 0
    return [Spectrum(wave, values, sigma_to_ivar(error[row]), mask, SURVEY, meta)]


# -- apVisit ----------------------------------------------------------------------


def _is_apvisit(source: Source) -> bool:
    hdul = source.hdul
    if len(hdul) < 5 or hdul[1].data is None or hdul[1].data.ndim != 2:
        return False
    shape = hdul[1].data.shape
    if not (
        _same_shape_image(hdul, 2, shape, "f")
        and _same_shape_image(hdul, 3, shape, "iu")
        and _same_shape_image(hdul, 4, shape, "f")
    ):
        return False
    wave = hdul[4].data
    return bool(np.all(np.isfinite(wave)) and H_BAND[0] < wave.min() and wave.max() < H_BAND[1])


@register(
    "apogee_apvisit", "fits",
    "APOGEE apVisit single-visit spectrum (3 chips x 4096 px with a wavelength HDU)",
    _is_apvisit, priority=20,
)
def read_apvisit(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    header = hdul[0].header
    wave = np.asarray(hdul[4].data, dtype=np.float64).ravel()
    # Chips are stored red to blue, each with falling wavelength.
    order = np.argsort(wave, kind="stable")
    flux = np.asarray(hdul[1].data).ravel()[order]
    error = np.asarray(hdul[2].data).ravel()[order]
    bits = np.asarray(hdul[3].data).astype(np.int64).ravel()[order]

    meta = _target_meta(header)
    _put(meta, "snr", _number(header.get("SNR")))
    _put(meta, "plate", _text(header.get("PLATE")))
    _put(meta, "mjd", header.get("MJD5"))
    _put(meta, "fiberid", header.get("FIBERID"))
    _put(meta, "vhelio", _number(header.get("VHELIO")))
    _put(meta, "vrad", _number(header.get("VRAD")))
    meta["restframe"] = False
    meta["flux_unit"] = _flux_unit(hdul[1].header)
    mask = (bits & BAD_PIXMASK) != 0
    return [Spectrum(wave[order], flux, sigma_to_ivar(error), mask, SURVEY, meta)]


# -- aspcapStar -------------------------------------------------------------------


def _is_aspcapstar(source: Source) -> bool:
    hdul = source.hdul
    if _h_band_grid(hdul) is None or hdul[1].data.ndim != 1:
        return False
    shape = hdul[1].data.shape
    return _same_shape_image(hdul, 2, shape, "f") and _same_shape_image(hdul, 3, shape, "f")


#: allStar-style label columns -> meta keys.
ASPCAP_LABEL_COLUMNS = {
    "TEFF": "teff", "LOGG": "logg", "FE_H": "feh", "M_H": "m_h", "ALPHA_M": "alpha_m",
}


def _aspcap_table_meta(hdul) -> dict:
    """Labels from the first table HDU with named label columns (first row)."""
    from astropy.io.fits import BinTableHDU

    for hdu in hdul[1:]:
        if not isinstance(hdu, BinTableHDU) or hdu.data is None or len(hdu.data) == 0:
            continue
        names = {name.upper(): name for name in hdu.columns.names}
        row = hdu.data[0]
        meta: dict = {}
        if "APOGEE_ID" in names:
            _put(meta, "object_id", row[names["APOGEE_ID"]])
        for column, key in ASPCAP_LABEL_COLUMNS.items():
            for suffix in ("", "_ERR"):
                if column + suffix in names and np.ndim(row[names[column + suffix]]) == 0:
                    _put(meta, key + suffix.lower(), _number(row[names[column + suffix]]))
        if meta:
            return meta
    return {}


def _normalised_pixel_mask(flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Chip gaps (zero flux) and pixels whose error the pipeline inflated to >= the continuum."""
    flux = np.asarray(flux, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (flux == 0) | ~np.isfinite(error) | (error >= 1.0)


@register(
    "apogee_aspcapstar", "fits",
    "APOGEE aspcapStar continuum-normalised spectrum (flux, error, best-fit model on the apStar grid)",
    _is_aspcapstar, priority=20,
)
def read_aspcapstar(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    wave = _h_band_grid(hdul)
    flux = np.asarray(hdul[1].data)
    error = np.asarray(hdul[2].data)
    meta = _target_meta(hdul[0].header)
    table_meta = _aspcap_table_meta(hdul)
    if "object_id" in meta:
        table_meta.pop("object_id", None)
    meta.update(table_meta)
    if any(key in meta for key in ("teff", "logg", "feh", "m_h", "alpha_m")):
        meta["label_source"] = "ASPCAP"
    _put(meta, "snr", _number(hdul[0].header.get("SNR")))
    meta["restframe"] = True
    meta["continuum_normalized"] = True
    meta["flux_unit"] = "continuum-normalised (dimensionless)"
    mask = _normalised_pixel_mask(flux, error)
    return [Spectrum(wave, flux, sigma_to_ivar(error), mask, SURVEY, meta)]


# -- The Payne .npz -----------------------------------------------------------------

PAYNE_SINGLE = ("spectrum", "spec_err")
PAYNE_VISITS = ("spectra", "spec_errs")
APOGEE_ID_PATTERN = re.compile(r"2M\d{8}[+-]\d{7}")


def _is_payne_npz(source: Source) -> bool:
    arrays = source.npz
    for flux_key, error_key in (PAYNE_SINGLE, PAYNE_VISITS):
        if flux_key in arrays and error_key in arrays:
            return arrays[flux_key].shape[-1:] == (ASPCAP_NPIX,)
    # The Payne's wavelength file: claimed here so that it gets a clear refusal.
    return set(arrays) == {"wavelength"} and arrays["wavelength"].shape == (ASPCAP_NPIX,)


@register(
    "apogee_payne_npz", "npz",
    "The Payne's continuum-normalised APOGEE spectra (.npz, 7214 px ASPCAP grid)",
    _is_payne_npz, priority=20,
)
def read_payne_npz(source: Source) -> list[Spectrum]:
    arrays = source.npz
    if set(arrays) == {"wavelength"}:
        raise SpectrumError(
            "this is The Payne's APOGEE wavelength grid (7214 vacuum wavelengths), not a "
            "spectrum; read the spectrum files instead (spectok rebuilds this grid itself)"
        )
    visits = PAYNE_VISITS[0] in arrays
    flux_key, error_key = PAYNE_VISITS if visits else PAYNE_SINGLE
    flux = np.atleast_2d(np.asarray(arrays[flux_key], dtype=np.float64))
    error = np.atleast_2d(np.asarray(arrays[error_key], dtype=np.float64))
    if flux.ndim != 2 or flux.shape != error.shape:
        raise SpectrumError(
            f"'{flux_key}' {arrays[flux_key].shape} and '{error_key}' {arrays[error_key].shape} "
            "must have the same shape (spectra x 7214 pixels)"
        )
    wave = aspcap_wavelengths()
    base: dict = {
        "continuum_normalized": True,
        "flux_unit": "continuum-normalised (dimensionless)",
    }
    # The archive holds no identifier; The Payne names its files after the APOGEE ID.
    found = APOGEE_ID_PATTERN.search(source.lower_name.upper())
    if found:
        base["object_id"] = found.group(0)
    if not visits:
        # The Payne builds combined spectra from apStar, which is in the rest frame.
        base["restframe"] = True
    per_visit = {"snrs": "snr", "vhelios": "vhelio", "hjds": "hjd"}
    spectra = []
    for index in range(flux.shape[0]):
        meta = dict(base)
        if visits:
            meta["visit"] = index + 1
            for key, name in per_visit.items():
                values = arrays.get(key)
                if values is not None and values.ndim == 1 and values.shape[0] == flux.shape[0]:
                    _put(meta, name, _number(values[index]))
        mask = _normalised_pixel_mask(flux[index], error[index])
        spectrum = source.keep(
            f"spectrum {index}",
            lambda i=index, m=mask, meta=meta: Spectrum(
                wave, flux[i], sigma_to_ivar(error[i]), m, SURVEY, meta
            ),
        )
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra
