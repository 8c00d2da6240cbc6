"""One input file, as bytes plus its name, opened lazily in whatever way a reader asks.

Readers never touch paths: they get a :class:`Source`, so uploaded bytes (the
app) and files on disk (the CLI) take the same road. Every open here turns
library exceptions into :class:`SpectrumError` with a message a person can act on.
"""

from __future__ import annotations

import gzip
import io
import os
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


@dataclass(frozen=True)
class Limits:
    """Size limits on input; override per call or with SPECTOK_MAX_UPLOAD_MB / SPECTOK_MAX_PIXELS."""

    max_bytes: int = 200 * 2**20
    max_pixels: int = 2_000_000

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
                    out.write(chunk)
                    self._check_size(out.tell())
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
        """The astropy HDUList, fully loaded (a truncated file fails here, not later)."""
        from astropy.io import fits

        if self.kind != "fits":
            raise SpectrumError(f"{self.name}: not a FITS file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdul = fits.open(io.BytesIO(self.data), memmap=False, lazy_load_hdus=False)
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
        return text

    @cached_property
    def h5(self):
        import h5py

        if self.kind != "hdf5":
            raise SpectrumError(f"{self.name}: not an HDF5 file")
        try:
            return h5py.File(io.BytesIO(self.data), "r")
        except Exception as err:
            raise SpectrumError(
                f"{self.name}: the HDF5 file is truncated or corrupt ({err}); "
                "download it again"
            ) from None

    @cached_property
    def npz(self) -> dict[str, np.ndarray]:
        if self.kind != "npz":
            raise SpectrumError(f"{self.name}: not a NumPy .npz archive")
        try:
            with np.load(io.BytesIO(self.data), allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as err:
            # allow_pickle=False: pickled object arrays are refused, never executed.
            raise SpectrumError(
                f"{self.name}: the .npz archive holds pickled objects, which spectok never "
                f"loads ({err}); save plain numeric arrays instead"
            ) from None
        except Exception as err:
            raise SpectrumError(f"{self.name}: the .npz archive is corrupt ({err})") from None

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
