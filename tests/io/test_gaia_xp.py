"""Gaia XP files as GaiaXPy writes them: the real test files, and each layout from scratch."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core import SpectrumError
from spectok_core.io import FORMATS, Source, detect_format
from spectok_core.io.gaia_xp import (
    JOIN_NM,
    XP_BASES,
    _internal_model,
    hermite_functions,
    pwl_to_nm,
)
from tests.conftest import shared_files
from tests.synthetic import gaia_xp as layouts

REAL = {p.name: p for p in shared_files("gaia_xp")}
SCALE = 1e19  # W m^-2 nm^-1 -> 1e-17 erg s^-1 cm^-2 Å^-1


# -- the real GaiaXPy test files: continuous spectra and convert() output, internally calibrated ---

N_SOURCES = {
    "gaiaxpy_tests_18Sco-XP-spectra.csv": 1,
    "gaiaxpy_tests_SampledMeanSpectrum.csv": 2,
    "gaiaxpy_tests_XP_CONTINUOUS_RAW.csv": 2,
    "gaiaxpy_tests_XP_CONTINUOUS_RAW_with_missing_BP.csv": 3,
}
SCO18 = "gaiaxpy_tests_18Sco-XP-spectra.csv"
MISSING_BP_SOURCE = "5405570973190252288"


def real(name: str):
    if name not in REAL:
        pytest.skip(f"../shared/data/formats/gaia_xp/{name} is absent")
    return REAL[name]


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(N_SOURCES))
def test_real_files_load_as_internal_bp_rp_spectra(name):
    path = real(name)
    assert detect_format(Source(path.read_bytes(), name)).name == "gaiaxpy"
    spectra = sc.read_spectra(path)
    assert len(spectra) == N_SOURCES[name] and not spectra.problems
    ids = [line.split(",", 1)[0] for line in path.read_text().splitlines()[1:]]
    assert [s.meta["object_id"] for s in spectra] == list(dict.fromkeys(ids))
    for spectrum in spectra:
        # BP from 330 nm, RP to 1020 nm (GaiaXPy's band ranges), on each band's own samples
        lo, hi = spectrum.wave_range
        assert 3300.0 <= lo < 3310.0 and 10180.0 < hi <= 10200.0
        assert np.all(np.isfinite(spectrum.flux)) and spectrum.survey == "gaia_xp_internal"
        assert spectrum.meta["xp_calibration"] == "internal"
        assert "not flux-calibrated" in spectrum.meta["flux_unit"]
        assert spectrum.meta["source_id"] == spectrum.meta["object_id"]
        bp = spectrum.wave < 6390.0
        assert 250 < bp.sum() < 400 and 250 < (~bp).sum() < 400  # 481 or 600 samples per band
        if spectrum.meta["object_id"] == MISSING_BP_SOURCE:
            assert spectrum.meta["xp_bands"] == "RP"
            assert np.array_equal(spectrum.mask, bp)
            assert 5 < spectrum.median_snr < 40  # a faint source
        else:
            assert spectrum.meta["xp_bands"] == "BP+RP" and not spectrum.mask.any()
            assert 100 < spectrum.median_snr < 1000


@pytest.mark.shared
def test_real_convert_output_is_what_our_conversion_of_the_continuous_file_gives():
    """GaiaXPy's own convert() of the same two sources on linspace(0, 60, 481): our Hermite
    evaluation, dispersion and join reproduce it (errors were written as float32)."""
    converted = sc.read_spectra(real("gaiaxpy_tests_SampledMeanSpectrum.csv"))
    ours = sc.read_spectra(real("gaiaxpy_tests_XP_CONTINUOUS_RAW.csv"),
                           sampling=np.linspace(0.0, 60.0, 481))
    assert [s.meta["object_id"] for s in ours] == [s.meta["object_id"] for s in converted]
    for a, b in zip(ours, converted):
        np.testing.assert_array_equal(a.wave, b.wave)
        np.testing.assert_allclose(a.flux, b.flux, rtol=1e-6, atol=1e-6 * np.abs(b.flux).max())
        np.testing.assert_allclose(a.ivar, b.ivar, rtol=1e-5)
    assert "assumed" not in str(ours[0].meta) and "481" in converted[0].meta["wave_sampling_assumed"]


@pytest.mark.shared
def test_real_18sco_a_solar_twin_looks_like_one():
    spectrum = sc.read_spectra(real(SCO18))[0]
    nm, flux = spectrum.wave / 10.0, spectrum.flux.astype(np.float64)
    assert spectrum.meta.get("xp_basis_assumed") is True  # the file has no basis_function_id
    bp, rp = nm < JOIN_NM, nm >= JOIN_NM
    # e-/s per pixel: BP peaks near its red end (nm per pixel grows from ~3 to ~23 there), RP
    # near the middle of its response.
    assert 590.0 < nm[np.argmax(flux)] < JOIN_NM
    assert 700.0 < nm[rp][np.argmax(flux[rp])] < 850.0
    # Per nm (dividing out only the dispersion), BP peaks where a G2 star's photons do, ~500 nm.
    u = np.linspace(5.0, 60.0, 5501)  # inside the dispersion table
    bp_nm = pwl_to_nm("bp", u)
    pixels_per_nm = np.interp(nm[bp], bp_nm[::-1], np.abs(np.gradient(u, bp_nm))[::-1])
    assert 460.0 < nm[bp][np.argmax(flux[bp] * pixels_per_nm)] < 560.0
    # The 400 nm break (Ca II H&K, Balmer lines): far less flux below 390 nm than above 420 nm.
    assert np.median(flux[(nm > 360) & (nm < 390)]) < 0.35 * np.median(flux[(nm > 420) & (nm < 450)])
    # The join is a real jump: internal units per pixel differ between BP (~23 nm per pixel at
    # 639 nm, falling response) and RP (~6 nm per pixel, rising response); RP/BP ~ 0.41.
    ratio = flux[rp][0] / flux[bp][-1]
    assert 0.3 < ratio < 0.55
    assert np.all(np.abs(np.diff(flux[bp])) < 0.05 * flux[bp].max())  # smooth within a band


def test_all_four_real_files_were_found_or_skip():
    if not REAL:
        pytest.skip("../shared/data/formats/gaia_xp is absent")
    assert sorted(REAL) == sorted(N_SOURCES)


# -- internal calibration: the GaiaXPy numbers and our Hermite functions ------------------------------


def test_hermite_functions_are_orthonormal_and_match_closed_forms():
    x = np.linspace(-20.0, 20.0, 40001)
    psi = hermite_functions(55, x)
    gram = psi @ psi.T * (x[1] - x[0])
    np.testing.assert_allclose(gram, np.eye(55), atol=1e-9)
    g = np.pi ** -0.25 * np.exp(-x * x / 2)
    np.testing.assert_allclose(psi[1], g * np.sqrt(2) * x, atol=1e-14)
    np.testing.assert_allclose(psi[3], g * (2 * x**3 - 3 * x) / np.sqrt(3), atol=1e-14)


def test_the_shipped_gaiaxpy_numbers():
    model = _internal_model()
    assert "GaiaXPy 2.1.5" in str(model["provenance"]) and "BSD-3-Clause" in str(model["provenance"])
    for band in ("bp", "rp"):
        t = model[f"{band}_transformation"]
        assert t.shape == (55, 55)
        np.testing.assert_allclose(t @ t.T, np.eye(55), atol=1e-12)  # an orthogonal rotation
    assert model["bp_transformation"][0, 0] == 0.2723165276219164  # the XML's first value
    # rows of GaiaXPy's TabulatedDispersionFunction-DR3-v375wiv142r_20200610.csv
    np.testing.assert_allclose(pwl_to_nm("bp", np.array([62.52577, 51.10820, 15.01077])),
                               [300.0, 330.0, 639.0], atol=1e-9)
    np.testing.assert_allclose(pwl_to_nm("rp", np.array([0.05838, 13.10827, 48.86102, 53.80292])),
                               [568.0, 639.0, 1020.0, 1100.0], atol=1e-9)


# -- convert() output and continuous spectra written from scratch -----------------------------------


def band_parts(u: np.ndarray):
    """{band: (u of the kept samples, in wavelength order)}, by the documented rule."""
    parts = {}
    for band, keep in (("bp", lambda w: (w >= 330) & (w < JOIN_NM)),
                       ("rp", lambda w: (w >= JOIN_NM) & (w <= 1020))):
        nm = pwl_to_nm(band, u)
        inside = keep(nm)
        parts[band] = u[inside][np.argsort(nm[inside])]
    return parts


def test_convert_output_round_trips():
    name, data = layouts.convert_csv()
    spectra = sc.read_spectra(data, name=name)
    assert [s.meta["object_id"] for s in spectra] == [str(i) for i in layouts.SOURCE_IDS]
    parts = band_parts(layouts.CONVERT_U)
    for index, spectrum in enumerate(spectra):
        n_bp = parts["bp"].size
        assert spectrum.wave.size == n_bp + parts["rp"].size
        np.testing.assert_allclose(spectrum.wave[:n_bp], pwl_to_nm("bp", parts["bp"]) * 10)
        assert np.all(np.diff(spectrum.wave) > 0) and spectrum.wave[n_bp - 1] < 6390 <= spectrum.wave[n_bp]
        for band, pixels in (("bp", slice(0, n_bp)), ("rp", slice(n_bp, None))):
            flux, error = layouts.convert_truth(parts[band], band, index)
            if index == 1 and band == "bp":  # no BP row: masked
                assert spectrum.mask[pixels].all()
                continue
            assert not spectrum.mask[pixels].any()
            np.testing.assert_allclose(spectrum.flux[pixels], flux, rtol=1e-6)
            np.testing.assert_allclose(spectrum.ivar[pixels], 1 / error**2, rtol=1e-5)
        assert spectrum.meta["xp_bands"] == ("BP+RP", "RP")[index]
        assert spectrum.meta["xp_join_nm"] == JOIN_NM
        assert "481 samples" in spectrum.meta["wave_sampling_assumed"]


def test_continuous_spectra_give_the_closed_form_hermite_spectrum():
    name, data = layouts.continuous_csv()
    spectra = sc.read_spectra(data, name=name)
    assert [s.meta["object_id"] for s in spectra] == [str(i) for i in layouts.SOURCE_IDS]
    parts = band_parts(np.linspace(0.0, 60.0, 600))  # convert()'s default grid
    for index, spectrum in enumerate(spectra):
        assert "600 samples" in spectrum.meta["xp_sampling"]
        assert "wave_sampling_assumed" not in spectrum.meta and "xp_basis_assumed" not in spectrum.meta
        start = 0
        for band in ("bp", "rp"):
            u = parts[band]
            pixels = slice(start, start + u.size)
            start += u.size
            if index == 1 and band == "bp":
                assert spectrum.mask[pixels].all()
                continue
            _, _, (lo, hi), (norm_lo, norm_hi) = XP_BASES[band]
            x = norm_lo + (u - lo) * (norm_hi - norm_lo) / (hi - lo)
            flux, error = layouts.continuous_truth(x, band, index)
            # Far out in the wings (|x| > 4.5) the closed-form error is ~1e-9 of the terms summed
            # for it and can round to 0, which masks the pixel; real errors never are so small.
            sure = np.abs(x) < 4.5
            good = ~spectrum.mask[pixels]
            assert good[sure].all() and good.sum() > 0.95 * good.size
            np.testing.assert_allclose(spectrum.flux[pixels][good], flux[good], rtol=1e-6,
                                       atol=1e-9 * flux.max())
            np.testing.assert_allclose(spectrum.ivar[pixels][sure], 1 / error[sure] ** 2, rtol=1e-5)
        assert start == spectrum.wave.size


def test_sampling_option_for_internal_spectra_is_pseudo_wavelength():
    name, data = layouts.continuous_csv()
    u = np.linspace(10.0, 50.0, 201)
    spectrum = sc.read_spectra(data, name=name, sampling=list(u))[0]
    parts = band_parts(u)
    assert spectrum.wave.size == parts["bp"].size + parts["rp"].size
    assert spectrum.meta["xp_sampling"] == "the sampling option (pseudo-wavelength)"
    with pytest.raises(SpectrumError, match="pseudo-wavelength"):
        sc.read_spectra(data, name=name, sampling=list(np.linspace(336.0, 1020.0, 343)))


def test_convert_output_of_unknown_length_needs_the_sampling():
    flux, error = layouts.convert_truth(np.linspace(0.0, 60.0, 123), "rp", 0)
    data = f'source_id,xp,flux,flux_error\n1,RP,"{layouts._tuple(flux)}","{layouts._tuple(error)}"\n'
    with pytest.raises(SpectrumError, match="123 samples") as info:
        sc.read_spectra(data.encode(), name="c.csv")
    assert "sampling=" in str(info.value)
    spectrum = sc.read_spectra(data.encode(), name="c.csv", sampling=np.linspace(0.0, 60.0, 123))[0]
    assert spectrum.meta["xp_bands"] == "RP" and spectrum.mask[spectrum.wave < 6390].all()
    with pytest.raises(SpectrumError, match="flux and 123 error values for 481"):
        sc.read_spectra(data.encode(), name="c.csv", sampling=np.linspace(0.0, 60.0, 481))


def test_bad_internal_inputs_say_what_is_wrong():
    def continuous(**change):
        name, data = layouts.continuous_csv()
        lines = data.decode().splitlines()
        names = lines[0].split(",")
        row = next(csv.reader([lines[1]]))
        for key, value in change.items():
            row[names.index(key)] = value
        text = lines[0] + "\n" + ",".join(f'"{v}"' for v in row) + "\n"
        return sc.read_spectra(text.encode(), name=name)

    with pytest.raises(SpectrumError, match="basis set 99"):
        continuous(bp_basis_function_id="99")
    with pytest.raises(SpectrumError, match="3 BP coefficients; Gaia DR3 has 55"):
        continuous(bp_coefficients="(1, 2, 3)")
    with pytest.raises(SpectrumError, match="2 coefficient correlations for 55"):
        continuous(rp_coefficient_correlations="(0.1, 0.2)")
    with pytest.raises(SpectrumError, match="neither a BP nor an RP"):
        continuous(bp_coefficients="", rp_coefficients="")
    name, data = layouts.convert_csv()
    with pytest.raises(SpectrumError, match="'G'"):
        sc.read_spectra(data.replace(b",BP,", b",G,", 1), name=name)
    twice = data.replace(b",RP,", b",BP,", 1)
    with pytest.raises(SpectrumError, match="two BP rows"):
        sc.read_spectra(twice, name=name)


def test_continuous_file_with_too_few_coefficients_is_refused():
    data = b'source_id,bp_n_parameters,bp_coefficients,rp_coefficients\n1,3,"(1,2,3)","(4,5,6)"\n'
    with pytest.raises(SpectrumError, match="3 BP coefficients"):
        sc.read_spectra(data, name="XP_CONTINUOUS_RAW.csv")


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
        internal = a.meta.get("xp_calibration") == "internal"
        assert a.survey == ("gaia_xp_internal" if internal else "gaia_xp")
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


def test_gaiaxpy_fits_convert_output_reads_with_the_header_sampling():
    n = 481
    table = fits.BinTableHDU.from_columns([
        fits.Column("source_id", "K", array=np.array([1, 1])),
        fits.Column("xp", "2A", array=np.array(["BP", "RP"])),
        fits.Column("flux", f"{n}D", array=np.full((2, n), 5.0)),
        fits.Column("flux_error", f"{n}E", array=np.full((2, n), 0.5)),
    ])
    table.header["Sampling"] = str(tuple(float(v) for v in np.linspace(0, 60, n)))
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    assert detect_format(Source(buffer.getvalue(), "c.fits")).name == "gaiaxpy_fits"
    spectrum, = sc.read_spectra(buffer.getvalue(), name="c.fits")
    assert spectrum.meta["object_id"] == "1" and spectrum.meta["xp_bands"] == "BP+RP"
    assert spectrum.meta["xp_sampling"] == "the file header (pseudo-wavelength)"
    assert np.all(spectrum.flux == 5.0) and np.allclose(spectrum.ivar, 4.0)
    assert 3300 < spectrum.wave_range[0] < 3310 and 10180 < spectrum.wave_range[1] <= 10200


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
