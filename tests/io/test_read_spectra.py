"""read_spectra as a whole: detection, limits, folders, bad input of every kind."""

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core import SpectrumError


def csv_bytes(n=200, unit="Angstrom"):
    wave = np.linspace(4000.0, 7000.0, n)
    flux = 1.0 + 0.1 * np.sin(wave / 50.0)
    lines = [f"wavelength [{unit}],flux,error"]
    lines += [f"{w:.3f},{f:.5f},0.01" for w, f in zip(wave, flux)]
    return ("\n".join(lines) + "\n").encode()


def test_bytes_with_name_and_path_agree(tmp_path):
    data = csv_bytes()
    path = tmp_path / "star.csv"
    path.write_bytes(data)
    from_path = sc.read_spectra(path)
    from_bytes = sc.read_spectra(data, name="star.csv")
    assert len(from_path) == len(from_bytes) == 1
    assert np.array_equal(from_path[0].wave, from_bytes[0].wave)
    assert from_bytes[0].meta["source_file"] == "star.csv"
    assert from_bytes[0].meta["format"] == from_path[0].meta["format"]


def test_file_object_like_an_upload():
    upload = io.BytesIO(csv_bytes())
    upload.name = "upload.csv"
    spectra = sc.read_spectra(upload)
    assert spectra[0].meta["source_file"] == "upload.csv"


def test_detection_uses_content_not_name():
    spectra = sc.read_spectra(csv_bytes(), name="misleading.fits")
    assert len(spectra) == 1 and spectra[0].wave[0] == pytest.approx(4000.0)


def test_gzipped_file_is_read():
    spectra = sc.read_spectra(gzip.compress(csv_bytes()), name="star.csv.gz")
    assert len(spectra[0]) == 200


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (bytes(range(256)) * 40, "not a recognised file type"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
        (b"\x89HDF\r\n\x1a\nnot really", "HDF5"),
    ],
)
def test_bad_bytes_give_clear_errors(data, fragment):
    with pytest.raises(SpectrumError, match=fragment):
        sc.read_spectra(data, name="bad.bin")


def test_fits_of_no_known_layout_lists_formats():
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(buf)
    with pytest.raises(SpectrumError, match="none of the known spectrum layouts") as info:
        sc.read_spectra(buf.getvalue(), name="image.fits")
    assert "sdss" in str(info.value).lower()


def test_truncated_fits_is_reported_as_truncated():
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros(5000, dtype=np.float32)).writeto(buf)
    with pytest.raises(SpectrumError, match="truncated or corrupt|none of the known"):
        sc.read_spectra(buf.getvalue()[:4000], name="cut.fits")


def test_size_limits(tmp_path, monkeypatch):
    data = csv_bytes(n=500)
    with pytest.raises(SpectrumError, match="over the 0 MB limit|limit for one file"):
        sc.read_spectra(data, name="big.csv", max_bytes=1000)
    with pytest.raises(SpectrumError, match="over the 100 limit"):
        sc.read_spectra(data, name="long.csv", max_pixels=100)
    monkeypatch.setenv("SPECTOK_MAX_PIXELS", "100")
    with pytest.raises(SpectrumError, match="SPECTOK_MAX_PIXELS"):
        sc.read_spectra(data, name="long.csv")
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    with pytest.raises(SpectrumError, match="limit for"):
        sc.read_spectra(path, max_bytes=1000)


def test_gzip_bomb_stops_at_limit():
    bomb = gzip.compress(b"0" * (3 * 2**20))
    with pytest.raises(SpectrumError, match="limit"):
        sc.read_spectra(bomb, name="bomb.csv.gz", max_bytes=2**20)


def test_folder_reports_per_file_errors_without_stopping(tmp_path):
    (tmp_path / "a.csv").write_bytes(csv_bytes())
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b"\x00" * 50)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.csv").write_bytes(csv_bytes(n=300))
    spectra = sc.read_spectra(tmp_path)
    assert sorted(len(s) for s in spectra) == [200, 300]
    assert len(spectra.problems) == 2
    joined = "\n".join(spectra.problems)
    assert "broken.fits" in joined and "empty.txt" in joined


def test_folder_where_nothing_reads_raises_with_every_file(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00\x01" * 100)
    (tmp_path / "y.txt").write_bytes(b"")
    with pytest.raises(SpectrumError) as info:
        sc.read_spectra(tmp_path)
    assert "x.bin" in str(info.value) and "y.txt" in str(info.value)


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(SpectrumError, match="no such file"):
        sc.read_spectra(tmp_path / "nope.fits")
    with pytest.raises(SpectrumError, match="unknown format"):
        sc.read_spectra(csv_bytes(), format="hubble_x1d")
    with pytest.raises(SpectrumError, match="takes a path"):
        sc.read_spectra(12345)


def test_every_registered_format_has_description_and_kind():
    assert len(sc.FORMATS) >= 10
    for fmt in sc.FORMATS.values():
        assert fmt.kind in {"fits", "text", "hdf5", "npz"}
        assert fmt.description
