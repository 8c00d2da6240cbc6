"""Generic tables written from scratch: CSV, whitespace text, ECSV and FITS binary tables.

Every layout holds the same kind of spectrum (a smooth continuum with an Hα
absorption line and seeded noise) so the tests can compare what was read with
:func:`truth`.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.table import Table

N_PIXELS = 400


def truth(n: int = N_PIXELS, lo: float = 4000.0, hi: float = 8000.0, seed: int = 1):
    """(vacuum wave Å, flux, 1-sigma error): the spectrum every layout stores."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(lo, hi, n)
    flux = 1.0 + 0.2 * (wave - lo) / (hi - lo) - 0.5 * np.exp(-0.5 * ((wave - 6564.6) / 8.0) ** 2)
    error = np.full(n, 0.02)
    flux = flux + rng.normal(0.0, 0.02, n)
    return wave, flux, error


def csv_angstrom_header() -> tuple[str, bytes]:
    wave, flux, error = truth()
    lines = ["wavelength [Angstrom],flux [1e-17 erg/s/cm2/Angstrom],error"]
    lines += [f"{w:.4f},{f:.6f},{e:.6f}" for w, f, e in zip(wave, flux, error)]
    return "star.csv", ("\n".join(lines) + "\n").encode()


def whitespace_nm_air() -> tuple[str, bytes]:
    """Headerless 3 columns; the unit and the medium are in the comments."""
    from spectok_core.spectrum import vacuum_to_air

    wave, flux, error = truth()
    lines = ["# spectrum of a test star", "# wavelength (nm), air wavelengths", "# TELESCOP = SDSS 2.5-M"]
    lines += [f"{w / 10:.5f}  {f:.6f}  {e:.6f}" for w, f, e in zip(vacuum_to_air(wave), flux, error)]
    return "star.txt", ("\n".join(lines) + "\n").encode()


def ecsv_units() -> tuple[str, bytes]:
    """ECSV with a micron unit on the column, an AIRORVAC keyword and a SURVEY keyword."""
    wave, flux, error = truth()
    table = Table({"WAVE": wave / 1e4, "FLUX": flux, "SIGMA": error})
    table["WAVE"].unit = "micron"
    table.meta.update({"AIRORVAC": "vac", "SURVEY": "DESI", "OBJECT": "test-star-1"})
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    return "star.ecsv", buffer.getvalue().encode()


def csv_loglam_ivar_mask() -> tuple[str, bytes]:
    """SDSS-like columns: loglam, flux, ivar, and_mask (non-zero = bad)."""
    wave, flux, error = truth()
    mask = np.zeros(wave.size, dtype=int)
    mask[100:110] = 4
    lines = ["loglam,flux,ivar,and_mask"]
    lines += [f"{np.log10(w):.8f},{f:.6f},{1 / e**2:.4f},{m}" for w, f, e, m in
              zip(wave, flux, error, mask)]
    return "sdss_like.csv", ("\n".join(lines) + "\n").encode()


def headerless_two_columns() -> tuple[str, bytes]:
    """Two numbers per line in µm, told apart by their range alone."""
    wave, flux, _ = truth(lo=6500.0, hi=25000.0)
    lines = [f"{w / 1e4:.6f} {f:.6f}" for w, f in zip(wave, flux)]
    return "dwarf.dat", ("\n".join(lines) + "\n").encode()


def fits_table_per_pixel() -> tuple[str, bytes]:
    wave, flux, error = truth()
    columns = [
        fits.Column("WAVELENGTH", "D", unit="nm", array=wave / 10),
        fits.Column("FLUX", "E", unit="erg/s/cm2/Angstrom", array=flux),
        fits.Column("ERR", "E", array=error),
    ]
    table = fits.BinTableHDU.from_columns(columns)
    primary = fits.PrimaryHDU()
    primary.header["INSTRUME"] = "BOSS"
    primary.header["OBJECT"] = "boss-star"
    buffer = io.BytesIO()
    fits.HDUList([primary, table]).writeto(buffer)
    return "table.fits", buffer.getvalue()


def fits_table_per_row() -> tuple[str, bytes]:
    """Array columns: one spectrum per row, with per-row catalogue columns."""
    rows = [truth(seed=seed) for seed in (2, 3)]
    waves = np.stack([r[0] for r in rows])
    fluxes = np.stack([r[1] for r in rows])
    errors = np.stack([r[2] for r in rows])
    n = waves.shape[1]
    columns = [
        fits.Column("OBJECT_ID", "12A", array=np.array(["gal-1", "qso-2"])),
        fits.Column("Z", "E", array=np.array([0.1, 1.5])),
        fits.Column("CLASS", "6A", array=np.array(["galaxy", "qso"])),
        fits.Column("lambda", f"{n}D", unit="Angstrom", array=waves),
        fits.Column("flux", f"{n}E", array=fluxes),
        fits.Column("uncertainty", f"{n}E", array=errors),
    ]
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(buffer)
    return "rows.fits", buffer.getvalue()


LAYOUTS = {
    "csv_angstrom_header": csv_angstrom_header,
    "whitespace_nm_air": whitespace_nm_air,
    "ecsv_units": ecsv_units,
    "csv_loglam_ivar_mask": csv_loglam_ivar_mask,
    "headerless_two_columns": headerless_two_columns,
    "fits_table_per_pixel": fits_table_per_pixel,
    "fits_table_per_row": fits_table_per_row,
}
