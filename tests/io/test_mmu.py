"""Multimodal Universe HDF5 shards: padding, catalogue columns, bad rows, and our writer's round trip."""

from __future__ import annotations

import io
import os

import h5py
import numpy as np
import pytest

import spectok_core as sc
from spectok_core import Spectrum, SpectrumError
from spectok_core.io.mmu import write_mmu_shard
from tests.synthetic import mmu as layouts


def h5_bytes(fill) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        fill(h5)
    return buffer.getvalue()


def basic(h5, n=2, npix=100, **extra):
    wave = np.tile(np.linspace(4000.0, 5000.0, npix), (n, 1))
    h5["spectrum_lambda"] = wave
    h5["spectrum_flux"] = np.ones((n, npix))
    h5["spectrum_ivar"] = np.full((n, npix), 4.0)
    for name, value in extra.items():
        h5[name] = value


@pytest.mark.parametrize("layout", sorted(layouts.LAYOUTS))
def test_layouts_from_path_and_bytes(layout, tmp_path):
    name, data = layouts.LAYOUTS[layout]()
    path = tmp_path / name
    path.write_bytes(data)
    from_path, from_bytes = sc.read_spectra(path), sc.read_spectra(data, name=name)
    assert len(from_path) == len(from_bytes) >= 2
    for a, b in zip(from_path, from_bytes):
        assert np.array_equal(a.wave, b.wave) and a.meta["format"] == "mmu_hdf5"
        assert all(type(v) in (int, float, str, bool) for v in a.meta.values()), a.meta


def test_sdss_like_shard_drops_padding_and_maps_the_catalogue():
    rows, catalog = layouts.sdss_rows()
    spectra = sc.read_spectra(layouts.mmu_sdss_like()[1], name="shard.hdf5")
    assert [len(s) for s in spectra] == list(layouts.SDSS_LENGTHS)
    for spectrum, (wave, flux, ivar, mask) in zip(spectra, rows):
        np.testing.assert_array_equal(spectrum.wave, wave.astype(np.float64))
        np.testing.assert_array_equal(spectrum.flux[~mask], flux[~mask])
        np.testing.assert_array_equal(spectrum.ivar[~mask], ivar[~mask])
        assert np.array_equal(spectrum.mask, mask) and np.all(spectrum.ivar[mask] == 0)
        assert spectrum.survey == "sdss"
    first, second, third = spectra
    assert first.meta["object_id"] == "299489677444933632"  # int64 ids stay exact strings
    assert [s.meta["class"] for s in spectra] == ["GALAXY", "QSO", "STAR"]
    assert [s.meta["z"] for s in spectra] == [0.1, 1.2, 0.0001]
    assert second.meta["subclass"] == "BROADLINE" and third.meta["zwarning"] == 4
    assert first.meta["ra"] == 10.5 and first.meta["dec"] == -1.0 and first.meta["z_err"] == 1e-4
    assert first.meta["plate"] == 266
    assert "spectrum_lsf_sigma" not in first.meta


def test_desi_shard_with_only_lambda_min_max_gets_its_linear_grid():
    spectra = sc.read_spectra(layouts.mmu_desi_minmax()[1], name="desi.hdf5")
    lo, hi, n = layouts.DESI_GRID
    for spectrum in spectra:
        assert len(spectrum) == n and spectrum.wave_range == (lo, hi)
        assert np.allclose(np.diff(spectrum.wave), 0.8, atol=1e-6)
        assert spectrum.survey == "desi"  # from the "DESI EDR SV3" file attribute
    assert [s.meta["class"] for s in spectra] == ["GALAXY", "QSO"]
    assert spectra[0].meta["object_id"] == "39627745452427717"


def test_zero_padding_and_edge_padding_are_both_dropped():
    def fill(h5):
        wave = np.zeros((2, 120))
        wave[0, :100] = np.linspace(4000, 5000, 100)
        wave[1, :] = np.concatenate([np.linspace(4000, 5000, 110), np.full(10, 5000.0)])
        h5["spectrum_lambda"] = wave
        h5["spectrum_flux"] = np.ones((2, 120))
        ivar = np.full((2, 120), 9.0)
        ivar[1, 110:] = 0
        h5["spectrum_ivar"] = ivar
        mask = np.zeros((2, 120), dtype=bool)
        mask[1, 110:] = True
        h5["spectrum_mask"] = mask

    spectra = sc.read_spectra(h5_bytes(fill), name="pad.hdf5")
    assert [len(s) for s in spectra] == [100, 110]
    assert not spectra[1].mask.any()


def test_a_bad_row_is_reported_and_the_rest_read():
    def fill(h5):
        basic(h5, n=3, object_id=np.array([b"a", b"b", b"c"]))
        h5["spectrum_ivar"][1] = 0.0

    spectra = sc.read_spectra(h5_bytes(fill), name="bad-row.hdf5")
    assert [s.meta["object_id"] for s in spectra] == ["a", "c"]
    assert len(spectra.problems) == 1 and "object_id b" in spectra.problems[0]
    assert "every pixel is bad" in spectra.problems[0]


def test_error_column_bitmask_and_missing_ivar():
    def fill(h5):
        basic(h5)
        del h5["spectrum_ivar"]
        h5["spectrum_flux_error"] = np.full((2, 100), 0.5)
        bits = np.zeros((2, 100), dtype=np.int32)
        bits[:, 5] = 1 << 0  # BADPIX: bad
        bits[:, 6] = 1 << 13  # SIG_TELLURIC: a warning, still usable
        h5["spectrum_bitmask"] = bits

    spectrum = sc.read_spectra(h5_bytes(fill), name="apogee.hdf5", survey="apogee")[0]
    assert spectrum.survey == "apogee"
    assert np.flatnonzero(spectrum.mask).tolist() == [5]
    assert spectrum.ivar[0] == pytest.approx(4.0)

    def no_ivar(h5):
        basic(h5)
        del h5["spectrum_ivar"]
        h5["spectrum_flux"][...] = 1.0 + np.random.default_rng(0).normal(0, 0.01, (2, 100))

    estimated = sc.read_spectra(h5_bytes(no_ivar), name="noivar.hdf5")[0]
    assert estimated.meta["ivar_estimated"] is True and estimated.survey == "unknown"


def test_survey_from_a_file_attribute_and_the_option():
    def fill(h5):
        basic(h5)
        h5.attrs["survey"] = "LAMOST MRS"

    assert sc.read_spectra(h5_bytes(fill), name="s.hdf5")[0].survey == "lamost_mrs"
    with pytest.raises(SpectrumError, match="not a known survey key"):
        sc.read_spectra(h5_bytes(fill), name="s.hdf5", survey="euclid")


@pytest.mark.parametrize("fill, fragment", [
    (lambda h5: h5.create_dataset("spectrum_flux", data=np.ones((2, 10))), "none of the known"),
    (lambda h5: (basic(h5), h5.__delitem__("spectrum_ivar"),
                 h5.create_dataset("spectrum_ivar", data=np.ones((2, 99)))), "shape"),
    (lambda h5: basic(h5, spectrum_mask=np.zeros((3, 100), bool)), "spectrum_flux has"),
])
def test_malformed_shards_give_clear_errors(fill, fragment):
    with pytest.raises(SpectrumError, match=fragment):
        sc.read_spectra(h5_bytes(fill), name="broken.hdf5")


def test_shape_claims_beyond_the_file_are_refused():
    def fill(h5):
        basic(h5)
        del h5["spectrum_flux"]
        h5.create_dataset("spectrum_flux", shape=(100_000, 100), dtype="f4", chunks=(1, 100))

    with pytest.raises(SpectrumError, match="damaged"):
        sc.read_spectra(h5_bytes(fill), name="huge.hdf5")


def test_wave_unit_attribute_overrides_angstrom():
    def fill(h5):
        basic(h5)
        h5["spectrum_lambda"][...] = h5["spectrum_lambda"][()] / 10
        h5["spectrum_lambda"].attrs["wave_unit"] = "nm"

    assert sc.read_spectra(h5_bytes(fill), name="nm.hdf5")[0].wave_range == (4000.0, 5000.0)


# -- our writer ----------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    spectra = layouts.spectok_spectra()
    path = write_mmu_shard(tmp_path / "corpus" / "shard-000.hdf5", spectra)
    assert sorted(os.listdir(path.parent)) == ["shard-000.hdf5"]  # no temporary left behind
    back = sc.read_spectra(path)
    assert len(back) == len(spectra)
    for original, read in zip(spectra, back):
        np.testing.assert_array_equal(read.wave, original.wave)  # float64 kept exactly
        np.testing.assert_array_equal(read.flux, original.flux)
        np.testing.assert_array_equal(read.ivar, original.ivar)
        np.testing.assert_array_equal(read.mask, original.mask)
        assert read.survey == original.survey
        expected = {("origin_" + k if k in ("source_file", "index_in_file") else k): v
                    for k, v in original.meta.items()}
        got = {k: v for k, v in read.meta.items() if k not in ("source_file", "format",
                                                                  "index_in_file")}
        assert got == expected
        assert all(type(got[k]) is type(expected[k]) for k in expected)  # int stays int, bool bool
    assert back[0].meta["source_file"] == "shard-000.hdf5"
    with h5py.File(path) as h5:
        assert h5["spectrum_lambda"].shape == (3, 700)
        assert np.all(h5["spectrum_lambda"][0, 500:] == 0) and np.all(h5["spectrum_mask"][0, 500:])
        assert h5.attrs["writer"] == "spectok"


def test_writer_replaces_atomically_and_leaves_the_old_shard_on_failure(tmp_path):
    path = tmp_path / "shard.hdf5"
    spectra = layouts.spectok_spectra()
    write_mmu_shard(path, spectra[:1])
    before = path.read_bytes()
    with pytest.raises(SpectrumError, match="not a Spectrum"):
        write_mmu_shard(path, [spectra[0], "not a spectrum"])

    class Exploding(dict):
        def get(self, key, default=None):
            raise RuntimeError("disk full")

    broken = spectra[1].copy()
    broken.meta = Exploding(broken.meta)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mmu_shard(path, [spectra[0], broken])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["shard.hdf5"]
    write_mmu_shard(path, spectra)
    assert len(sc.read_spectra(path)) == 3
    with pytest.raises(SpectrumError, match="at least one"):
        write_mmu_shard(tmp_path / "empty.hdf5", [])


def test_writer_output_is_deterministic(tmp_path):
    spectra = layouts.spectok_spectra()
    a = write_mmu_shard(tmp_path / "a.hdf5", spectra).read_bytes()
    b = write_mmu_shard(tmp_path / "b.hdf5", spectra).read_bytes()
    assert a == b


def test_foreign_columns_are_mapped_but_ours_pass_through(tmp_path):
    def fill(h5):
        basic(h5, TEFF=np.array([5000.0, -9999.0]), FE_H=np.array([0.1, 0.2]),
              SOME_FLAG=np.array([1, 2]))

    spectra = sc.read_spectra(h5_bytes(fill), name="apogee.hdf5")
    assert spectra[0].meta["teff"] == 5000.0 and spectra[0].meta["feh"] == 0.1
    assert "teff" not in spectra[1].meta  # -9999 means unknown
    assert not any(k.lower() == "some_flag" for k in spectra[0].meta)
    wave = np.linspace(4000, 5000, 50)
    ours = Spectrum(wave, np.ones(50), np.ones(50), None, "unknown", {"SOME_FLAG": 3})
    back = sc.read_spectra(write_mmu_shard(tmp_path / "ours.hdf5", [ours]))[0]
    assert back.meta["SOME_FLAG"] == 3 and back.survey == "unknown"
