"""1-D FITS image spectra (the ``wcs1d-fits`` layout), and what a pixel-mask HDU means.

**The layout.** One spectrum as a 1-D image whose header carries the wavelength
solution, with optional companion images: the layout specutils' ``wcs1d-fits``
writer produces (flux in the primary HDU named ``FLUX``; the uncertainty in an
HDU named by its kind, ``STD``/``ERR``/``UNCERT`` = 1σ, ``VAR``, ``IVAR``; the mask
in ``MASK``), IRAF-style ``onedspec`` files, and what analysis packages write
when they save an SDSS/BOSS spectrum as an image. Wavelength solutions read:
FITS-WCS linear (``CRVAL1``/``CDELT1`` or ``CD1_1``/``CRPIX1``), ``CTYPE1 =
'WAVE-LOG'``/``'AWAV-LOG'`` (the WCS-standard logarithmic axis, through astropy),
IRAF ``DC-FLAG = 1`` (log10 λ), and SDSS ``COEFF0``/``COEFF1`` (log10 λ). ``CUNIT1``
gives the unit (Å when absent); ``CTYPE1 = 'AWAV…'`` says air wavelengths, which are
converted to vacuum. Everything else (flux unit, survey, labels, air/vacuum
keywords) is read as for tables (:mod:`.table`).

**Mask conventions.** Writers disagree on what a mask pixel of 1 means:

* specutils (``wcs1d-fits``, ``tabular-fits``) follows astropy's NDData: the mask
  is True where data are *invalid*; a boolean mask is stored as uint8 with
  ``BFORM = 'L'`` (image) or as a logical column (table). Non-zero = bad.
* SDSS/BOSS AND/OR masks, APOGEE and DESI masks are 32-bit *bitmasks*: non-zero
  bits describe problems (the survey reader decides which bits are bad).
* Many analysis packages keep a *good-pixel* mask (1 = use this pixel), as uint8
  or bool, named e.g. ``GOODPIX``, ``GOOD``, ``VALID``, or just ``MASK``.

:func:`interpret_mask` decides, in order: what the HDU/column says (its name,
``BFORM``, the comments of its header); for a 0/1 mask that says nothing, whether
pixels without a measurement (ivar 0 or non-finite flux) sit at 0 or at 1; and
finally which reading leaves a spectrum: a "bad-pixel" mask that flags more than
:data:`MOSTLY` of the pixels is taken as a good-pixel mask. A multi-valued
integer mask is a bitmask. What was decided is kept in ``meta["mask_convention"]``.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError
from .registry import register
from .source import Source

#: A 0/1 mask with no stated meaning that is 1 on more than this share of the pixels is a
#: good-pixel mask: a bad-pixel mask flagging most of a spectrum is rarer than a good one.
MOSTLY = 0.5
#: Pixels without a measurement must sit this consistently at one mask value to decide it.
AGREEMENT = 0.9
#: ...and there must be at least this many of them for the test to mean anything.
MIN_UNMEASURED = 5

#: Names (EXTNAME or column, split on non-letters) that say 1 = good.
GOOD_NAMES = ("good", "goodpix", "goodpixel", "goodpixels", "goodmask", "valid", "validmask",
              "usepix", "use", "ok", "okpix")
#: Names that say non-zero = bad (a plain "mask" says nothing by itself).
BAD_NAMES = ("bad", "badpix", "badpixel", "badpixels", "badmask", "dq", "quality", "flags",
             "flag", "bpm", "masked", "pixmask", "andmask", "ormask", "bitmask")
#: Phrases (spaces removed, lower case) in a header comment that state the meaning.
GOOD_PHRASES = ("1=good", "1=use", "0=bad", "true=good", "nonzero=good", "goodpixel", "1:good",
                "good=1", "bad=0", "validpixel")
BAD_PHRASES = ("1=bad", "0=good", "true=bad", "true=masked", "nonzero=bad", "badpixel",
               "1:bad", "bad=1", "good=0", "1=masked")

#: Uncertainty HDU names (specutils' and common ones) -> what they hold.
UNCERTAINTY_NAMES = {
    "STD": "sigma", "ERR": "sigma", "ERROR": "sigma", "UNCERT": "sigma", "SIGMA": "sigma",
    "NOISE": "sigma", "STDDEV": "sigma", "ERRS": "sigma",
    "VAR": "var", "VARIANCE": "var",
    "IVAR": "ivar", "INVVAR": "ivar", "WEIGHT": "ivar",
}
MASK_HDU_NAMES = ("MASK", "DQ", "QUALITY", "BADPIX", "BPM", "FLAGS", "GOODPIX", "GOOD",
                  "GOODMASK", "VALID", "PIXMASK", "ANDMASK", "AND_MASK")


def _name_tokens(name: str) -> list[str]:
    low = str(name or "").lower()
    return [t for t in re.split(r"[^a-z]+", low) if t] + [re.sub(r"[^a-z]", "", low)]


def _said(name: str, text: str) -> str | None:
    """'good' or 'bad' when a name or header text states the meaning, else None."""
    tokens = _name_tokens(name)
    named_good = any(t in GOOD_NAMES for t in tokens)
    named_bad = any(t in BAD_NAMES for t in tokens)
    if named_good != named_bad:
        return "good" if named_good else "bad"
    squeezed = re.sub(r"\s+", "", str(text or "").lower())
    good = any(p in squeezed for p in GOOD_PHRASES)
    bad = any(p in squeezed for p in BAD_PHRASES)
    if good != bad:
        return "good" if good else "bad"
    return None


def header_text(header) -> str:
    """The comments and free text of a header, where writers say what a mask means."""
    if header is None:
        return ""
    parts: list[str] = []
    try:
        for card in header.cards:
            if card.keyword in ("COMMENT", "HISTORY", ""):
                parts.append(str(card.value))
            elif card.keyword in ("EXTNAME", "MASKTYPE", "MASKDEF", "BUNIT") or "MASK" in card.keyword:
                parts.append(f"{card.value} {card.comment}")
    except Exception:  # a damaged card: the rest of the rule still decides
        pass
    return " ".join(parts)[:20_000]


def interpret_mask(values: np.ndarray, name: str = "", text: str = "", boolean: bool = False,
                   unmeasured: np.ndarray | None = None, bitmask=None) -> tuple[np.ndarray, str]:
    """(True = bad pixel, how that was decided) for a mask array of unknown convention.

    ``boolean``: the writer stored a logical (specutils' ``BFORM = 'L'`` or a logical
    column), which by astropy's convention is True = masked. ``unmeasured``: pixels
    known to lack data (ivar 0, non-finite flux), used to tell the conventions apart.
    ``bitmask``: a function turning a multi-bit integer mask into bad pixels (a
    survey's bad bits); without it any non-zero bit is bad.
    """
    raw = np.asarray(values)
    if raw.dtype.kind not in "biuf":
        raise SpectrumError(f"the mask {name or ''} holds {raw.dtype} values, not numbers")
    numeric = np.nan_to_num(raw.astype(np.float64), nan=0.0)
    said = _said(name, text)
    binary = raw.dtype.kind == "b" or bool(np.all((numeric == 0) | (numeric == 1)))
    if said == "good":
        return numeric == 0, f"good-pixel mask ({name or 'stated in the header'}: 1 = good)"
    if not binary:
        if bitmask is not None:
            return np.asarray(bitmask(raw), bool), "bitmask (survey bad bits)"
        return numeric != 0, "bitmask (any non-zero bit = bad)"
    if said == "bad":
        return numeric != 0, f"bad-pixel mask ({name or 'stated in the header'}: non-zero = bad)"
    if boolean:
        return numeric != 0, "boolean mask, True = masked (astropy/specutils convention)"
    ones = numeric == 1
    if unmeasured is not None:
        unmeasured = np.asarray(unmeasured, bool)
        if unmeasured.sum() >= MIN_UNMEASURED and unmeasured.size == ones.size:
            share_at_one = float(ones[unmeasured].mean())
            if share_at_one >= AGREEMENT and not np.all(ones):
                return ones, "bad-pixel mask (pixels without data are the ones set)"
            if share_at_one <= 1 - AGREEMENT and np.any(ones):
                return ~ones, "good-pixel mask (pixels without data are the ones at 0)"
    if ones.mean() > MOSTLY:
        return ~ones, (f"good-pixel mask (set on {ones.mean():.0%} of pixels; a bad-pixel "
                       "mask would leave little of the spectrum)")
    return ones, "bad-pixel mask (non-zero = bad)"


def uncertainty_to_ivar(data: np.ndarray, kind: str) -> np.ndarray:
    """Inverse variance from an uncertainty array of ``kind`` 'sigma', 'var' or 'ivar'."""
    from ..spectrum import sigma_to_ivar

    data = np.asarray(data, np.float64)
    if kind == "sigma":
        return sigma_to_ivar(data)
    if kind == "var":
        with np.errstate(invalid="ignore"):
            return sigma_to_ivar(np.sqrt(np.where(data > 0, data, np.nan)))
    return np.where(np.isfinite(data) & (data > 0), data, 0.0)


# -- the reader ---------------------------------------------------------------------------


def _hdu_name(hdu) -> str:
    try:
        return str(hdu.name).upper()
    except Exception:
        return ""


def _flux_hdu(source: Source):
    """The HDU holding the 1-D flux image with a wavelength solution, or None."""
    from astropy.io import fits

    for hdu in source.hdul[:3]:
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
            continue
        data = hdu.data
        if data is None:
            continue
        if not (isinstance(data, np.ndarray) and data.dtype.kind in "iuf"):
            return None
        if np.squeeze(data).ndim != 1 or np.squeeze(data).size < 2:
            return None
        header = hdu.header
        has_wcs = "CRVAL1" in header and ("CDELT1" in header or "CD1_1" in header)
        has_coeff = "COEFF0" in header and "COEFF1" in header
        return hdu if has_wcs or has_coeff else None
    return None


def _identify(source: Source) -> bool:
    return source.kind == "fits" and _flux_hdu(source) is not None


def _number(header, key: str) -> float | None:
    try:
        value = float(header[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def wavelength_grid(header, n: int) -> tuple[np.ndarray, str, str | None]:
    """(wavelengths in the header's unit, that unit, 'air'/'vacuum' if the CTYPE says)."""
    ctype = str(header.get("CTYPE1", "") or "").strip().upper()
    medium = "air" if ctype.startswith("AWAV") else "vacuum" if ctype.startswith("WAVE") else None
    unit = str(header.get("CUNIT1", "") or "").strip() or "Angstrom"
    pixel = np.arange(n, dtype=np.float64)
    coeff0, coeff1 = _number(header, "COEFF0"), _number(header, "COEFF1")
    if "CRVAL1" not in header and coeff0 is not None and coeff1 is not None:
        return 10.0 ** (coeff0 + coeff1 * pixel), "Angstrom", medium
    start, ref = _number(header, "CRVAL1"), _number(header, "CRPIX1")
    step = _number(header, "CDELT1") if "CDELT1" in header else _number(header, "CD1_1")
    ref = 1.0 if ref is None else ref
    if start is None or step is None or step == 0:
        raise SpectrumError("the header's wavelength solution (CRVAL1, CDELT1/CD1_1) is incomplete")
    linear = start + step * (pixel + 1.0 - ref)
    if ctype.endswith("-LOG"):
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=1)
            world = wcs.all_pix2world(pixel, 0)[0]
            unit = str(wcs.wcs.cunit[0]) or unit
        return np.asarray(world, np.float64) * (1e10 if unit == "m" else 1.0), \
            "Angstrom" if unit == "m" else unit, medium
    if _number(header, "DC-FLAG") == 1 or (0 < start < 6 and abs(step) < 0.01 and "CUNIT1" not in header):
        return 10.0**linear, "Angstrom", medium  # IRAF / SDSS log10 λ
    return linear, unit, medium


@register(
    "fits_image", "fits",
    "1-D FITS image with a wavelength WCS (specutils wcs1d-fits, IRAF onedspec), with "
    "uncertainty and mask HDUs",
    _identify, priority=96,
)
def read_fits_image(source: Source) -> list[Spectrum]:
    from . import sdss
    from .table import Table, parse_wave_unit, plain, spectra_from_table

    hdu = _flux_hdu(source)
    if hdu is None:
        raise SpectrumError("no 1-D image with a wavelength solution (CRVAL1/CDELT1) in this file")
    header = hdu.header
    with np.errstate(all="ignore"):
        flux = np.asarray(np.squeeze(hdu.data), np.float64)
    n = flux.size
    wave, unit, medium = wavelength_grid(header, n)
    factor = parse_wave_unit(unit)
    if not isinstance(factor, float):
        raise SpectrumError(f"CUNIT1={unit!r} is not a wavelength unit")
    columns: dict[str, np.ndarray] = {"wave": wave * factor, "flux": flux}
    ivar = None
    others = [h for h in source.hdul if h is not hdu and getattr(h, "data", None) is not None
              and isinstance(h.data, np.ndarray) and np.squeeze(h.data).shape == (n,)]
    for other in others:
        kind = UNCERTAINTY_NAMES.get(_hdu_name(other))
        if kind is not None and ivar is None:
            ivar = uncertainty_to_ivar(np.squeeze(other.data), kind)
            columns["ivar"] = ivar
    unmeasured = ~np.isfinite(flux) | (ivar <= 0 if ivar is not None else False)
    mask_note = None
    for other in others:
        name = _hdu_name(other)
        if name in MASK_HDU_NAMES or (name not in UNCERTAINTY_NAMES and
                                      np.asarray(other.data).dtype.kind in "bui"):
            bad, mask_note = interpret_mask(
                np.squeeze(other.data), name, header_text(other.header),
                boolean=str(other.header.get("BFORM", "")).strip().upper() in ("L", "X"),
                unmeasured=unmeasured if ivar is not None else ~np.isfinite(flux))
            columns["mask"] = bad
            break
    keywords = {k.upper(): plain(v) for k, v in header.items() if k and plain(v) is not None}
    if source.hdul[0] is not hdu:
        keywords = {**{k.upper(): plain(v) for k, v in source.hdul[0].header.items()
                       if k and plain(v) is not None}, **keywords}
    if medium and not any(k in keywords for k in ("AIRORVAC", "WAVE_MEDIUM", "MEDIUM", "VACUUM")):
        keywords["WAVE_MEDIUM"] = medium
    table = Table(columns, {"wave": "Angstrom"}, keywords, [], "FITS 1-D image")
    spectra = spectra_from_table(table, source)
    out = []
    for spectrum in spectra:
        meta: dict[str, Any] = dict(spectrum.meta)
        if mask_note:
            meta["mask_convention"] = mask_note
        survey = spectrum.survey
        if survey in ("sdss", "boss") and source.options.get("survey") is None:
            survey = sdss.survey_key(keywords.get("INSTRUME"), keywords.get("MJD"), spectrum.wave)
        out.append(Spectrum(spectrum.wave, spectrum.flux, spectrum.ivar, spectrum.mask, survey, meta))
    return out
