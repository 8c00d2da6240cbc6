"""One input file, as bytes plus its name, opened lazily in whatever way a reader asks.

Readers never touch paths: they get a :class:`Source`, so uploaded bytes (the
app) and files on disk (the CLI) take the same road. Every open here turns
library exceptions into :class:`SpectrumError` with a message a person can act on.
"""

from __future__ import annotations

import gzip
import io
import os
import unicodedata
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError

FITS_MAGIC = b"SIMPLE  ="
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(float(value))
    except ValueError:
        raise SpectrumError(f"environment variable {name}={value!r} is not a number") from None


def safe_name(name: str) -> str:
    """A file name fit for messages: control and bidirectional characters escaped (``\\x1b``)."""
    return "".join(
        ch if ch.isprintable() and unicodedata.category(ch) != "Cf"
        else ch.encode("unicode_escape").decode("ascii")
        for ch in str(name)
    )


@dataclass(frozen=True)
class Limits:
    """Size limits on input; override per call or with SPECTOK_MAX_UPLOAD_MB / SPECTOK_MAX_PIXELS.

    ``max_bytes`` bounds the file and also what it decodes to (gzip, compressed
    or scaled images, HDF5 and .npz arrays), checked from declared sizes before
    anything is allocated. The counts bound the structure: HDUs, header cards,
    table columns, and HDF5 objects, attributes or .npz members.
    """

    max_bytes: int = 200 * 2**20
    max_pixels: int = 2_000_000
    max_hdus: int = 512
    max_header_cards: int = 10_000
    max_columns: int = 1_000
    max_objects: int = 10_000

    @classmethod
    def from_env(cls, max_bytes: int | None = None, max_pixels: int | None = None) -> Limits:
        default = cls()
        return cls(
            max_bytes=max_bytes
            if max_bytes is not None
            else _env_int("SPECTOK_MAX_UPLOAD_MB", default.max_bytes // 2**20) * 2**20,
            max_pixels=max_pixels
            if max_pixels is not None
            else _env_int("SPECTOK_MAX_PIXELS", default.max_pixels),
        )


@dataclass
class Source:
    """Raw bytes of one file plus its name; decompressed when gzipped."""

    data: bytes
    name: str = "<bytes>"
    limits: Limits = field(default_factory=Limits)
    options: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = safe_name(self.name)
        if len(self.data) == 0:
            raise SpectrumError(f"{self.name}: the file is empty (0 bytes)")
        self._check_size(len(self.data))
        if self.data[:2] == GZIP_MAGIC:
            self.data = self._gunzip(self.data)

    def _check_size(self, n_bytes: int) -> None:
        if n_bytes > self.limits.max_bytes:
            raise SpectrumError(
                f"{self.name}: {n_bytes / 2**20:.0f} MB is over the {self.limits.max_bytes / 2**20:.0f} MB "
                "limit for one file; split it, or raise the limit (max_bytes= or SPECTOK_MAX_UPLOAD_MB)"
            )

    def _gunzip(self, data: bytes) -> bytes:
        # Decompress in chunks so that a gzip bomb stops at the size limit.
        out = io.BytesIO()
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                while chunk := stream.read(1 << 20):
                    self._check_size(out.tell() + len(chunk))
                    out.write(chunk)
        except (OSError, EOFError, zlib.error) as err:
            raise SpectrumError(
                f"{self.name}: the gzip stream is truncated or corrupt ({err}); "
                "download the file again"
            ) from None
        if out.tell() == 0:
            raise SpectrumError(f"{self.name}: the gzip file decompresses to nothing")
        return out.getvalue()

    # -- what kind of container is this ---------------------------------------

    @cached_property
    def kind(self) -> str:
        head = self.data[:16]
        if head.startswith(FITS_MAGIC):
            return "fits"
        if head.startswith(HDF5_MAGIC):
            return "hdf5"
        if head.startswith(ZIP_MAGIC):
            return "npz"
        if self.text is not None:
            return "text"
        return "binary"

    @property
    def lower_name(self) -> str:
        return os.path.basename(self.name).lower()

    # -- lazy openers ----------------------------------------------------------

    @cached_property
    def hdul(self):
        """The astropy HDUList, fully loaded (a truncated file fails here, not later).

        Every header is measured first (HDU count, cards, declared and decoded
        sizes; see :mod:`.guard`), so no data block is read that would break the limits.
        """
        from astropy.io import fits

        from .guard import check_fits_bytes, check_hdul

        if self.kind != "fits":
            raise SpectrumError(f"{self.name}: not a FITS file")
        check_fits_bytes(self.data, self.limits, self.name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdul = fits.open(io.BytesIO(self.data), memmap=False, lazy_load_hdus=True)
                check_hdul(hdul, self.limits, self.name)
                # Repair what can be repaired (odd header cards) instead of failing later.
                hdul.verify("silentfix")
                for hdu in hdul:
                    # Touch every data block so truncation is detected now.
                    _ = hdu.data
        except SpectrumError:
            raise
        except Exception as err:  # astropy raises many types for damaged files
            raise SpectrumError(
                f"{self.name}: the FITS file is truncated or corrupt ({type(err).__name__}: {err}); "
                "download it again or check that the transfer finished"
            ) from None
        return hdul

    @cached_property
    def text(self) -> str | None:
        """The content as text, or None when it is binary."""
        sample = self.data[:65536]
        if b"\x00" in sample:
            return None
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = self.data.decode("latin-1")
            except UnicodeDecodeError:
                return None
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text[:65536])
        if printable < 0.95 * min(len(text), 65536):
            return None
        # A text spectrum holds one pixel a line: count the lines before any reader splits them.
        n_lines = max(text.count("\n"), text.count("\r"))
        if n_lines > self.limits.max_pixels + self.limits.max_header_cards:
            raise SpectrumError(
                f"{self.name}: the text has {n_lines:,} lines, one pixel each: over the "
                f"{self.limits.max_pixels:,} limit on the pixels of one spectrum; split it, or "
                "raise the limit with max_pixels= or SPECTOK_MAX_PIXELS"
            )
        return text

    @cached_property
    def h5(self):
        """The open h5py File, its structure checked (no links, external or virtual data)."""
        import h5py

        from .guard import check_hdf5

        if self.kind != "hdf5":
            raise SpectrumError(f"{self.name}: not an HDF5 file")
        try:
            h5 = h5py.File(io.BytesIO(self.data), "r")
        except Exception as err:
            raise SpectrumError(
                f"{self.name}: the HDF5 file is truncated or corrupt ({err}); "
                "download it again"
            ) from None
        try:
            check_hdf5(h5, self.limits, self.name)
        except SpectrumError:
            h5.close()
            raise
        except Exception as err:  # h5py's errors for a damaged object table
            h5.close()
            raise SpectrumError(
                f"{self.name}: the HDF5 file's structure is damaged ({type(err).__name__}: "
                f"{str(err)[:120]}); download it again"
            ) from None
        return h5

    @cached_property
    def npz(self) -> dict[str, np.ndarray]:
        from .guard import read_npz

        if self.kind != "npz":
            raise SpectrumError(f"{self.name}: not a NumPy .npz archive")
        # Sizes come from the zip and .npy headers, checked before any member is inflated;
        # object (pickled) arrays are refused, never executed.
        return read_npz(self.data, self.limits, self.name)

    # -- helpers for readers ---------------------------------------------------

    def report(self, message: str) -> None:
        """Note something skipped in this file (an empty fibre, a failed row)."""
        self.problems.append(message)

    def keep(self, label: str, make: Callable[[], Spectrum]) -> Spectrum | None:
        """Build one spectrum of a multi-spectrum file; report it instead of failing the file."""
        try:
            return make()
        except SpectrumError as err:
            self.report(f"{label}: {err}")
            return None
