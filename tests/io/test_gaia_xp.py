"""Gaia XP files as GaiaXPy writes them: the real test files, and calibrate() output from scratch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core import SpectrumError
from spectok_core.io import FORMATS, Source, detect_format
from tests.conftest import shared_files
from tests.synthetic import gaia_xp as layouts

REAL = {p.name: p for p in shared_files("gaia_xp")}
SCALE = 1e19  # W m^-2 nm^-1 -> 1e-17 erg s^-1 cm^-2 Å^-1


# -- the real GaiaXPy test files: none holds a sampled spectrum on a wavelength scale --------------


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(n for n in REAL if "CONTINUOUS" in n or "18Sco" in n))
def test_real_continuous_files_are_refused_with_what_to_do(name):
    path = REAL[name]
    assert detect_format(Source(path.read_bytes(), name)).name == "gaiaxpy"
    with pytest.raises(SpectrumError) as info:
        sc.read_spectra(path)
    message = str(info.value)
    assert name in message
    assert "bp_coefficients" in message and "Hermite" in message
    assert "calibrate(" in message and "read that output" in message


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(n for n in REAL if "SampledMeanSpectrum" in n))
def test_real_convert_output_is_refused_because_it_is_pseudo_wavelength(name):
    data = REAL[name].read_bytes()
    # what the file holds: 2 sources x (BP, RP), 481 samples each (GaiaXPy's 0-60 pixel grid)
    assert data.count(b"\n") == 5 and data.count(b",BP,") == 2 and data.count(b",RP,") == 2
    with pytest.raises(SpectrumError, match="pseudo-wavelength") as info:
        sc.read_spectra(data, name=name)
    assert "calibrate()" in str(info.value)


def test_all_four_real_files_were_found_or_skip():
    if not REAL:
        pytest.skip("../shared/data/formats/gaia_xp is absent")
    assert len(REAL) == 4


# -- calibrate() output written from scratch ------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(layouts.LAYOUTS))
def test_layouts_from_path_and_bytes(layout, tmp_path):
    name, data = layouts.LAYOUTS[layout]()
    path = tmp_path / name
    path.write_bytes(data)
    from_path, from_bytes = sc.read_spectra(path), sc.read_spectra(data, name=name)
    assert len(from_path) == len(from_bytes) == 2
    for a, b in zip(from_path, from_bytes):
        assert np.array_equal(a.wave, b.wave) and np.array_equal(a.flux, b.flux)
        assert a.survey == "gaia_xp"
        assert all(type(v) in (int, float, str, bool) for v in a.meta.values()), a.meta


@pytest.mark.parametrize("layout, sampling", [
    ("calibrate_csv", layouts.DEFAULT_SAMPLING),
    ("calibrate_ecsv", layouts.ECSV_SAMPLING),
    ("calibrate_fits", layouts.DEFAULT_SAMPLING),
])
def test_values_round_trip(layout, sampling):
    name, data = layouts.LAYOUTS[layout]()
    spectra = sc.read_spectra(data, name=name)
    assert [s.meta["object_id"] for s in spectra] == [str(i) for i in layouts.SOURCE_IDS]
    for index, spectrum in enumerate(spectra):
        flux, error = layouts.truth(sampling, index)
        np.testing.assert_allclose(spectrum.wave, sampling * 10.0, rtol=1e-12)
        good = np.isfinite(flux)
        assert np.array_equal(spectrum.mask, ~good)
        np.testing.assert_allclose(spectrum.flux[good], flux[good] * SCALE, rtol=1e-6)
        np.testing.assert_allclose(spectrum.ivar[good], 1 / (error[good] * SCALE) ** 2, rtol=1e-5)
        assert spectrum.meta["flux_unit"] == "1e-17 erg/s/cm2/Angstrom"
        assert spectrum.meta["flux_unit_original"] == "W m-2 nm-1"
        assert 50 < spectrum.median_snr < 150  # errors are 1 % of the flux


def test_default_sampling_is_assumed_only_for_343_samples_and_said():
    spectrum = sc.read_spectra(layouts.calibrate_csv()[1], name="o.csv")[0]
    assert spectrum.wave_range == (3360.0, 10200.0)
    assert "336-1020 nm" in spectrum.meta["wave_sampling_assumed"]
    ecsv = sc.read_spectra(layouts.calibrate_ecsv()[1], name="o.ecsv")[0]
    assert "wave_sampling_assumed" not in ecsv.meta
    assert ecsv.wave_range == pytest.approx((3300.0, 10500.0))


def custom_csv(sampling: np.ndarray) -> bytes:
    flux, error = layouts.truth(sampling, 0)
    tup = layouts._tuple
    return f'source_id,flux,flux_error\n42,"{tup(flux)}","{tup(error)}"\n'.encode()


def test_custom_sampling_needs_the_sampling_option():
    sampling = np.linspace(400.0, 900.0, 101)
    data = custom_csv(sampling)
    with pytest.raises(SpectrumError, match="101 samples") as info:
        sc.read_spectra(data, name="custom.csv")
    assert "_sampling.csv" in str(info.value) and "sampling=" in str(info.value)
    spectrum = sc.read_spectra(data, name="custom.csv", sampling=list(sampling))[0]
    np.testing.assert_allclose(spectrum.wave, sampling * 10)
    # the sampling file's own string form works too
    as_text = "(" + ", ".join(map(str, sampling)) + ")"
    assert np.allclose(sc.read_spectra(data, name="c.csv", sampling=as_text)[0].wave, sampling * 10)
    with pytest.raises(SpectrumError, match="flux and 101 error values for 343"):
        sc.read_spectra(data, name="c.csv", sampling=np.arange(336.0, 1021.0, 2.0))


def test_pseudo_wavelength_sampling_is_refused():
    data = custom_csv(np.linspace(400.0, 900.0, 481))
    with pytest.raises(SpectrumError, match="pseudo-wavelength"):
        sc.read_spectra(data, name="c.csv", sampling=np.linspace(0.0, 60.0, 481))


def test_convert_output_written_from_scratch_is_refused():
    flux, error = layouts.truth(np.linspace(0, 60, 481) * 10 + 336, 0)
    tup = layouts._tuple
    data = (f'source_id,xp,flux,flux_error\n1,BP,"{tup(flux)}","{tup(error)}"\n'
            f'1,RP,"{tup(flux)}","{tup(error)}"\n').encode()
    with pytest.raises(SpectrumError, match="convert"):
        sc.read_spectra(data, name="converted.csv")


def test_continuous_file_written_from_scratch_is_refused():
    data = b'source_id,bp_n_parameters,bp_coefficients,rp_coefficients\n1,3,"(1,2,3)","(4,5,6)"\n'
    with pytest.raises(SpectrumError, match="GaiaXPy's basis configuration"):
        sc.read_spectra(data, name="XP_CONTINUOUS_RAW.csv")


def test_sampling_file_alone_says_what_it_is():
    data = b'pos\n"(336.0, 338.0, 340.0)"\n'
    with pytest.raises(SpectrumError, match="sampling file"):
        sc.read_spectra(data, name="output_spectra_sampling.csv")


def test_a_source_without_any_flux_is_reported_and_the_rest_read():
    name, data = layouts.calibrate_csv()
    nan = "(" + ", ".join(["nan"] * 343) + ")"
    data += f'777,"{nan}","{nan}"\n'.encode()
    spectra = sc.read_spectra(data, name=name)
    assert len(spectra) == 2
    assert len(spectra.problems) == 1 and "777" in spectra.problems[0]


def test_damaged_rows_give_clear_errors():
    name, data = layouts.calibrate_csv()
    lines = data.decode().splitlines()
    broken = lines[1].replace("e-", "x-", 1)
    with pytest.raises(SpectrumError, match="no row holds a readable flux array"):
        sc.read_spectra(("\n".join([lines[0], broken]) + "\n").encode(), name=name)
    with pytest.raises(SpectrumError, match="fields for 3 columns"):
        sc.read_spectra((lines[0] + "\n1,2\n").encode(), name=name)


def test_gaiaxpy_fits_convert_output_is_refused():
    n = 481
    table = fits.BinTableHDU.from_columns([
        fits.Column("source_id", "K", array=np.array([1, 1])),
        fits.Column("xp", "2A", array=np.array(["BP", "RP"])),
        fits.Column("flux", f"{n}D", array=np.ones((2, n))),
        fits.Column("flux_error", f"{n}E", array=np.ones((2, n))),
    ])
    table.header["Sampling"] = str(tuple(np.linspace(0, 60, n)))
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    assert detect_format(Source(buffer.getvalue(), "c.fits")).name == "gaiaxpy_fits"
    with pytest.raises(SpectrumError, match="convert"):
        sc.read_spectra(buffer.getvalue(), name="c.fits")


def test_formats_are_registered():
    assert FORMATS["gaiaxpy"].kind == "text" and FORMATS["gaiaxpy_fits"].kind == "fits"
    assert FORMATS["gaiaxpy"].priority < FORMATS["text_table"].priority


def test_a_per_pixel_table_with_a_source_id_column_is_left_to_the_table_reader():
    rows = [f"7,{w:.1f},1.0,0.1" for w in np.linspace(4000, 7000, 100)]
    data = ("source_id,wave,flux,error\n" + "\n".join(rows) + "\n").encode()
    assert detect_format(Source(data, "t.csv")).name == "text_table"
    rows = ["7,1.0,0.1" for _ in range(100)]
    data = ("source_id,flux,error\n" + "\n".join(rows) + "\n").encode()
    assert detect_format(Source(data, "t.csv")).name == "text_table"
