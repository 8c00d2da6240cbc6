"""Crafted files (issue 11): container features and declared sizes used as attacks.

Mutation fuzzing (test_fuzz.py) damages real files at random; these files are
well-formed and hostile. Each is read through :func:`read_isolated`, the worker
the app uses, so that a crash or a memory bomb would end that worker, not the
test run: it runs under a memory limit (RLIMIT_AS, MEMORY_MB beyond what the
imported readers map) and a CPU-time limit, and every case must end in its own
clear SpectrumError well within TIME_S. A reader that expanded a bomb would hit
the memory limit and fail with a different message, so the assertions on the
message are also the assertions on memory.
"""

from __future__ import annotations

import gzip
import io
import time
import zipfile

import h5py
import numpy as np
import pytest

import spectok_core as sc
from spectok_core import Spectrum, SpectrumError
from spectok_core.io.sandbox import read_isolated

MEMORY_MB = 400
TIME_S = 8.0
CPU_S = 10


def refused(data: bytes, name: str, match: str) -> str:
    """Read in a limited worker; it must refuse with a message matching ``match``, in time."""
    start = time.monotonic()
    with pytest.raises(SpectrumError, match=match) as caught:
        read_isolated(data, name, memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    elapsed = time.monotonic() - start
    assert elapsed < TIME_S, f"{name} took {elapsed:.1f} s"
    message = str(caught.value)
    assert "crashed" not in message and "memory" not in message, message
    return message


def h5_bytes(build) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        build(h5)
    return buffer.getvalue()


# -- HDF5 -----------------------------------------------------------------------------------------


def test_hdf5_external_storage_is_refused_and_the_file_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET" * 100)

    def build(h5):
        h5.create_dataset("spectrum_flux", (1, 500), "u1", external=[(str(secret), 0, 500)])
        h5["spectrum_lambda"] = np.linspace(4e3, 9e3, 500)[None]
        h5["spectrum_ivar"] = np.ones((1, 500))

    message = refused(h5_bytes(build), "x.h5", "external storage")
    assert "SECRET" not in message and "/spectrum_flux" in message


def test_hdf5_self_referencing_virtual_dataset_is_refused_not_crashing():
    def build(h5):
        layout = h5py.VirtualLayout((1, 100), "f8")
        layout[:] = h5py.VirtualSource(".", "spectrum_flux", shape=(1, 100))
        h5.create_virtual_dataset("spectrum_flux", layout)
        h5["spectrum_lambda"] = np.linspace(4e3, 9e3, 100)[None]

    refused(h5_bytes(build), "v.h5", "virtual dataset")


@pytest.mark.parametrize("kind", ["soft", "external"])
def test_hdf5_links_are_refused(kind):
    def build(h5):
        h5["data"] = np.ones((1, 100))
        h5["spectrum_lambda"] = np.linspace(4e3, 9e3, 100)[None]
        h5["spectrum_flux"] = h5py.SoftLink("/data") if kind == "soft" else \
            h5py.ExternalLink("/etc/passwd", "/x")

    refused(h5_bytes(build), f"{kind}.h5", f"{kind} link")


def test_hdf5_compressed_bomb_is_refused_from_its_declared_shape():
    def build(h5):  # 2.4 GB declared, one chunk written: a few KB on disk
        wave = h5.create_dataset("spectrum_lambda", (1, 300_000_000), "f8", chunks=(1, 1 << 20),
                                 compression="gzip")
        wave[0, :10] = 1
        h5["spectrum_flux"] = np.ones((1, 10))

    data = h5_bytes(build)
    assert len(data) < 100_000
    refused(data, "bomb.h5", r"2,289 MB once decoded, over the 200 MB limit")


def test_hdf5_object_count_is_bounded():
    def build(h5):
        h5["spectrum_flux"] = np.ones((1, 20))
        h5["spectrum_lambda"] = np.linspace(4e3, 9e3, 20)[None]
        group = h5.create_group("many")
        for i in range(10_001):
            group[f"l{i}"] = h5["spectrum_flux"]  # hard links to one dataset

    refused(h5_bytes(build), "links.h5", "more than 10,000 objects")


# -- NumPy .npz ------------------------------------------------------------------------------------


def npz_member(header_shape, body_chunks: int, chunk: bytes = bytes(1 << 20)) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("wave.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": "<f8", "fortran_order": False, "shape": header_shape})
            for _ in range(body_chunks):
                handle.write(chunk)
        archive.writestr("flux.npy", b"")
    return buffer.getvalue()


def test_npz_bomb_is_refused_from_the_zip_headers():
    data = npz_member((75_000_000,), 600)  # 600 MB of zeros, deflated to < 3 MB
    assert len(data) < 3 * 2**20
    refused(data, "bomb.npz", "600 MB once decoded")


def test_npy_header_declaring_more_than_its_member_holds_is_refused():
    data = npz_member((10**12,), 1)  # claims 8 TB
    refused(data, "liar.npz", "declares 8,000,000,000,000 bytes")


def test_npz_message_says_pickled_only_for_object_arrays():
    buffer = io.BytesIO()
    np.savez(buffer, wave=np.array([object()] * 3, dtype=object))
    refused(buffer.getvalue(), "p.npz", "pickled Python objects")
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("wave.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}  \n")
    message = refused(broken.getvalue(), "broken.npz", "damaged or not a NumPy array")
    assert "pickled" not in message


# -- FITS --------------------------------------------------------------------------------------------


def card(keyword: str, value) -> bytes:
    text = "T" if value is True else repr(value) if isinstance(value, str) else str(value)
    if isinstance(value, str):
        text = "'" + value + "'"
    return f"{keyword:<8}= {text:>20}".ljust(80).encode()


def header(*cards: bytes) -> bytes:
    block = b"".join(cards) + b"END".ljust(80)
    return block + b" " * (-len(block) % 2880)


def test_tile_compressed_fits_is_refused_from_znaxis():
    from astropy.io import fits

    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((64, 64), np.float32))]).writeto(buffer)
    data = buffer.getvalue()
    for axis in (b"ZNAXIS1", b"ZNAXIS2"):  # the same small file, now declaring 20000 x 20000
        at = data.find(axis)
        data = data[:at] + f"{axis.decode():<8}= {20000:>20}".ljust(80).encode() + data[at + 80:]
    refused(data, "tile.fits", r"HDU 1 would need 1,52\d MB once decoded")


def test_scaled_gzipped_fits_is_refused_before_scaling():
    image = header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 2), card("NAXIS1", 5000),
                   card("NAXIS2", 6000), card("BSCALE", 2.0), card("BZERO", 1.0))
    body = bytes(30_000_000 + (-30_000_000 % 2880))
    data = gzip.compress(image + body, compresslevel=1)
    assert len(data) < 2**20
    refused(data, "scaled.fits.gz", "HDU 0 would need 229 MB once decoded")  # 8 bytes a pixel


def test_a_gzipped_fits_of_20000_hdus_is_refused_quickly():
    extension = header(card("XTENSION", "IMAGE"), card("BITPIX", 8), card("NAXIS", 0),
                       card("PCOUNT", 0), card("GCOUNT", 1))
    data = gzip.compress(header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0))
                         + extension * 20_000)
    refused(data, "many.fits.gz", "more than 512 HDUs")


def test_a_fits_header_of_a_million_cards_is_refused():
    comments = b"".join(f"COMMENT {i}".ljust(80).encode() for i in range(36 * 300))
    data = header(card("SIMPLE", True), card("BITPIX", 8), card("NAXIS", 0)).replace(
        b"END".ljust(80), comments + b"END".ljust(80))
    data += b" " * (-len(data) % 2880)
    refused(data, "cards.fits", "more than 10,000 cards")


# -- text tables ------------------------------------------------------------------------------------


ROWS = b"".join(b"%d,%d\n" % (4000 + i, 1 + i % 7) for i in range(50))


@pytest.fixture(autouse=True, scope="module")
def warm_readers():
    """Import the table readers (pandas, astropy units) before anything is timed."""
    sc.read_spectra(b"wave,flux\n" + ROWS, name="warm.csv")


@pytest.mark.parametrize("spaces", [1_000, 20_000])
def test_bracket_in_a_column_name_cannot_backtrack(spaces):
    """Was cubic: 1,000 spaces took 11 s; now both lengths take milliseconds."""
    data = b"wave(" + b" " * spaces + b"x,flux\n" + ROWS
    start = time.perf_counter()
    with pytest.raises(SpectrumError, match="without a recognisable wave column"):
        sc.read_spectra(data, name="a.csv")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("line", [b"# a: " + b" " * 200_000 + b"x",
                                  b"# wavelength: " + b" " * 200_000 + b"x",
                                  b"# " + b"wave" * 50_000])
def test_comment_patterns_cannot_backtrack(line):
    data = line + b"\nwave,flux\n" + ROWS
    start = time.perf_counter()
    spectra = sc.read_spectra(data, name="k.csv")
    assert len(spectra) == 1 and len(spectra[0]) == 50
    assert time.perf_counter() - start < 1.0


def test_row_bomb_is_refused_before_parsing(monkeypatch):
    import pandas as pd

    def never(*args, **kwargs):
        raise AssertionError("pandas was asked to parse a table over the pixel limit")

    monkeypatch.setattr(pd, "read_csv", never)
    data = b"wave,flux\n" + b"".join(b"%d,1\n" % (4000 + i) for i in range(20_000))
    with pytest.raises(SpectrumError, match="over the 10,000 limit on the pixels"):
        sc.read_spectra(data, name="rows.csv", max_pixels=10_000)
    refused_rows = b"wave,flux\n" + b"4000,1\n" * 2_100_000  # the default 2,000,000 limit
    refused(refused_rows, "rows.csv", "over the 2,000,000 limit on the pixels")


def test_too_many_columns_are_refused():
    names = b",".join(b"c%d" % i for i in range(5_000))
    data = b"wave,flux," + names + b"\n" + b"".join(b"%d,1," % (4000 + i) + b",".join([b"1"] * 5_000)
                                                     + b"\n" for i in range(20))
    refused(data, "wide.csv", "5,002 columns, over the 1,000")


def arms_table(first=(4000, 6000, 200), second=(5800, 9000, 300)) -> bytes:
    wave = np.concatenate([np.linspace(*first), np.linspace(*second)])
    flux = np.concatenate([np.full(first[2], 1.0), np.full(second[2], 2.0)])
    flux = flux + 0.01 * np.random.default_rng(0).standard_normal(len(flux))
    return ("wave,flux\n" + "".join(f"{w:.3f},{f:.5f}\n" for w, f in zip(wave, flux))).encode()


def test_overlapping_arms_become_separate_spectra_not_a_zigzag():
    spectra = sc.read_spectra(arms_table(), name="arms.csv")
    assert len(spectra) == 2
    blue, red = spectra
    assert (blue.meta["arm"], red.meta["arm"], blue.meta["n_arms"]) == (0, 1, 2)
    assert blue.wave_range == pytest.approx((4000, 6000)) and len(blue) == 200
    assert red.wave_range == pytest.approx((5800, 9000)) and len(red) == 300
    assert np.allclose(blue.flux, 1.0, atol=0.1) and np.allclose(red.flux, 2.0, atol=0.1)


def test_arms_that_do_not_overlap_are_sorted_into_one_spectrum():
    spectra = sc.read_spectra(arms_table((6100, 9000, 300), (4000, 6000, 200)), name="swap.csv")
    assert len(spectra) == 1 and len(spectra[0]) == 500
    assert "wave_sorted" in spectra[0].meta and "arm" not in spectra[0].meta


def test_absurd_wavelengths_are_refused():
    data = ("wave,flux\n" + "".join(f"{1e300 * (1 + i / 100):g},1\n" for i in range(50))).encode()
    with pytest.raises(SpectrumError, match="outside the physical range"):
        sc.read_spectra(data, name="w.csv", wave_unit="Angstrom")
    with pytest.raises(SpectrumError, match="outside the physical range"):
        Spectrum(np.linspace(1e12, 2e12, 50), np.ones(50), np.ones(50))


def test_control_characters_in_file_names_are_escaped():
    with pytest.raises(SpectrumError) as caught:
        sc.read_spectra(b"\x00\x01garbage", name="evil\x1b[31mred\u202e\n.fits")
    message = str(caught.value)
    assert message.startswith("evil\\x1b[31mred\\u202e\\n.fits: ")
    assert "\x1b" not in message and "\u202e" not in message and "\n" not in message.split(":")[0]


# -- the worker itself ----------------------------------------------------------------------------


def test_worker_gives_back_the_spectra():
    spectra = read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    direct = sc.read_spectra(arms_table(), name="arms.csv")
    assert [len(s) for s in spectra] == [len(s) for s in direct]
    for got, want in zip(spectra, direct):
        assert np.array_equal(got.wave, want.wave) and np.array_equal(got.flux, want.flux)
        assert got.meta == want.meta and got.survey == want.survey


def test_a_crashing_reader_costs_only_the_worker():
    with pytest.raises(SpectrumError, match=r"crashed the reader \(SIGSEGV\).*server is fine"):
        read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S,
                      _crash_test=True)


def test_the_memory_limit_stops_a_bomb_the_readers_would_let_through(monkeypatch):
    """With the size limits lifted, the bomb expands until the worker's RLIMIT_AS stops it."""
    monkeypatch.setenv("SPECTOK_MAX_UPLOAD_MB", "100000")
    data = npz_member((75_000_000,), 600)
    start = time.monotonic()
    with pytest.raises(SpectrumError, match="out of memory|more than the 200 MB"):
        read_isolated(data, "bomb.npz", memory_mb=200, cpu_seconds=CPU_S)
    assert time.monotonic() - start < TIME_S


# -- the spare worker: started ahead of need, used for one request only ---------------------------


def _read_through_spare():
    from spectok_core.io import sandbox

    spare = sandbox._spare
    spectra = read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    return spare, spectra


def test_each_request_takes_the_waiting_spare_and_leaves_a_new_one():
    from spectok_core.io import sandbox

    read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    first = sandbox._spare
    assert first is not None and first.process.poll() is None  # started, waiting on its stdin
    used, spectra = _read_through_spare()
    assert used is first and len(spectra) == len(sc.read_spectra(arms_table(), name="arms.csv"))
    assert first.process.poll() == 0  # it served one request and ended
    assert sandbox._spare is not None and sandbox._spare.process.pid != first.process.pid


def test_a_spare_started_with_other_settings_is_not_used(monkeypatch):
    from spectok_core.io import sandbox

    read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    stale = sandbox._spare
    monkeypatch.setenv("SPECTOK_MAX_PIXELS", "10")  # the limits a worker reads from its environment
    with pytest.raises(SpectrumError, match="pixels"):
        read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    assert stale.process.poll() is not None and stale.process.returncode != 0  # killed, not used


def test_a_dead_spare_is_replaced_and_a_crash_spares_the_next_request():
    from spectok_core.io import sandbox

    read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)
    sandbox._spare.process.kill()
    sandbox._spare.process.wait()
    assert len(read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)) > 0
    with pytest.raises(SpectrumError, match="crashed the reader"):
        read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S, _crash_test=True)
    assert len(read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)) > 0


def test_reads_in_a_page_start_the_spare_only_when_the_page_ends():
    from spectok_core.io import sandbox

    sandbox._close_spare()
    with sandbox.spare_after_page():
        assert len(read_isolated(arms_table(), "arms.csv", memory_mb=MEMORY_MB, cpu_seconds=CPU_S)) > 0
        # No worker imports beside the page's embedding and search ...
        assert sandbox._spare is None
        with sandbox.spare_after_page():  # (nested: only the outer block starts it)
            pass
        assert sandbox._spare is None
    # ... the page end starts it, and the next upload takes it.
    waiting = sandbox._spare
    assert waiting is not None and waiting.process.poll() is None
    used, spectra = _read_through_spare()
    assert used is waiting and len(spectra) > 0
