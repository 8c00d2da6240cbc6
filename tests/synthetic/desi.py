"""Small DESI files written from scratch: a coadd, a coadd whose arm grids do not
coincide, and the two kinds of redshift catalogue (redrock REDSHIFTS, zcatalog).

The arms are shortened (to keep files small) but keep DESI's layout: one linear
0.8 Å grid, three arms that overlap by 51 and 126 pixels as in real coadds.
The constants below are what the tests check the reader returns.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from astropy.io import fits

STEP = 0.8
#: arm -> (first, last wavelength) in Å; overlaps 3860-3900 (51 px) and 4100-4200 (126 px)
ARMS = {"B": (3600.0, 3900.0), "R": (3860.0, 4200.0), "Z": (4100.0, 4500.0)}
#: FIBERMAP rows: (TARGETID, OBJTYPE, what the row holds)
ROWS = (
    (39627866878511337, "TGT", "galaxy"),
    (-2713437, "", "empty"),
    (39627866878512000, "TGT", "empty"),
    (616088619186127404, "SKY", "sky"),
    (39627866878514741, "TGT", "star"),
)
TARGETS = [row[0] for row in ROWS if row[2] in ("galaxy", "star")]
STAR_ROW = [row[2] for row in ROWS].index("star")
#: redshift catalogue entries, by TARGETID
REDSHIFTS = {
    39627866878511337: dict(Z=0.1, ZERR=1.5e-5, ZWARN=0, SPECTYPE="GALAXY", SUBTYPE=""),
    39627866878514741: dict(Z=-0.0001, ZERR=2e-6, ZWARN=4, SPECTYPE="STAR", SUBTYPE="K"),
}
#: a MASK bit set on these pixels of the star row, in arm R (one of them in the b/r overlap)
MASKED_R_PIXELS = (5, 200)


def _to_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def arm_wave(arm: str, offset: float = 0.0) -> np.ndarray:
    lo, hi = ARMS[arm]
    return lo + offset + STEP * np.arange(int(round((hi - lo) / STEP)) + 1)


def _row_spectrum(kind: str, wave: np.ndarray, arm: str, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "empty":
        return np.zeros(wave.size, np.float32), np.zeros(wave.size, np.float32)
    if kind == "sky":
        flux = 2.0 + 50.0 * np.exp(-0.5 * ((wave - 4358.3) / 1.0) ** 2)
    elif kind == "galaxy":
        flux = 1.5 + 8.0 * np.exp(-0.5 * ((wave - 3727.1 * 1.1) / 1.5) ** 2)
    else:
        flux = 10.0 * (wave / 4000.0) ** 2 - 3.0 * np.exp(-0.5 * ((wave - 4102.9) / 2.0) ** 2)
    # each arm has its own noise level, so the overlap weighting is visible
    sigma = {"B": 0.5, "R": 1.0, "Z": 2.0}[arm] * np.ones(wave.size)
    return (flux + rng.normal(0, sigma)).astype(np.float32), (1 / sigma**2).astype(np.float32)


def _coadd(r_offset: float = 0.0) -> bytes:
    primary = fits.PrimaryHDU()
    primary.header["SURVEY"], primary.header["PROGRAM"] = "sv3", "dark"
    primary.header["SPGRP"], primary.header["HPXPIXEL"] = "healpix", 26065
    n = len(ROWS)
    fibermap = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=[r[0] for r in ROWS]),
        fits.Column("COADD_FIBERSTATUS", "J", array=[0, 1, 512, 0, 0]),
        fits.Column("TARGET_RA", "D", array=216.9 + 0.01 * np.arange(n)),
        fits.Column("TARGET_DEC", "D", array=3.2 + 0.01 * np.arange(n)),
        fits.Column("OBJTYPE", "3A", array=[r[1] for r in ROWS]),
        fits.Column("COADD_NUMEXP", "I", array=[2, 0, 0, 1, 2]),
    ], name="FIBERMAP")
    hdus = [primary, fibermap]
    for a, arm in enumerate(ARMS):
        wave = arm_wave(arm, r_offset if arm == "R" else 0.0)
        rows = [_row_spectrum(kind, wave, arm, seed=10 * a + i) for i, (_, _, kind) in enumerate(ROWS)]
        flux = np.vstack([f for f, _ in rows])
        ivar = np.vstack([v for _, v in rows])
        mask = np.zeros(flux.shape, dtype=np.uint32)
        if arm == "R":
            mask[STAR_ROW, list(MASKED_R_PIXELS)] = 1 << 2  # COSMIC
        wave_hdu = fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH")
        wave_hdu.header["BUNIT"] = "Angstrom"
        flux_hdu = fits.ImageHDU(flux, name=f"{arm}_FLUX")
        flux_hdu.header["BUNIT"] = "10**-17 erg/(s cm2 Angstrom)"
        hdus += [wave_hdu, flux_hdu, fits.ImageHDU(ivar, name=f"{arm}_IVAR"),
                 fits.ImageHDU(mask, name=f"{arm}_MASK")]
    return _to_bytes(hdus)


def coadd() -> tuple[str, bytes]:
    """Five fibres: a galaxy, an unassigned fibre, an empty target fibre, a sky fibre, a star."""
    return "coadd-sv3-dark-26065.fits", _coadd()


def coadd_offset_arms() -> tuple[str, bytes]:
    """The R arm shifted by half a pixel, so the overlaps do not share pixels."""
    return "coadd-offset-arms.fits", _coadd(r_offset=0.4)


def _zcat_columns(order: list[int], spectype_case=str) -> list[fits.Column]:
    entries = [REDSHIFTS[t] for t in order]
    return [
        fits.Column("TARGETID", "K", array=order),
        fits.Column("Z", "D", array=[e["Z"] for e in entries]),
        fits.Column("ZERR", "D", array=[e["ZERR"] for e in entries]),
        fits.Column("ZWARN", "K", array=[e["ZWARN"] for e in entries]),
        fits.Column("SPECTYPE", "6A", array=[spectype_case(e["SPECTYPE"]) for e in entries]),
        fits.Column("SUBTYPE", "20A", array=[e["SUBTYPE"] for e in entries]),
        fits.Column("DELTACHI2", "D", array=[120.0] * len(order)),
    ]


def redrock() -> tuple[str, bytes]:
    """redrock-*.fits: REDSHIFTS table (in reverse order, to prove the join is by TARGETID)."""
    redshifts = fits.BinTableHDU.from_columns(_zcat_columns(TARGETS[::-1]), name="REDSHIFTS")
    fibermap = fits.BinTableHDU.from_columns(
        [fits.Column("TARGETID", "K", array=TARGETS)], name="FIBERMAP"
    )
    return "redrock-sv3-dark-26065.fits", _to_bytes([fits.PrimaryHDU(), redshifts, fibermap])


def zcatalog() -> tuple[str, bytes]:
    """zall-like ZCATALOG: lower-case SPECTYPE, and a duplicate non-primary row for one target."""
    order = [TARGETS[0], TARGETS[0], TARGETS[1]]
    columns = _zcat_columns(order, spectype_case=str.lower)
    columns[1] = fits.Column("Z", "D", array=[9.9, REDSHIFTS[TARGETS[0]]["Z"], REDSHIFTS[TARGETS[1]]["Z"]])
    columns.append(fits.Column("ZCAT_PRIMARY", "L", array=[False, True, True]))
    table = fits.BinTableHDU.from_columns(columns, name="ZCATALOG")
    return "zall-pix-iron.fits", _to_bytes([fits.PrimaryHDU(), table])


LAYOUTS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "coadd": coadd,
    "coadd_offset_arms": coadd_offset_arms,
    "redrock": redrock,
    "zcatalog": zcatalog,
}
