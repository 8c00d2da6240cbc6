"""Reading spectra from survey files: ``read_spectra`` and format detection.

Each reader module registers its formats on import (see :mod:`.registry`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..spectrum import SpectrumError

# Importing the reader modules registers their formats.
from . import apogee, desi, gaia_xp, image1d, lamost, libraries, mmu, sdss, table  # noqa: E402,F401,I001
from .registry import FORMATS, Format, describe_formats, formats_for
from .source import Limits, Source, safe_name

__all__ = [
    "FORMATS",
    "Format",
    "Limits",
    "SpectrumList",
    "detect_format",
    "describe_formats",
    "read_spectra",
]


class SpectrumList(list):
    """A list of Spectrum with ``problems``: what was skipped and why.

    Problems are files of a folder that failed, or parts of a file that hold no
    spectrum (empty DESI fibres, rows with every pixel bad). Nothing is dropped
    silently: each skipped item has one line here.
    """

    def __init__(self, spectra=(), problems=()):
        super().__init__(spectra)
        self.problems: list[str] = list(problems)


def detect_format(source: Source) -> Format:
    """The registered format that claims this content (by content, not file name)."""
    kind = source.kind
    if kind == "binary":
        raise SpectrumError(
            f"{source.name}: not a recognised file type (neither FITS, HDF5, NumPy .npz nor "
            f"text). spectok reads:\n{describe_formats()}"
        )
    for fmt in formats_for(kind):
        try:
            if fmt.identify(source):
                return fmt
        except SpectrumError:
            raise
        except MemoryError:  # not "no": the file is too large for this process
            raise SpectrumError(
                f"{source.name}: out of memory while reading; the file is too large"
            ) from None
        except Exception:  # an identifier that trips on odd content just says no
            continue
    what = {"fits": "a FITS file", "hdf5": "an HDF5 file", "npz": "a .npz archive", "text": "a text file"}[kind]
    raise SpectrumError(
        f"{source.name}: {what}, but none of the known spectrum layouts. "
        f"spectok reads:\n{describe_formats()}\n"
        "For a table, name the columns wave/wavelength/lambda/loglam, flux, and error/ivar."
    )


def _read_source(source: Source, format: str | None) -> SpectrumList:
    if format is not None:
        if format not in FORMATS:
            raise SpectrumError(
                f"unknown format {format!r}; choose one of: {', '.join(sorted(FORMATS))}"
            )
        fmt = FORMATS[format]
    else:
        fmt = detect_format(source)
    try:
        spectra = fmt.read(source)
    except SpectrumError as err:
        message = str(err)
        if not message.startswith(source.name):
            message = f"{source.name}: {message}"
        raise SpectrumError(message) from None
    except MemoryError:
        raise SpectrumError(f"{source.name}: out of memory while reading; the file is too large") from None
    except Exception as err:  # never a bare library traceback for a damaged file
        raise SpectrumError(
            f"{source.name}: could not be read as {fmt.name} ({fmt.description}): "
            f"{type(err).__name__}: {err}. The file may be damaged or a variant of the layout "
            "spectok does not know; try format=... to pick another reader"
        ) from None
    for index, spectrum in enumerate(spectra):
        if len(spectrum) > source.limits.max_pixels:
            raise SpectrumError(
                f"{source.name}: spectrum {index} has {len(spectrum):,} pixels, over the "
                f"{source.limits.max_pixels:,} limit; raise it with max_pixels= or SPECTOK_MAX_PIXELS"
            )
        spectrum.meta.setdefault("source_file", os.path.basename(source.name))
        spectrum.meta.setdefault("format", fmt.name)
        spectrum.meta.setdefault("index_in_file", index)
    if not spectra:
        detail = "; ".join(source.problems) if source.problems else "it holds no spectra"
        raise SpectrumError(f"{source.name}: no usable spectrum ({detail})")
    return SpectrumList(spectra, source.problems)


def _read_folder(folder: Path, format: str | None, limits: Limits, options: dict) -> SpectrumList:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SpectrumError(f"{safe_name(str(folder))}: the folder holds no files")
    result = SpectrumList()
    for path in files:
        try:
            source = Source(_read_bytes(path, limits), str(path), limits, dict(options))
            spectra = _read_source(source, format)
        except SpectrumError as err:
            result.problems.append(str(err))
            continue
        result.extend(spectra)
        result.problems.extend(spectra.problems)
    if not result:
        raise SpectrumError(
            f"{safe_name(str(folder))}: no file in the folder could be read:\n  " + "\n  ".join(result.problems)
        )
    return result


def _read_bytes(path: Path, limits: Limits) -> bytes:
    shown = safe_name(str(path))
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SpectrumError(f"{shown}: cannot access the file ({err.strerror})") from None
    if size > limits.max_bytes:
        raise SpectrumError(
            f"{shown}: {size / 2**20:.0f} MB is over the {limits.max_bytes / 2**20:.0f} MB limit for "
            "one file; raise it with max_bytes= or SPECTOK_MAX_UPLOAD_MB"
        )
    try:
        return path.read_bytes()
    except OSError as err:
        raise SpectrumError(f"{shown}: cannot read the file ({err.strerror})") from None


def read_spectra(
    path_or_bytes: str | os.PathLike | bytes | Any,
    format: str | None = None,
    name: str | None = None,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    **options: Any,
) -> SpectrumList:
    """Read every spectrum in a file, a folder, raw bytes, an uploaded file object, or a
    specutils ``Spectrum`` / ``Spectrum1D`` (one spectrum per flux row; see
    :mod:`spectok_core.io.specutils_objects`).

    The format is detected from the content; ``format=`` overrides (see
    ``spectok_core.io.FORMATS``). ``name`` is the original file name when
    bytes are given (used in messages and metadata). Reader options pass
    through, e.g. ``redshift_catalog=`` for DESI coadds.

    Returns a :class:`SpectrumList`; its ``problems`` names anything skipped.
    A folder is read file by file: failures become problems, and only a
    folder where nothing reads raises. Bad input raises :class:`SpectrumError`.
    """
    limits = Limits.from_env(max_bytes, max_pixels)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = Source(bytes(path_or_bytes), name or "<bytes>", limits, options)
        return _read_source(source, format)
    from .specutils_objects import from_specutils, is_specutils_spectrum

    # before the file-object test: specutils classes have a .read (their readers)
    if is_specutils_spectrum(path_or_bytes):  # an in-memory specutils Spectrum / Spectrum1D
        return SpectrumList(from_specutils(path_or_bytes, name=name, max_pixels=max_pixels,
                                           survey=options.get("survey")))
    if hasattr(path_or_bytes, "read"):  # a file object, e.g. Streamlit's UploadedFile
        name = name or getattr(path_or_bytes, "name", None) or "<upload>"
        data = path_or_bytes.read(limits.max_bytes + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
        source = Source(bytes(data), str(name), limits, options)
        return _read_source(source, format)
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise SpectrumError(
            f"read_spectra takes a path, bytes, a file object or a specutils spectrum, not "
            f"{type(path_or_bytes).__name__}"
        )
    path = Path(path_or_bytes).expanduser()
    if path.is_dir():
        return _read_folder(path, format, limits, options)
    if not path.exists():
        raise SpectrumError(f"{safe_name(str(path))}: no such file or folder")
    source = Source(_read_bytes(path, limits), name or str(path), limits, options)
    return _read_source(source, format)
