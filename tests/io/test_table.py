"""Generic tables: column sniffing, units, air/vacuum, sorting, errors, and the bad cases."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import spectok_core as sc
from spectok_core import SpectrumError
from spectok_core.spectrum import air_to_vacuum, vacuum_to_air
from tests.synthetic import table as layouts


def csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def columns_csv(header: str, *columns: np.ndarray, fmt: str = "{:.6f}") -> bytes:
    rows = [",".join(fmt.format(v) for v in values) for values in zip(*columns)]
    return csv([header, *rows])


WAVE, FLUX, ERROR = layouts.truth()


# -- every synthetic layout, from a path and from bytes -----------------------------------------


@pytest.mark.parametrize("layout", sorted(layouts.LAYOUTS))
def test_layout_reads_the_same_from_path_and_bytes(layout, tmp_path):
    name, data = layouts.LAYOUTS[layout]()
    path = tmp_path / name
    path.write_bytes(data)
    from_path, from_bytes = sc.read_spectra(path), sc.read_spectra(data, name=name)
    assert len(from_path) == len(from_bytes) >= 1
    for a, b in zip(from_path, from_bytes):
        assert np.array_equal(a.wave, b.wave) and np.array_equal(a.flux, b.flux)
        assert a.meta["format"] in ("text_table", "fits_table")
        assert all(type(v) in (int, float, str, bool) for v in a.meta.values()), a.meta


def test_csv_with_angstrom_header_round_trips():
    spectrum = sc.read_spectra(layouts.csv_angstrom_header()[1], name="star.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, atol=1e-4)
    np.testing.assert_allclose(spectrum.flux, FLUX, atol=1e-6)
    np.testing.assert_allclose(spectrum.ivar, 1 / ERROR**2, rtol=1e-5)
    assert spectrum.survey == "unknown"
    assert spectrum.meta["wave_medium_assumed"] == "vacuum"
    assert spectrum.meta["flux_unit"] == "1e-17 erg/s/cm2/Angstrom"
    assert "ivar_estimated" not in spectrum.meta


def test_nm_air_comments_give_vacuum_angstrom():
    spectrum = sc.read_spectra(layouts.whitespace_nm_air()[1], name="star.txt")[0]
    # written as air nm with 5 decimals: back to vacuum Å within the rounding and the
    # air->vacuum round trip (~1e-3 Å)
    np.testing.assert_allclose(spectrum.wave, WAVE, atol=2e-3)
    assert spectrum.meta["wave_medium_original"] == "air"
    assert "wave_medium_assumed" not in spectrum.meta
    assert spectrum.survey == "sdss"  # from "# TELESCOP = SDSS 2.5-M"
    np.testing.assert_allclose(spectrum.ivar, 1 / ERROR**2, rtol=1e-4)


def test_ecsv_column_unit_and_keywords():
    spectrum = sc.read_spectra(layouts.ecsv_units()[1], name="star.ecsv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-12)
    assert spectrum.meta["wave_medium_original"] == "vacuum"  # AIRORVAC = 'vac'
    assert spectrum.survey == "desi" and spectrum.meta["object_id"] == "test-star-1"
    assert "micron" in spectrum.meta["wave_unit_from"]


def test_loglam_ivar_and_mask_columns():
    spectrum = sc.read_spectra(layouts.csv_loglam_ivar_mask()[1], name="s.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-7)
    assert np.flatnonzero(spectrum.mask).tolist() == list(range(100, 110))
    assert np.all(spectrum.ivar[100:110] == 0)
    np.testing.assert_allclose(spectrum.ivar[:100], 1 / ERROR[:100] ** 2, rtol=1e-6)


def test_headerless_two_columns_in_micron_get_an_estimated_ivar():
    spectrum = sc.read_spectra(layouts.headerless_two_columns()[1], name="dwarf.dat")[0]
    assert spectrum.wave_range == pytest.approx((6500.0, 25000.0), rel=1e-6)
    assert spectrum.meta["ivar_estimated"] is True
    assert np.all(spectrum.ivar > 0)
    # the scatter is 0.02 on a flux near 1: the estimate should be S/N ~ 50, not 1 or 1e4
    assert 25 < spectrum.median_snr < 100


def test_fits_table_per_pixel_with_tunit_and_instrument():
    spectrum = sc.read_spectra(layouts.fits_table_per_pixel()[1], name="t.fits")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-12)
    assert spectrum.survey == "boss" and spectrum.meta["object_id"] == "boss-star"
    assert spectrum.meta["flux_unit"] == "erg/s/cm2/Angstrom"
    assert spectrum.meta["format"] == "fits_table"


def test_fits_table_per_row_gives_one_spectrum_per_row_with_its_catalogue():
    spectra = sc.read_spectra(layouts.fits_table_per_row()[1], name="rows.fits")
    assert [s.meta["object_id"] for s in spectra] == ["gal-1", "qso-2"]
    assert [s.meta["class"] for s in spectra] == ["GALAXY", "QSO"]
    assert [s.meta["z"] for s in spectra] == [0.1, 1.5]
    np.testing.assert_allclose(spectra[1].flux, layouts.truth(seed=3)[1], rtol=1e-6)


# -- units -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, scale",
    [("wavelength_nm,flux,err", 0.1), ("wave [um],flux,err", 1e-4), ("lambda_A,flux,err", 1.0),
     ("Wavelength (Å),Flux,Sigma", 1.0), ("WAVE [micron],FLUX,ERROR", 1e-4)],
)
def test_units_named_in_the_header(header, scale):
    data = columns_csv(header, WAVE * scale, FLUX, ERROR, fmt="{:.9g}")
    spectrum = sc.read_spectra(data, name="t.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-8)


@pytest.mark.parametrize("scale, unit", [(1.0, "Angstrom"), (0.1, "nm"), (1e-4, "micron")])
def test_unit_from_the_value_range(scale, unit):
    spectrum = sc.read_spectra(columns_csv("wave,flux,err", WAVE * scale, FLUX, ERROR,
                                           fmt="{:.9g}"), name="t.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-8)
    assert unit in spectrum.meta["wave_unit_from"]


def test_ambiguous_range_is_refused_with_what_to_do():
    wave = np.linspace(1200.0, 2800.0, 200)  # Å (UV) or nm (near-IR)?
    data = columns_csv("wave,flux", wave, np.ones(200))
    with pytest.raises(SpectrumError) as info:
        sc.read_spectra(data, name="uv.csv")
    message = str(info.value)
    assert "1200-2800" in message and "wave [Angstrom]" in message and "wave_unit=" in message
    spectrum = sc.read_spectra(data, name="uv.csv", wave_unit="nm")[0]
    assert spectrum.wave_range == pytest.approx((12000.0, 28000.0))


def test_wave_unit_option_overrides_the_header():
    data = columns_csv("wavelength [nm],flux,err", WAVE, FLUX, ERROR)
    spectrum = sc.read_spectra(data, name="t.csv", wave_unit="Angstrom")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-9)
    with pytest.raises(SpectrumError, match="not a wavelength unit"):
        sc.read_spectra(data, name="t.csv", wave_unit="erg/s")


def test_loglam_name_outside_log_range_is_refused():
    data = columns_csv("loglam,flux", WAVE, FLUX)
    with pytest.raises(SpectrumError, match="log10"):
        sc.read_spectra(data, name="t.csv")


# -- air and vacuum -----------------------------------------------------------------------------------


def test_wave_air_column_is_converted_to_vacuum():
    data = columns_csv("wave_air,flux,err", vacuum_to_air(WAVE), FLUX, ERROR, fmt="{:.8f}")
    spectrum = sc.read_spectra(data, name="t.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, atol=1e-6)
    assert spectrum.meta["wave_medium_original"] == "air"


def test_fits_airorvac_keyword_and_wave_medium_option():
    table = fits.BinTableHDU.from_columns([
        fits.Column("wave", "D", unit="Angstrom", array=WAVE),
        fits.Column("flux", "E", array=FLUX),
    ])
    table.header["AIRORVAC"] = "air"
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    spectrum = sc.read_spectra(buffer.getvalue(), name="air.fits")[0]
    np.testing.assert_allclose(spectrum.wave, air_to_vacuum(WAVE))
    as_vacuum = sc.read_spectra(buffer.getvalue(), name="air.fits", wave_medium="vacuum")[0]
    np.testing.assert_allclose(as_vacuum.wave, WAVE)


def test_airmass_comment_does_not_mean_air_wavelengths():
    data = b"# airmass = 1.2\n" + columns_csv("wave,flux", WAVE, FLUX)
    spectrum = sc.read_spectra(data, name="t.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-9)
    assert spectrum.meta["wave_medium_assumed"] == "vacuum"


# -- table quirks ---------------------------------------------------------------------------------------


def test_unsorted_rows_are_sorted_and_said():
    order = np.random.default_rng(0).permutation(WAVE.size)
    data = columns_csv("wave,flux,err", WAVE[order], FLUX[order], ERROR[order])
    spectrum = sc.read_spectra(data, name="t.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-9)
    np.testing.assert_allclose(spectrum.flux, FLUX, atol=1e-6)
    assert "sorted" in spectrum.meta["wave_sorted"]


def test_duplicate_wavelengths_are_refused():
    wave = np.concatenate([WAVE, WAVE[:50]])
    data = columns_csv("wave,flux", wave, np.ones(wave.size))
    with pytest.raises(SpectrumError, match="more than once"):
        sc.read_spectra(data, name="twice.csv")


def test_nan_flux_rows_are_masked_and_rows_without_wavelength_dropped():
    lines = ["wave,flux,err"] + [f"{w:.4f},{f:.6f},{e:.4f}" for w, f, e in zip(WAVE, FLUX, ERROR)]
    lines[11] = f"{WAVE[10]:.4f},nan,0.02"
    lines[21] = f"nan,{FLUX[20]:.6f},0.02"
    spectra = sc.read_spectra(csv(lines), name="holes.csv")
    spectrum = spectra[0]
    assert len(spectrum) == WAVE.size - 1
    assert spectrum.mask[10] and spectrum.ivar[10] == 0 and spectrum.mask.sum() == 1
    assert spectrum.meta["rows_dropped_no_wavelength"] == 1
    assert any("without a wavelength" in p for p in spectra.problems)


def test_unrecognised_columns_name_what_was_found_and_what_is_accepted():
    data = columns_csv("time,counts,background", WAVE, FLUX, ERROR)
    with pytest.raises(SpectrumError) as info:
        sc.read_spectra(data, name="lightcurve.csv")
    message = str(info.value)
    assert "'time'" in message and "'counts'" in message
    assert "wavelength" in message and "loglam" in message and "flux" in message


def test_fits_table_without_spectrum_columns_lists_them():
    table = fits.BinTableHDU.from_columns([fits.Column("RA", "D", array=np.arange(3.0)),
                                           fits.Column("DEC", "D", array=np.arange(3.0))])
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    with pytest.raises(SpectrumError, match="RA, DEC"):
        sc.read_spectra(buffer.getvalue(), name="catalog.fits")


def test_headerless_table_with_many_columns_asks_for_a_header():
    rows = [f"{w:.3f} {f:.4f} 0.1 0.2 0.3" for w, f in zip(WAVE, FLUX)]
    with pytest.raises(SpectrumError, match="2 or 3 columns"):
        sc.read_spectra(csv(rows), name="wide.txt")


def test_header_and_rows_that_disagree():
    with pytest.raises(SpectrumError, match="header names 2 columns"):
        sc.read_spectra(columns_csv("wave,flux", WAVE, FLUX, ERROR), name="t.csv")


def test_comment_header_above_headerless_numbers():
    rows = [f"{w:.4f} {f:.6f} {e:.4f}" for w, f, e in zip(WAVE / 10, FLUX, ERROR)]
    spectrum = sc.read_spectra(csv(["# wave_nm flux sigma", *rows]), name="t.txt")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, atol=1e-3)
    np.testing.assert_allclose(spectrum.ivar, 1 / ERROR**2, rtol=1e-4)


def test_variance_column():
    spectrum = sc.read_spectra(columns_csv("wave,flux,var", WAVE, FLUX, ERROR**2, fmt="{:.8g}"),
                               name="t.csv")[0]
    np.testing.assert_allclose(spectrum.ivar, 1 / ERROR**2, rtol=1e-6)


# -- survey -----------------------------------------------------------------------------------------------


def test_survey_option_and_column():
    data = columns_csv("wave,flux", WAVE, FLUX)
    assert sc.read_spectra(data, name="t.csv", survey="miles")[0].survey == "miles"
    with pytest.raises(SpectrumError, match="not a known survey"):
        sc.read_spectra(data, name="t.csv", survey="hubble")
    lines = ["wave,flux,survey"] + [f"{w:.3f},{f:.4f},LAMOST" for w, f in zip(WAVE, FLUX)]
    assert sc.read_spectra(csv(lines), name="t.csv")[0].survey == "lamost_lrs"


def test_ecsv_written_by_astropy_with_units_on_every_column():
    table = Table({"lam": WAVE / 10, "flux": FLUX, "flux_err": ERROR})
    table["lam"].unit = "nm"
    table["flux"].unit = "erg / (Angstrom s cm2)"
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv")
    spectrum = sc.read_spectra(buffer.getvalue().encode(), name="t.ecsv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, rtol=1e-12)
    assert "erg" in spectrum.meta["flux_unit"]


def test_text_that_is_not_a_table_is_not_claimed():
    with pytest.raises(SpectrumError, match="none of the known spectrum layouts"):
        sc.read_spectra(b"This is a README.\nNothing to see here.\n", name="README.txt")


def test_semicolons_with_decimal_commas():
    rows = [f"{w:.3f};{f:.5f}".replace(".", ",") for w, f in zip(WAVE, FLUX)]
    spectrum = sc.read_spectra(csv(["wave;flux", *rows]), name="eu.csv")[0]
    np.testing.assert_allclose(spectrum.wave, WAVE, atol=1e-3)


def test_a_bad_row_of_a_per_row_fits_table_is_reported():
    n = WAVE.size
    fluxes = np.stack([FLUX, np.full(n, np.nan), FLUX])
    table = fits.BinTableHDU.from_columns([
        fits.Column("OBJID", "K", array=np.array([1, 2, 3])),
        fits.Column("WAVE", f"{n}D", unit="Angstrom", array=np.tile(WAVE, (3, 1))),
        fits.Column("FLUX", f"{n}E", array=fluxes),
    ])
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    spectra = sc.read_spectra(buffer.getvalue(), name="rows.fits")
    assert [s.meta["object_id"] for s in spectra] == ["1", "3"]
    assert len(spectra.problems) == 1 and "row 1" in spectra.problems[0]
