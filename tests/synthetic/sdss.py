"""Small SDSS/BOSS files written from scratch in each layout :mod:`spectok_core.io.sdss` reads.

The spectra are made up (a power-law continuum with a few Gaussian lines); the
layouts follow the SDSS data models: spec / spec-lite (COADD + SPECOBJ or SPALL),
DR7 spSpec (4-row image + COEFF0/1) and spPlate (flux/ivar/mask images + plug map).
The constants below are what the tests check the reader returns.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from astropy.io import fits

# SPPIXMASK bits used below
MANYBADCOLUMNS, NEARBADPIXEL, BRIGHTSKY, NODATA = 1 << 4, 1 << 16, 1 << 23, 1 << 24

LEGACY = dict(plate=500, mjd=52000, fiber=100, z=0.1234, ra=150.25, dec=2.5, start=35800, n=1500)
BOSS = dict(plate=7338, mjd=56660, fiber=733, z=0.456, ra=213.35115, dec=53.09082, start=35563, n=4600)
SPSPEC = dict(plate=300, mjd=51900, fiber=42, z=1.05, ra=10.5, dec=-1.25, start=35800, n=1500)
SPPLATE = dict(plate=400, mjd=51800, start=35790, n=1200)
#: pixels given special treatment in every single-spectrum layout
IVAR_ZERO = (10, 11, 12)
BRIGHTSKY_PIXELS = (200, 201, 202, 203)
NEARBADPIXEL_PIXELS = (300, 301)


def _to_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def model_spectrum(wave: np.ndarray, z: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux (1e-17 erg/s/cm2/Å) and ivar of a made-up source: continuum plus lines at redshift z."""
    rng = np.random.default_rng(seed)
    flux = 20.0 * (wave / 5000.0) ** -1.0
    for rest, amplitude in ((4862.7, 15.0), (5008.2, 30.0), (6564.6, 40.0), (2799.1, 25.0)):
        flux += amplitude * np.exp(-0.5 * ((wave - rest * (1 + z)) / 4.0) ** 2)
    sigma = 0.5 + 0.02 * flux
    flux = flux + rng.normal(0.0, sigma)
    return flux.astype(np.float32), (1.0 / sigma**2).astype(np.float32)


def _coadd_table(p: dict, seed: int, failed: bool = False) -> fits.BinTableHDU:
    loglam = (p["start"] + np.arange(p["n"])) * 1e-4
    flux, ivar = model_spectrum(10**loglam, p["z"], seed)
    and_mask = np.zeros(p["n"], dtype=np.int32)
    and_mask[p["n"] // 2 :] |= MANYBADCOLUMNS  # fibre-level note on the red half: not bad
    and_mask[list(NEARBADPIXEL_PIXELS)] |= NEARBADPIXEL  # informational: not bad
    and_mask[list(BRIGHTSKY_PIXELS)] |= BRIGHTSKY  # bad
    ivar[list(IVAR_ZERO)] = 0.0
    if failed:
        flux[:], ivar[:], and_mask[:] = 0.0, 0.0, NODATA
    columns = [
        fits.Column("flux", "E", array=flux),
        fits.Column("loglam", "E", array=loglam.astype(np.float32)),
        fits.Column("ivar", "E", array=ivar),
        fits.Column("and_mask", "J", array=and_mask),
        fits.Column("or_mask", "J", array=and_mask),
    ]
    return fits.BinTableHDU.from_columns(columns, name="COADD")


def _primary(p: dict) -> fits.PrimaryHDU:
    header = fits.Header()
    header["TELESCOP"] = "SDSS 2.5-M"
    header["MJD"] = p["mjd"]
    header["PLATEID"] = p["plate"]
    header["FIBERID"] = p["fiber"]
    header["RA"] = (p["ra"] + 1.0, "telescope boresight, not the object")
    header["DEC"] = p["dec"] + 1.0
    header["PLUG_RA"] = p["ra"]
    header["PLUG_DEC"] = p["dec"]
    header["COEFF0"] = p["start"] * 1e-4
    header["COEFF1"] = 1e-4
    header["VACUUM"] = True
    header["BUNIT"] = "1E-17 erg/cm^2/s/Ang"
    return fits.PrimaryHDU(header=header)


def _row_table(name: str, values: dict) -> fits.BinTableHDU:
    columns = []
    for key, value in values.items():
        if isinstance(value, str):
            columns.append(fits.Column(key, f"{max(len(value), 1)}A", array=np.array([value])))
        elif isinstance(value, float):
            columns.append(fits.Column(key, "D" if key.endswith(("RA", "DEC")) else "E", array=[value]))
        else:
            columns.append(fits.Column(key, "J", array=[value]))
    return fits.BinTableHDU.from_columns(columns, name=name)


def spec_legacy() -> tuple[str, bytes]:
    """SDSS-I/II spec-lite file: COADD + SPECOBJ with INSTRUMENT='SDSS'."""
    p = LEGACY
    specobj = _row_table("SPECOBJ", {
        "SURVEY": "sdss", "INSTRUMENT": "SDSS", "PROGRAMNAME": "legacy", "RUN2D": "26",
        "PLATE": p["plate"], "MJD": p["mjd"], "FIBERID": p["fiber"],
        "PLUG_RA": p["ra"], "PLUG_DEC": p["dec"], "CLASS": "GALAXY", "SUBCLASS": "STARFORMING",
        "Z": p["z"], "Z_ERR": 2e-5, "ZWARNING": 0, "SN_MEDIAN_ALL": 12.5,
        "SPECOBJID": "   563015890000000000", "BESTOBJID": "1237650000000000001",
    })
    name = f"spec-{p['plate']:04d}-{p['mjd']}-{p['fiber']:04d}.fits"
    return name, _to_bytes([_primary(p), _coadd_table(p, seed=1), specobj])


def spec_boss() -> tuple[str, bytes]:
    """BOSS spec file: COADD + SPALL (no INSTRUMENT column, so the MJD decides)."""
    p = BOSS
    spall = _row_table("SPALL", {
        "PROGRAMNAME": "RM", "RUN2D": "v5_13_2", "PLATE": p["plate"], "MJD": p["mjd"],
        "FIBERID": p["fiber"], "PLUG_RA": p["ra"], "PLUG_DEC": p["dec"], "RA": p["ra"] + 1e-6,
        "DEC": p["dec"], "CLASS": "QSO", "SUBCLASS": "BROADLINE", "Z": p["z"], "Z_ERR": 3e-5,
        "ZWARNING": 0, "SN_MEDIAN_ALL": 9.0, "OBJID": "1237661385994338550",
    })
    name = f"spec-{p['plate']:04d}-{p['mjd']}-{p['fiber']:04d}.fits"
    header = _primary(p)
    header.header["RUN2D"] = "v5_13_2"
    return name, _to_bytes([header, _coadd_table(p, seed=2), spall])


def spec_failed() -> tuple[str, bytes]:
    """A spectrum the pipeline could not extract: ZWARNING=6, every pixel ivar=0 and NODATA."""
    p = dict(LEGACY, plate=269, mjd=51581, fiber=3)
    specobj = _row_table("SPECOBJ", {
        "INSTRUMENT": "SDSS", "PLATE": p["plate"], "MJD": p["mjd"], "FIBERID": p["fiber"],
        "PLUG_RA": p["ra"], "PLUG_DEC": p["dec"], "CLASS": "GALAXY", "Z": 0.0, "ZWARNING": 6,
        "SN_MEDIAN_ALL": 0.0,
    })
    return "spec-0269-51581-0003.fits", _to_bytes([_primary(p), _coadd_table(p, 3, failed=True), specobj])


def spspec_dr7() -> tuple[str, bytes]:
    """DR7 spSpec: 4-row image (flux, continuum-subtracted, sigma, mask) and header labels."""
    p = SPSPEC
    wave = 10 ** ((p["start"] + np.arange(p["n"])) * 1e-4)
    flux, ivar = model_spectrum(wave, p["z"], seed=4)
    sigma = 1.0 / np.sqrt(ivar)
    sigma[list(IVAR_ZERO)] = 0.0  # spSpec marks missing data with a zero error
    mask = np.zeros(p["n"], dtype=np.float32)
    mask[list(BRIGHTSKY_PIXELS)] = BRIGHTSKY
    mask[list(NEARBADPIXEL_PIXELS)] = NEARBADPIXEL
    image = np.vstack([flux, flux - np.median(flux), sigma, mask]).astype(np.float32)
    primary = fits.PrimaryHDU(image)
    h = primary.header
    h["TELESCOP"] = "SDSS 2.5-M"
    h["COEFF0"], h["COEFF1"] = p["start"] * 1e-4, 1e-4
    h["RAOBJ"], h["DECOBJ"] = p["ra"], p["dec"]
    h["PLATEID"], h["MJD"], h["FIBERID"] = p["plate"], p["mjd"], p["fiber"]
    h["SPEC_CLN"] = (3, "QSO")
    h["Z"], h["Z_ERR"], h["Z_WARNIN"] = p["z"], 4e-4, 0
    lines = fits.BinTableHDU.from_columns(
        [fits.Column("restWave", "E", array=[6564.6]), fits.Column("z", "E", array=[p["z"]])]
    )
    name = f"spSpec-{p['mjd']}-{p['plate']:04d}-{p['fiber']:03d}.fit"
    return name, _to_bytes([primary, lines])


#: spPlate fibres: (OBJTYPE, redshift of the made-up source); SKY and NA are skipped
SPPLATE_FIBRES = (("GALAXY", 0.08), ("SKY", 0.0), ("QSO", 0.9), ("NA", 0.0))


def spplate() -> tuple[str, bytes]:
    """spPlate: flux image (one row per fibre) + ivar + AND/OR masks + dispersion + plug map."""
    p = SPPLATE
    wave = 10 ** ((p["start"] + np.arange(p["n"])) * 1e-4)
    rows = [model_spectrum(wave, z, seed=10 + i) for i, (_, z) in enumerate(SPPLATE_FIBRES)]
    flux = np.vstack([f for f, _ in rows])
    ivar = np.vstack([v for _, v in rows])
    and_mask = np.zeros(flux.shape, dtype=np.int32)
    and_mask[0, list(BRIGHTSKY_PIXELS)] = BRIGHTSKY
    primary = fits.PrimaryHDU(flux)
    h = primary.header
    h["TELESCOP"] = "SDSS 2.5-M"
    h["PLATEID"], h["MJD"] = p["plate"], p["mjd"]
    h["COEFF0"], h["COEFF1"] = p["start"] * 1e-4, 1e-4
    n = len(SPPLATE_FIBRES)
    plugmap = fits.BinTableHDU.from_columns([
        fits.Column("OBJTYPE", "16A", array=[t for t, _ in SPPLATE_FIBRES]),
        fits.Column("RA", "D", array=30.0 + np.arange(n)),
        fits.Column("DEC", "D", array=-5.0 + 0.1 * np.arange(n)),
        fits.Column("FIBERID", "J", array=np.arange(1, n + 1)),
    ], name="PLUGMAP")
    hdus = [
        primary,
        fits.ImageHDU(ivar, name="IVAR"),
        fits.ImageHDU(and_mask, name="ANDMASK"),
        fits.ImageHDU(and_mask, name="ORMASK"),
        fits.ImageHDU(np.full(flux.shape, 1.1, dtype=np.float32), name="WAVEDISP"),
        plugmap,
    ]
    return f"spPlate-{p['plate']:04d}-{p['mjd']}.fits", _to_bytes(hdus)


LAYOUTS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "spec_legacy": spec_legacy,
    "spec_boss": spec_boss,
    "spec_failed": spec_failed,
    "spspec_dr7": spspec_dr7,
    "spplate": spplate,
}
