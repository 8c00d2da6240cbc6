"""Gaia XP files written from scratch.

calibrate() output (CSV, ECSV with the sampling in the header, FITS): a smooth
stellar-like continuum in W m^-2 nm^-1, as GaiaXPy gives it; one source has no BP
spectrum (NaN below 640 nm), as GaiaXPy writes a source whose BP is missing.

convert() output (CSV, one row per source and band, 481 pseudo-wavelength samples):
smooth humps in e-/s; the second source has no BP row.

Continuous spectra (the archive's XP_CONTINUOUS columns): coefficients chosen so that
the spectrum has a closed form. The DR3 bases are B = T psi with T orthogonal, so the
coefficients A T[:, 0] + C T[:, 2] give A psi_0(x) + C psi_2(x), and coefficient errors
S |T[:, 0]| with correlations sign(T_i0) sign(T_j0) give an error of S psi_0(x), where
x is the band's normalised pseudo-wavelength. The second source has no BP.
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


# -- internal spectra -----------------------------------------------------------------------------

CONVERT_U = np.linspace(0.0, 60.0, 481)


def convert_truth(u: np.ndarray, band: str, index: int):
    """(flux, error) in e-/s of convert() output; source 1 has no BP."""
    centre, height = (32.0, 900.0) if band == "bp" else (26.0, 1500.0)
    flux = (height * np.exp(-(((u - centre) / 14.0) ** 2)) + 20.0) * (1.0 + 0.5 * index)
    return flux, 0.01 * flux + 0.5


def convert_csv() -> tuple[str, bytes]:
    lines = ["source_id,xp,flux,flux_error"]
    for index, source_id in enumerate(SOURCE_IDS):
        for band in ("bp", "rp"):
            if index == 1 and band == "bp":
                continue
            flux, error = convert_truth(CONVERT_U, band, index)
            lines.append(f'{source_id},{band.upper()},"{_tuple(flux)}","{_tuple(error)}"')
    return "output_spectra.csv", ("\n".join(lines) + "\n").encode()


#: (A, C, S) of each source and band: flux A psi_0 + C psi_2, error S psi_0.
CONTINUOUS_ABS = {"bp": (4000.0, 900.0, 20.0), "rp": (6000.0, -1500.0, 30.0)}


def continuous_truth(x: np.ndarray, band: str, index: int):
    """(flux, error) at normalised pseudo-wavelength x, from closed-form Hermite functions."""
    a, c, s = CONTINUOUS_ABS[band]
    psi0 = np.pi ** -0.25 * np.exp(-0.5 * x * x)
    psi2 = psi0 * (2.0 * x * x - 1.0) / np.sqrt(2.0)
    scale = 1.0 + index
    return scale * (a * psi0 + c * psi2), s * psi0


def continuous_csv() -> tuple[str, bytes]:
    from spectok_core.io.gaia_xp import XP_BASES, _internal_model

    names = ["source_id"]
    for band in ("bp", "rp"):
        names += [f"{band}_basis_function_id", f"{band}_n_parameters", f"{band}_standard_deviation",
                  f"{band}_coefficients", f"{band}_coefficient_errors",
                  f"{band}_coefficient_correlations"]
    lines = [",".join(names)]
    for index, source_id in enumerate(SOURCE_IDS):
        fields = [str(source_id)]
        for band in ("bp", "rp"):
            if index == 1 and band == "bp":
                fields += [""] * 6
                continue
            transformation = _internal_model()[f"{band}_transformation"]
            a, c, s = CONTINUOUS_ABS[band]
            t0, t2 = transformation[:, 0], transformation[:, 2]
            signs = np.sign(t0)
            rows, cols = np.tril_indices(t0.size, k=-1)
            correlations = (signs[rows] * signs[cols]).astype(int)
            fields += [
                str(XP_BASES[band][0]), str(t0.size), "1.1",
                f'"{_tuple((1.0 + index) * (a * t0 + c * t2))}"',
                f'"{_tuple(s * np.abs(t0))}"',
                '"(' + ",".join(map(str, correlations)) + ')"',
            ]
        lines.append(",".join(fields))
    return "XP_CONTINUOUS_RAW.csv", ("\n".join(lines) + "\n").encode()


LAYOUTS = {
    "calibrate_csv": calibrate_csv,
    "calibrate_ecsv": calibrate_ecsv,
    "calibrate_fits": calibrate_fits,
    "convert_csv": convert_csv,
    "continuous_csv": continuous_csv,
}
