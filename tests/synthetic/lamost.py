"""Small LAMOST files written from scratch in each layout :mod:`spectok_core.io.lamost` reads.

The spectra are made up (a smooth stellar continuum with a few absorption
lines); the layouts follow the LAMOST data models: the DR1-7 LRS file (primary
image of 5 rows: flux, ivar, wavelength, andmask, ormask), the DR8+ LRS file (a
``COADD`` table with one row of array columns) and the MRS file (``COADD_B`` /
``COADD_R`` tables with one row per pixel, plus per-exposure ``B-LMJM`` /
``R-LMJM`` tables whose red arm is stored with falling wavelength). MRS arms are
shorter than the real ones to keep the file small. The constants below are what
the tests check the reader returns.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from astropy.io import fits

BADCCD, NOSKY, BRIGHTSKY = 1, 4, 8

LRS = dict(
    obsid=123456789, desig="LAMOST J123456.78+123456.7", ra=188.7366, dec=12.5824,
    lmjd=57500, planid="TEST123N456789V01", spid=7, fiberid=101, cls="STAR", subclass="G2",
    z=-0.0001, z_err=0.00002, snr=dict(u=20.0, g=80.0, r=120.0, i=140.0, z=110.0),
    log_start=3.5682, n=3909,
)
LRS_ANDMASK = (500, 501, 502)  # bad in every exposure: masked
LRS_ORMASK = (600, 601)  # bad in some exposure: kept
LRS_IVAR_ZERO = (3900, 3901)

MRS = dict(
    obsid=987654321, desig="LAMOST J192814.09+435531.0", ra=292.0587, dec=43.9253,
    lmjd=58600, planid="TD192102N424113K01", spid=12, fiberid=76,
    snr_b=50.0, snr_r=80.0, lmjm=("84000001", "84000015"),
    b_start=3.6900, r_start=3.7975, n_coadd=1500, n_exp=1000,
)
MRS_ANDMASK_B = (100, 101)  # masked
MRS_ORMASK_R = (200, 201)  # kept
MRS_PIXMASK_R = 10  # in the first exposure's red arm, index in increasing wavelength


def _to_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def _star(wave: np.ndarray, snr: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux and ivar of a made-up star at the given S/N."""
    rng = np.random.default_rng(seed)
    flux = 1000.0 * (wave / 5500.0) ** -1.5
    for centre, depth in ((4341.7, 0.5), (4862.7, 0.5), (5174.0, 0.3), (6564.6, 0.6)):
        flux *= 1.0 - depth * np.exp(-0.5 * ((wave - centre) / 3.0) ** 2)
    sigma = flux / snr
    flux = flux + rng.normal(0.0, 1.0, wave.shape) * sigma
    return flux.astype(np.float32), (1.0 / sigma**2).astype(np.float32)


def _primary_header(p: dict, vacuum: bool = True) -> fits.Header:
    h = fits.Header()
    h["OBSID"] = p["obsid"]
    h["AUTHOR"] = "LAMOST Pipeline"
    h["DATA_V"] = "LAMOST TEST"
    h["TELESCOP"] = "LAMOST"
    h["ORIGIN"] = "NAOC-LAMOST"
    h["LMJD"] = p["lmjd"]
    h["MJD"] = p["lmjd"] - 1
    h["PLANID"] = p["planid"]
    h["RA"] = p["ra"]
    h["DEC"] = p["dec"]
    h["DESIG"] = p["desig"]
    h["FIBERID"] = p["fiberid"]
    h["SPID"] = p["spid"]
    h["HELIO"] = True
    h["VACUUM"] = (vacuum, "Wavelengths are in vacuum")
    return h


def _lrs_header(vacuum: bool) -> fits.Header:
    p = LRS
    h = _primary_header(p, vacuum)
    h["CLASS"] = p["cls"]
    h["SUBCLASS"] = p["subclass"]
    h["Z"] = p["z"]
    h["Z_ERR"] = p["z_err"]
    for band, value in p["snr"].items():
        h[f"SNR{band.upper()}"] = value
    return h


def lrs_arrays() -> dict[str, np.ndarray]:
    """The five LRS rows (float32, as in the files)."""
    p = LRS
    wave = (10.0 ** (p["log_start"] + 1e-4 * np.arange(p["n"]))).astype(np.float32)
    flux, ivar = _star(wave.astype(np.float64), 100.0, 6)
    ivar[list(LRS_IVAR_ZERO)] = 0.0
    andmask = np.zeros(p["n"], np.float32)
    ormask = np.zeros(p["n"], np.float32)
    andmask[list(LRS_ANDMASK)] = BADCCD
    ormask[list(LRS_ANDMASK)] = BADCCD
    ormask[list(LRS_ORMASK)] = NOSKY | BRIGHTSKY
    return dict(flux=flux, ivar=ivar, wavelength=wave, andmask=andmask, ormask=ormask)


def make_lrs_image(vacuum: bool = True) -> tuple[str, bytes]:
    """DR1-7 layout: a 5 x 3909 float32 primary image."""
    p = LRS
    rows = lrs_arrays()
    primary = fits.PrimaryHDU(np.vstack(list(rows.values())), header=_lrs_header(vacuum))
    primary.header["EXTEN0"] = "Flux, Inverse, Wavelength, Andmask, Ormask"
    primary.header["COEFF0"] = p["log_start"]
    primary.header["COEFF1"] = 1e-4
    name = f"spec-{p['lmjd']}-{p['planid']}_sp{p['spid']:02d}-{p['fiberid']:03d}.fits"
    return name, _to_bytes([primary])


def make_lrs_table() -> tuple[str, bytes]:
    """DR8+ layout: header-only primary, one-row COADD table of array columns."""
    p = LRS
    rows = lrs_arrays()
    n = p["n"]
    columns = [fits.Column(key.upper(), f"{n}E", array=value[None, :]) for key, value in rows.items()]
    columns.append(fits.Column("NORMALIZATION", f"{n}E", array=np.ones((1, n), np.float32)))
    table = fits.BinTableHDU.from_columns(columns, name="COADD")
    primary = fits.PrimaryHDU(header=_lrs_header(True))
    name = f"spec-{p['lmjd']}-{p['planid']}_sp{p['spid']:02d}-{p['fiberid']:03d}.fits"
    return name, _to_bytes([primary, table])


def mrs_coadd(arm: str) -> dict[str, np.ndarray]:
    p = MRS
    loglam = p[f"{arm.lower()}_start"] + 1e-5 * np.arange(p["n_coadd"])
    flux, ivar = _star(10.0**loglam, p[f"snr_{arm.lower()}"], 7 if arm == "B" else 8)
    andmask = np.zeros(loglam.size, np.int16)
    ormask = np.zeros(loglam.size, np.int16)
    if arm == "B":
        andmask[list(MRS_ANDMASK_B)] = BADCCD
    else:
        ormask[list(MRS_ORMASK_R)] = BADCCD
    return dict(FLUX=flux, IVAR=ivar, LOGLAM=loglam.astype(np.float32), ANDMASK=andmask, ORMASK=ormask)


def mrs_exposure(arm: str, index: int) -> dict[str, np.ndarray]:
    """One exposure on 'native' pixels (slightly uneven steps); the red arm falls in wavelength."""
    p = MRS
    pixels = np.arange(p["n_exp"])
    loglam = p[f"{arm.lower()}_start"] + 1.1e-5 * pixels - 2e-10 * pixels**2
    flux, ivar = _star(10.0**loglam, p[f"snr_{arm.lower()}"] / 2, 10 + index + (arm == "R"))
    pixmask = np.zeros(loglam.size, np.int16)
    if arm == "R" and index == 0:
        pixmask[MRS_PIXMASK_R] = BADCCD
    columns = dict(FLUX=flux, IVAR=ivar, LOGLAM=loglam.astype(np.float32), PIXMASK=pixmask)
    if arm == "R":
        columns = {key: value[::-1] for key, value in columns.items()}
    return columns


def _table(columns: dict[str, np.ndarray], name: str) -> fits.BinTableHDU:
    formats = {"f": "E", "i": "I"}
    cols = [fits.Column(key, formats[value.dtype.kind], array=value) for key, value in columns.items()]
    return fits.BinTableHDU.from_columns(cols, name=name)


def make_mrs(overlap: bool = False) -> tuple[str, bytes]:
    """COADD_B, COADD_R and two exposures per arm; ``overlap`` damages the red arm's grid."""
    p = MRS
    primary = fits.PrimaryHDU(header=_primary_header(p))
    primary.header["EXTNAME"] = "Information"
    primary.header["NEXP_B"] = 2
    primary.header["NEXP_R"] = 2
    hdus = [primary]
    for arm in ("B", "R"):
        columns = mrs_coadd(arm)
        if overlap and arm == "R":
            columns["LOGLAM"] = (columns["LOGLAM"] - 0.1).astype(np.float32)
        hdu = _table(columns, f"COADD_{arm}")
        hdu.header["SNR"] = p[f"snr_{arm.lower()}"]
        hdus.append(hdu)
    for arm in ("B", "R"):
        for index, lmjm in enumerate(p["lmjm"]):
            hdu = _table(mrs_exposure(arm, index), f"{arm}-{lmjm}")
            hdu.header["LMJM"] = lmjm
            hdu.header["EXPTIME"] = 600
            hdu.header["SNR"] = p[f"snr_{arm.lower()}"] / 2
            hdus.append(hdu)
    name = f"med-{p['lmjd']}-{p['planid']}_sp{p['spid']:02d}-{p['fiberid']:03d}.fits"
    return name, _to_bytes(hdus)


LAYOUTS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "lrs_image": make_lrs_image,
    "lrs_table": make_lrs_table,
    "mrs": make_mrs,
}
