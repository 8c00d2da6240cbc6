"""Small APOGEE files written from scratch in each layout :mod:`spectok_core.io.apogee` reads.

The spectra are made up (a flat H-band continuum with a few absorption lines);
the layouts follow the DR17 data models: apStar (flux/error/APOGEE_PIXMASK rows
on the log-λ WCS), apVisit (3 chips stored red to blue with falling wavelength,
plus a wavelength HDU), aspcapStar (normalised flux, error, model, label table)
and The Payne's .npz spectra and wavelength grid. apStar and apVisit use fewer
pixels than the real files to stay small; the readers take the length from the
data. The constants below are what the tests check the reader returns.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np
from astropy.io import fits

BADPIX, SIG_SKYLINE, NOT_ENOUGH_PSF = 1 << 0, 1 << 12, 1 << 14

APSTAR = dict(
    object_id="2M12345678+1234567", ra=185.5, dec=12.25, snr=120.0, nvisits=2,
    teff=4750.0, logg=2.5, feh=-0.3, vhelio=-12.5, snrvis=(80.0, 90.0),
    n=3000, gap=(1500, 1700),
)
#: apStar pixels flagged BADPIX (bad), SIG_SKYLINE (warning only) and NOT_ENOUGH_PSF (bad)
APSTAR_BADPIX = (100, 101)
APSTAR_SKYLINE = (200, 201, 202)
APSTAR_PSF = (300,)

APVISIT = dict(
    object_id="2M00000001+0000001", ra=10.0, dec=-5.0, snr=75.0, plate="9999", mjd=57000,
    fiberid=42, n=1024,
    # blue, green, red chip starts (Å) and a constant step per chip
    chips=((15140.0, 0.28), (15860.0, 0.25), (16475.0, 0.21)),
)
APVISIT_BADPIX = 5  # index into the increasing-wavelength spectrum

ASPCAP = dict(object_id="2M11111111-2222222", teff=5100.0, logg=3.2, fe_h=0.1, m_h=0.05,
              alpha_m=0.02, teff_err=40.0)
ASPCAP_INFLATED = (1000, 1001)
PAYNE_INFLATED = (50, 51, 52)
PAYNE_SNR = 150.0
PAYNE_VISIT_SNRS = (60.0, 70.0)

APSTAR_START, APSTAR_STEP = 4.179, 6e-6
ASPCAP_RANGES = ((322, 3242), (3648, 6048), (6412, 8306))


def _to_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def _lines(wave: np.ndarray) -> np.ndarray:
    """A continuum-normalised H-band spectrum: unity with a few absorption lines."""
    profile = np.ones_like(wave)
    for centre in (15200.0, 15770.0, 16000.0, 16720.0, 16900.0):
        profile -= 0.4 * np.exp(-0.5 * ((wave - centre) / 0.5) ** 2)
    return profile


def _wcs(header: fits.Header) -> None:
    header["CRVAL1"] = APSTAR_START
    header["CDELT1"] = APSTAR_STEP
    header["CRPIX1"] = 1
    header["CTYPE1"] = "LOG-LINEAR"
    header["DC-FLAG"] = 1


def apstar_wave(n: int = APSTAR["n"]) -> np.ndarray:
    return 10.0 ** (APSTAR_START + APSTAR_STEP * np.arange(n))


def apstar_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, error, bitmask) rows: combined (pixel weighting), combined (global), 2 visits."""
    p = APSTAR
    rng = np.random.default_rng(1)
    base = 800.0 * _lines(apstar_wave())
    snr_per_row = np.array([[p["snr"]], [p["snr"]], [p["snrvis"][0]], [p["snrvis"][1]]])
    error = base / snr_per_row
    flux = base + rng.normal(0.0, 1.0, error.shape) * error
    bits = np.zeros(flux.shape, dtype=np.int16)
    bits[:, list(APSTAR_BADPIX)] |= BADPIX
    bits[:, list(APSTAR_SKYLINE)] |= SIG_SKYLINE
    bits[:, list(APSTAR_PSF)] |= NOT_ENOUGH_PSF
    start, stop = p["gap"]
    flux[:2, start:stop] = np.nan  # DR17 combined rows: NaN in the chip gap
    error[:2, start:stop] = np.nan
    flux[2:, start:stop] = 0.0  # visit rows: zeros
    error[2:, start:stop] = 0.0
    return flux.astype(np.float32), error.astype(np.float32), bits


def make_apstar() -> tuple[str, bytes]:
    p = APSTAR
    flux, error, bits = apstar_arrays()
    primary = fits.PrimaryHDU()
    h = primary.header
    _wcs(h)
    h["NWAVE"] = p["n"]
    h["OBJID"] = p["object_id"]
    h["FIELD"] = "TEST_FIELD"
    h["SNR"] = p["snr"]
    h["RA"] = p["ra"]
    h["DEC"] = p["dec"]
    h["NVISITS"] = p["nvisits"]
    h["VHELIO"] = p["vhelio"]
    h["RV_TEFF"] = p["teff"]
    h["RV_LOGG"] = p["logg"]
    h["RV_FEH"] = p["feh"]
    h["SFD_EBV"] = -9999.99
    for visit, snr in enumerate(p["snrvis"], start=1):
        h[f"SFILE{visit}"] = f"apVisit-dr17-0001-5500{visit}-001.fits"
        h[f"SNRVIS{visit}"] = snr
        h[f"VHELIO{visit}"] = p["vhelio"] + visit
    hdus = [primary]
    for data, unit in ((flux, "Flux (10^-17 erg/s/cm^2/Ang)"), (error, "Err (10^-17 erg/s/cm^2/Ang)"),
                       (bits, "Pixel bitmask")):
        hdu = fits.ImageHDU(data)
        _wcs(hdu.header)
        hdu.header["BUNIT"] = unit
        hdus.append(hdu)
    return f"apStar-dr17-{p['object_id']}.fits", _to_bytes(hdus)


def apvisit_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(wave, flux, error, bits) in FILE order: chips red, green, blue; falling wavelength."""
    p = APVISIT
    n = p["n"]
    wave_up = np.concatenate([start + step * np.arange(n) for start, step in p["chips"]])
    rng = np.random.default_rng(2)
    flux_up = 300.0 * _lines(wave_up)
    error_up = flux_up / p["snr"]
    flux_up = flux_up + rng.normal(0.0, 1.0, flux_up.shape) * error_up
    bits_up = np.zeros(wave_up.shape, dtype=np.int16)
    bits_up[APVISIT_BADPIX] = BADPIX
    # The file order is exactly the increasing order reversed.
    as_file = [a[::-1].reshape(3, n) for a in (wave_up, flux_up, error_up, bits_up)]
    return as_file[0], as_file[1].astype(np.float32), as_file[2].astype(np.float32), as_file[3]


def make_apvisit() -> tuple[str, bytes]:
    p = APVISIT
    wave, flux, error, bits = apvisit_arrays()
    primary = fits.PrimaryHDU()
    h = primary.header
    h["PLATE"] = p["plate"]
    h["TELESCOP"] = "apo25m"
    h["MJD5"] = p["mjd"]
    h["FIBERID"] = p["fiberid"]
    h["OBJID"] = p["object_id"]
    h["RA"] = p["ra"]
    h["DEC"] = p["dec"]
    h["SNR"] = p["snr"]
    h["VHELIO"] = 3.5
    hdus = [primary]
    for data, unit in ((flux, "Flux (10^-17 erg/s/cm^2/Ang)"), (error, "Error"),
                       (bits, "Flag Mask (bitwise)"), (wave, "Wavelength (Ang)")):
        hdu = fits.ImageHDU(data)
        hdu.header["BUNIT"] = unit
        hdus.append(hdu)
    hdus.append(fits.ImageHDU(np.zeros((3, 4), dtype=np.float32)))  # sky, as in the real files
    return f"apVisit-dr17-{p['plate']}-{p['mjd']}-{p['fiberid']:03d}.fits", _to_bytes(hdus)


def aspcap_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised flux, error, model) on the full apStar grid with zeros in the chip gaps."""
    wave = apstar_wave(8575)
    rng = np.random.default_rng(3)
    model = _lines(wave)
    error = np.full(wave.shape, 0.01)
    flux = model + rng.normal(0.0, 0.01, wave.shape)
    keep = np.zeros(wave.shape, bool)
    for start, stop in ASPCAP_RANGES:
        keep[start:stop] = True
    flux[~keep], error[~keep], model[~keep] = 0.0, 0.0, 0.0
    error[list(ASPCAP_INFLATED)] = 1e10
    return flux.astype(np.float32), error.astype(np.float32), model.astype(np.float32)


def make_aspcapstar() -> tuple[str, bytes]:
    p = ASPCAP
    flux, error, model = aspcap_arrays()
    primary = fits.PrimaryHDU()
    primary.header["OBJID"] = p["object_id"]
    primary.header["SNR"] = 100.0
    hdus = [primary]
    for data in (flux, error, model):
        hdu = fits.ImageHDU(data)
        _wcs(hdu.header)
        hdus.append(hdu)
    columns = [fits.Column("APOGEE_ID", "18A", array=[p["object_id"]])]
    for key in ("teff", "logg", "fe_h", "m_h", "alpha_m", "teff_err"):
        columns.append(fits.Column(key.upper(), "E", array=[p[key]]))
    columns.append(fits.Column("LOGG_ERR", "E", array=[np.nan]))  # blank: must be skipped
    columns.append(fits.Column("PARAM", "9E", array=np.zeros((1, 9))))
    hdus.append(fits.BinTableHDU.from_columns(columns))
    return f"aspcapStar-dr17-{p['object_id']}.fits", _to_bytes(hdus)


def payne_wavelength() -> np.ndarray:
    index = np.concatenate([np.arange(start, stop) for start, stop in ASPCAP_RANGES])
    return apstar_wave(8575)[index]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps, so the bytes are deterministic."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", (1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def payne_arrays(snrs: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised flux and error, one row per S/N; The Payne's excluded pixels get error ~100."""
    rng = np.random.default_rng(seed)
    model = _lines(payne_wavelength())
    error = np.repeat(1.0 / np.array(snrs)[:, None], model.size, axis=1)
    flux = model + rng.normal(0.0, 1.0, error.shape) * error
    error[:, list(PAYNE_INFLATED)] = 100.0
    return flux.astype(np.float32), error.astype(np.float32)


def make_payne_spectrum() -> tuple[str, bytes]:
    flux, error = payne_arrays((PAYNE_SNR,), 4)
    data = _npz({"spectrum": flux[0], "spec_err": error[0]})
    return "thepayne_spectrum_ap_id_2M01234567+7654321_.npz", data


def make_payne_visits() -> tuple[str, bytes]:
    flux, error = payne_arrays(PAYNE_VISIT_SNRS, 5)
    data = _npz({
        "spectra": flux, "spec_errs": error,
        "snrs": np.array(PAYNE_VISIT_SNRS, dtype=np.float32),
        "vhelios": np.array([10.0, -20.0], dtype=np.float32),
        "hjds": np.array([56000.5, 56010.5]),
    })
    return "thepayne_visit_spectra_ap_id_2M07654321-1234567_.npz", data


def make_payne_wavelength() -> tuple[str, bytes]:
    return "thepayne_apogee_wavelength.npz", _npz({"wavelength": payne_wavelength()})


LAYOUTS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "apstar": make_apstar,
    "apvisit": make_apvisit,
    "aspcapstar": make_aspcapstar,
    "payne_spectrum": make_payne_spectrum,
    "payne_visits": make_payne_visits,
}
# make_payne_wavelength is a bad input (always refused), so it is not a fuzz seed.
