"""Checks on a container's structure before any of its data is read.

An upload can come from anyone, so a file is measured before it is opened for
reading: every size it declares (FITS NAXISn x BITPIX, tile-compressed ZNAXISn,
scaled images, HDF5 dataset shapes, .npz member and .npy header sizes) is added
up and compared with :class:`~.source.Limits` first, and container features that
point outside the file (HDF5 external storage, virtual datasets, soft and
external links) are refused. Nothing here allocates what a file merely claims.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ..spectrum import SpectrumError

BLOCK = 2880  # FITS block
CARD = 80


def _too_large(name: str, what: str, n_bytes: float, limits) -> SpectrumError:
    return SpectrumError(
        f"{name}: {what} would need {n_bytes / 2**20:,.0f} MB once decoded, over the "
        f"{limits.max_bytes / 2**20:.0f} MB limit for one file; split the file, or raise the "
        "limit (max_bytes= or SPECTOK_MAX_UPLOAD_MB)"
    )


# -- FITS ---------------------------------------------------------------------------------------


def _int(value: Any, keyword: str, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise SpectrumError(f"{name}: the FITS keyword {keyword} = {value!r} is not a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpectrumError(
            f"{name}: the FITS keyword {keyword} = {str(value)[:20]!r} is not a number; "
            "the header is damaged"
        ) from None
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise SpectrumError(f"{name}: the FITS keyword {keyword} = {value!r} is not a valid size")
    return int(number)


def fits_sizes(get: Callable[[str], Any], name: str) -> tuple[int, int]:
    """(bytes of the data block in the file, bytes once decoded) of one HDU's header.

    ``get(keyword)`` returns a keyword's value or None. Tile-compressed images
    count their uncompressed image (ZNAXISn x ZBITPIX); scaled integer images
    count 8 bytes a pixel, the float64 they may become.
    """
    def axes(prefix: str) -> list[int]:
        n = _int(get(f"{prefix}NAXIS") or 0, f"{prefix}NAXIS", name)
        if n > 999:
            raise SpectrumError(f"{name}: {prefix}NAXIS = {n} is over the FITS maximum of 999")
        return [_int(get(f"{prefix}NAXIS{i}") or 0, f"{prefix}NAXIS{i}", name) for i in range(1, n + 1)]

    bitpix = _bitpix(get("BITPIX"), "BITPIX", name)
    shape = axes("")
    pcount = _int(get("PCOUNT") or 0, "PCOUNT", name)
    gcount = _int(get("GCOUNT") or 1, "GCOUNT", name)
    groups = bool(shape) and shape[0] == 0 and get("GROUPS") is True
    pixels = math.prod(shape[1:] if groups else shape) if shape else 0
    raw = bitpix // 8 * gcount * (pcount + pixels)
    decoded = raw
    if get("ZIMAGE") is True:
        zbitpix = _bitpix(get("ZBITPIX"), "ZBITPIX", name)
        image = math.prod(axes("Z"))
        decoded = raw + image * max(zbitpix // 8, 8 if _scaled(get) else 1)
    elif bitpix in (8, 16, 32, 64) and shape and _scaled(get):
        decoded = pixels * gcount * 8
    return raw, decoded


def _bitpix(value: Any, keyword: str, name: str) -> int:
    """Bits per value (8, 16, 32 or 64); a missing BITPIX counts as 8."""
    if value is None:
        return 8
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise SpectrumError(f"{name}: the FITS keyword {keyword} = {str(value)[:20]!r} is not one "
                            "of 8, 16, 32, 64, -32, -64; the header is damaged")
    bits = abs(int(value)) if math.isfinite(value) else 0
    if bits not in (8, 16, 32, 64):
        raise SpectrumError(f"{name}: the FITS keyword {keyword} = {value!r} is not one of 8, 16, "
                            "32, 64, -32, -64; the header is damaged")
    return bits


def _scaled(get: Callable[[str], Any]) -> bool:
    scale, zero = get("BSCALE"), get("BZERO")
    return (scale is not None and scale != 1) or (zero is not None and zero != 0)


def _card_value(card: bytes) -> Any:
    """The value of a fixed-format card: int, float, bool, str, or None."""
    text = card[10:].decode("ascii", "replace")
    if text.lstrip().startswith("'"):
        return text.strip().strip("'").strip()
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text.replace("D", "E"))
    except ValueError:
        return text or None


def check_fits_bytes(data: bytes, limits, name: str) -> None:
    """Walk the HDU headers in the raw bytes: bound HDUs, header cards and decoded sizes.

    Runs before astropy parses anything, so that 20,000 HDUs or a header of a
    million cards are refused in milliseconds. A damaged structure stops the
    walk; astropy then reports it.
    """
    pos, n_hdus, decoded = 0, 0, 0
    while pos + BLOCK <= len(data):
        head = data[pos : pos + 8]
        if n_hdus and head != b"XTENSION":
            return  # trailing bytes after the last HDU: astropy decides
        n_hdus += 1
        if n_hdus > limits.max_hdus:
            raise SpectrumError(
                f"{name}: the FITS file has more than {limits.max_hdus} HDUs; spectok reads files "
                "of one or a few spectra, so split it"
            )
        values: dict[str, Any] = {}
        n_cards, ended = 0, False
        while not ended:
            if pos + BLOCK > len(data):
                return  # a truncated header: astropy reports it
            block = data[pos : pos + BLOCK]
            pos += BLOCK
            for at in range(0, BLOCK, CARD):
                card = block[at : at + CARD]
                keyword = card[:8].decode("ascii", "replace").strip().upper()
                n_cards += 1
                if keyword == "END":
                    ended = True
                    break
                if card[8:9] == b"=" and keyword not in values:
                    values[keyword] = _card_value(card)
            if n_cards > limits.max_header_cards:
                raise SpectrumError(
                    f"{name}: HDU {n_hdus - 1} has a header of more than "
                    f"{limits.max_header_cards:,} cards; that is no spectrum file spectok reads"
                )
        raw, size = fits_sizes(values.get, name)
        decoded += size
        if decoded > limits.max_bytes:
            raise _too_large(name, f"HDU {n_hdus - 1}", decoded, limits)
        pos += -(-raw // BLOCK) * BLOCK


def check_hdul(hdul, limits, name: str) -> None:
    """The same bounds from astropy's own parse of each header, before any data is touched."""
    decoded = 0
    for index in range(limits.max_hdus + 1):
        try:
            hdu = hdul[index]
        except IndexError:
            return
        if index == limits.max_hdus:
            raise SpectrumError(f"{name}: the FITS file has more than {limits.max_hdus} HDUs; "
                                "split it")
        header = hdu.header
        if len(header) > limits.max_header_cards:
            raise SpectrumError(f"{name}: HDU {index} has {len(header):,} header cards, over "
                                f"{limits.max_header_cards:,}")
        compressed = getattr(hdu, "_header", None)
        _, size = fits_sizes(header.get, name)
        if compressed is not None and compressed is not header:
            size += fits_sizes(compressed.get, name)[1]
        fields = header.get("TFIELDS")
        if fields is not None and _int(fields, "TFIELDS", name) > limits.max_columns:
            raise SpectrumError(f"{name}: HDU {index} has {fields} table columns, over the "
                                f"{limits.max_columns} spectok reads")
        decoded += size
        if decoded > limits.max_bytes:
            raise _too_large(name, f"HDU {index}", decoded, limits)


# -- HDF5 ---------------------------------------------------------------------------------------


def check_hdf5(h5, limits, name: str) -> None:
    """Refuse links, external storage and virtual datasets; bound objects and dataset sizes.

    Walks every link of every group (hard links only, each object once) and looks
    at each dataset's creation properties and declared shape; no data is read.
    """
    import h5py
    from h5py import h5d

    seen: set = set()
    counts = {"objects": 0, "attributes": 0, "bytes": 0}

    def count(what: str, n: int = 1) -> None:
        counts[what] += n
        if counts["objects"] > limits.max_objects or counts["attributes"] > limits.max_objects:
            raise SpectrumError(
                f"{name}: the HDF5 file holds more than {limits.max_objects:,} {what}; "
                "that is no spectrum file spectok reads"
            )

    def visit(group, path: str) -> None:
        for key in group:
            full = f"{path}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
                raise SpectrumError(
                    f"{name}: {full} is {kind}; spectok refuses HDF5 links (they can point "
                    "outside the file). Store the data itself in the file"
                )
            count("objects")  # every link, so that a million links to one object count too
            obj = group[key]
            info = h5py.h5o.get_info(obj.id)
            if info.addr in seen:
                continue
            seen.add(info.addr)
            count("attributes", info.num_attrs)
            if isinstance(obj, h5py.Group):
                visit(obj, full)
            elif isinstance(obj, h5py.Dataset):
                check_dataset(obj, full)

    def check_dataset(dataset, path: str) -> None:
        plist = dataset.id.get_create_plist()
        if plist.get_layout() == h5d.VIRTUAL:
            raise SpectrumError(
                f"{name}: {path} is a virtual dataset (it maps data from other datasets or "
                "files); spectok refuses those. Store the data itself in the file"
            )
        if plist.get_external_count() > 0:
            raise SpectrumError(
                f"{name}: {path} keeps its data in external files; spectok refuses HDF5 "
                "external storage. Store the data itself in the file"
            )
        space = dataset.id.get_space()
        n_points = space.get_simple_extent_npoints() if space.get_simple_extent_type() != 0 else 1
        counts["bytes"] += int(n_points) * max(int(dataset.dtype.itemsize), 1)
        if counts["bytes"] > limits.max_bytes:
            raise _too_large(name, f"its datasets (up to {path})", counts["bytes"], limits)

    visit(h5, "")


# -- NumPy .npz -----------------------------------------------------------------------------------


def _pickled(name: str, member: str) -> SpectrumError:
    return SpectrumError(
        f"{name}: the .npz member {member!r} holds pickled Python objects, which spectok never "
        "loads; save plain numeric arrays instead"
    )


def read_npz(data: bytes, limits, name: str) -> dict[str, np.ndarray]:
    """The arrays of a .npz archive, every size checked from the zip and .npy headers first."""
    import io

    from numpy.lib import format as npy

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise SpectrumError(f"{name}: the .npz archive is corrupt ({err})") from None
    if len(members) > limits.max_objects:
        raise SpectrumError(f"{name}: the .npz archive has {len(members):,} members, over "
                            f"{limits.max_objects:,}")
    total = sum(m.file_size for m in members)
    if total > limits.max_bytes:
        raise _too_large(name, f"its {len(members)} members", total, limits)
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for member in members:
            if not member.filename.endswith(".npy"):
                continue
            key = member.filename[: -len(".npy")]
            try:
                with archive.open(member) as handle:
                    version = npy.read_magic(handle)
                    if version == (1, 0):
                        shape, fortran, dtype = npy.read_array_header_1_0(handle)
                    else:
                        shape, fortran, dtype = npy.read_array_header_2_0(handle)
                    if dtype.hasobject:
                        raise _pickled(name, key)
                    declared = math.prod(shape) * dtype.itemsize
                    if declared > member.file_size:
                        raise SpectrumError(
                            f"{name}: the .npz member {key!r} declares {declared:,} bytes of data "
                            f"but holds {member.file_size:,}; the archive is damaged"
                        )
                    body = handle.read(declared)
                array = np.frombuffer(body, dtype=dtype, count=math.prod(shape))
                arrays[key] = array.reshape(shape, order="F" if fortran else "C").copy()
            except SpectrumError:
                raise
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
                raise SpectrumError(
                    f"{name}: the .npz member {key!r} is damaged or not a NumPy array ({err})"
                ) from None
    return arrays
