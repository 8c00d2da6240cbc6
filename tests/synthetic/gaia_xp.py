"""GaiaXPy calibrate() output written from scratch: CSV, ECSV (sampling in the header) and FITS.

The flux is a smooth stellar-like continuum in W m^-2 nm^-1, as GaiaXPy gives
it; one source has no BP spectrum (NaN below 640 nm), as GaiaXPy writes a
source whose BP is missing.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

DEFAULT_SAMPLING = np.arange(336.0, 1021.0, 2.0)  # nm, GaiaXPy's default, 343 samples
ECSV_SAMPLING = np.geomspace(330.0, 1049.9999999999, 361)  # GaiaXPy's suggested log sampling
SOURCE_IDS = (5853498713190525696, 5405570973190252288)


def truth(sampling_nm: np.ndarray, index: int):
    """(flux, error) in W m^-2 nm^-1 of source ``index``; source 1 lacks BP."""
    x = (sampling_nm - 336.0) / 684.0
    flux = (2.0e-15 + 1.5e-14 * x * np.exp(-2.0 * x)) * (1.0 + 0.3 * index)
    error = 0.01 * flux + 1e-18
    if index == 1:
        flux = np.where(sampling_nm < 640.0, np.nan, flux)
        error = np.where(sampling_nm < 640.0, np.nan, error)
    return flux, error


def _tuple(values: np.ndarray) -> str:
    return "(" + ", ".join("nan" if np.isnan(v) else repr(float(v)) for v in values) + ")"


def _list(values: np.ndarray) -> str:
    return "[" + ", ".join("null" if np.isnan(v) else repr(float(v)) for v in values) + "]"


def calibrate_csv() -> tuple[str, bytes]:
    lines = ["source_id,flux,flux_error"]
    for index, source_id in enumerate(SOURCE_IDS):
        flux, error = truth(DEFAULT_SAMPLING, index)
        lines.append(f'{source_id},"{_tuple(flux)}","{_tuple(error)}"')
    return "output_spectra.csv", ("\n".join(lines) + "\n").encode()


def calibrate_ecsv() -> tuple[str, bytes]:
    """The layout of GaiaXPy 2.x: units per column, the sampling under '# meta:'."""
    header = [
        "# %ECSV 1.0", "# ---", "# delimiter: ','", "# datatype:",
        "# -", "#   name: source_id", "#   datatype: int64", "#   description: Source identifier",
        "# -", "#   name: flux", "#   datatype: string", "#   subtype: float64[361]",
        "#   description: Spectrum flux", "#   unit: W.m**-2.nm**-1",
        "# -", "#   name: flux_error", "#   datatype: string", "#   subtype: float64[361]",
        "#   description: Spectrum flux error", "#   unit: W.m**-2.nm**-1",
        "# meta:", f"#   sampling: {list(map(float, ECSV_SAMPLING))}",
    ]
    lines = header + ["source_id,flux,flux_error"]
    for index, source_id in enumerate(SOURCE_IDS):
        flux, error = truth(ECSV_SAMPLING, index)
        lines.append(f'{source_id},"{_list(flux)}","{_list(error)}"')
    return "output_spectra.ecsv", ("\n".join(lines) + "\n").encode()


def calibrate_fits() -> tuple[str, bytes]:
    fluxes, errors = zip(*(truth(DEFAULT_SAMPLING, i) for i in range(len(SOURCE_IDS))))
    n = DEFAULT_SAMPLING.size
    columns = [
        fits.Column("source_id", "K", array=np.array(SOURCE_IDS, dtype=np.int64)),
        fits.Column("flux", f"{n}D", unit="W.m**-2.nm**-1", array=np.stack(fluxes)),
        fits.Column("flux_error", f"{n}E", unit="W.m**-2.nm**-1", array=np.stack(errors)),
    ]
    table = fits.BinTableHDU.from_columns(columns)
    table.header["Sampling"] = str(tuple(float(v) for v in DEFAULT_SAMPLING))
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return "output_spectra.fits", buffer.getvalue()


LAYOUTS = {
    "calibrate_csv": calibrate_csv,
    "calibrate_ecsv": calibrate_ecsv,
    "calibrate_fits": calibrate_fits,
}
