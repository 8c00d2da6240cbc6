"""1-D FITS image spectra written by hand in the layouts analysis packages use.

Each file holds one made-up spectrum (the SDSS test source of :mod:`.sdss`) with a
companion mask HDU in one writer's convention. The constants say which pixels
each file marks unusable, so a test can check the reader flagged exactly those.

* ``sdss_goodmask``: an SDSS/BOSS spectrum saved as images by an analysis package:
  primary flux with the SDSS header (TELESCOP, COEFF0/1, PLATEID, MJD), HDU1 ivar,
  HDU2 an *unnamed* uint8 good-pixel mask (1 on most pixels, 0 where ivar = 0 and on
  a stretch the package rejected). The case the spPlate reader once read as an AND
  mask, flagging every pixel.
* ``sdss_goodpix_err``: the same, with HDU1 ``ERR`` (1σ) and HDU2 ``GOODPIX``.
* ``iraf_log_goodmask``: IRAF onedspec (``DC-FLAG = 1``, log10 λ) with ``SIGMA`` and a
  ``MASK`` HDU whose header comment says ``1 = good pixel``.
* ``air_badmask``: linear ``AWAV`` grid (air) with ``ERR`` and a uint8 ``MASK`` that is 1
  on a few bad pixels (no BFORM, no comment): a bad-pixel mask by the fraction rule.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from astropy.io import fits

from .sdss import model_spectrum

N = 1800
START = 35800  # log10 λ / 1e-4
#: pixels with ivar 0 in every layout
NO_DATA = tuple(range(40, 52))
#: pixels a package rejected (mask says unusable, ivar is fine)
REJECTED = tuple(range(600, 640))


def _bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def source(z: float = 0.08, seed: int = 21) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vacuum wave, flux, ivar) of the made-up spectrum, ivar 0 on NO_DATA."""
    wave = 10.0 ** ((START + np.arange(N)) * 1e-4)
    flux, ivar = model_spectrum(wave, z, seed)
    ivar[list(NO_DATA)] = 0.0
    return wave, flux, ivar


def unusable() -> np.ndarray:
    """True on the pixels every layout marks unusable."""
    bad = np.zeros(N, bool)
    bad[list(NO_DATA)] = True
    bad[list(REJECTED)] = True
    return bad


def _sdss_header(hdu) -> None:
    h = hdu.header
    h["TELESCOP"] = "SDSS 2.5-M"
    h["PLATEID"], h["MJD"], h["FIBERID"] = 7338, 56660, 733
    h["COEFF0"], h["COEFF1"] = START * 1e-4, 1e-4
    h["BUNIT"] = "1E-17 erg/cm^2/s/Ang"


def sdss_goodmask() -> tuple[str, bytes]:
    _, flux, ivar = source()
    primary = fits.PrimaryHDU(flux)
    _sdss_header(primary)
    good = (~unusable()).astype(np.uint8)
    return "boss-7338-56660-0733-images.fits", _bytes([primary, fits.ImageHDU(ivar),
                                                       fits.ImageHDU(good)])


def sdss_goodpix_err() -> tuple[str, bytes]:
    _, flux, ivar = source()
    primary = fits.PrimaryHDU(flux)
    _sdss_header(primary)
    with np.errstate(divide="ignore"):
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(ivar), 0.0).astype(np.float32)
    good = (~unusable()).astype(np.uint8)
    return "boss-goodpix.fits", _bytes([primary, fits.ImageHDU(sigma, name="ERR"),
                                        fits.ImageHDU(good, name="GOODPIX")])


def iraf_log_goodmask() -> tuple[str, bytes]:
    _, flux, ivar = source(z=0.2, seed=22)
    primary = fits.PrimaryHDU(flux)
    h = primary.header
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = "LINEAR", START * 1e-4, 1e-4, 1.0
    h["DC-FLAG"] = 1
    h["OBJECT"] = "galaxy-iraf"
    with np.errstate(divide="ignore"):
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(ivar), 0.0).astype(np.float32)
    mask = fits.ImageHDU((~unusable()).astype(np.uint8), name="MASK")
    mask.header["COMMENT"] = "pixel mask: 1 = good pixel, 0 = rejected"
    return "iraf-onedspec.fits", _bytes([primary, fits.ImageHDU(sigma, name="SIGMA"), mask])


#: the linear air grid of air_badmask
AIR_START, AIR_STEP = 4000.0, 1.25


def air_badmask() -> tuple[str, bytes]:
    wave_air = AIR_START + AIR_STEP * np.arange(N)
    flux, ivar = model_spectrum(wave_air, 0.05, seed=23)
    ivar[list(NO_DATA)] = 0.0
    primary = fits.PrimaryHDU(flux)
    h = primary.header
    h["CTYPE1"], h["CUNIT1"] = "AWAV", "Angstrom"
    h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = AIR_START, AIR_STEP, 1.0
    with np.errstate(divide="ignore"):
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(ivar), 0.0).astype(np.float32)
    bad = np.zeros(N, np.uint8)
    bad[list(REJECTED)] = 1
    bad[list(NO_DATA)] = 1
    return "air-linear.fits", _bytes([primary, fits.ImageHDU(sigma, name="ERR"),
                                      fits.ImageHDU(bad, name="MASK")])


LAYOUTS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "sdss_goodmask": sdss_goodmask,
    "sdss_goodpix_err": sdss_goodpix_err,
    "iraf_log_goodmask": iraf_log_goodmask,
    "air_badmask": air_badmask,
}
