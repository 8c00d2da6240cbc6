"""Checking an index folder before it is trusted: manifest fields, file hashes, array headers.

An index can come from anyone (a download, a shared disk), so :meth:`SpectrumIndex.load
<spectok_core.index.SpectrumIndex.load>` checks the manifest field by field, then every
file against the sha256 the build recorded, then the array headers and the display
rows' offsets against the lengths of the files they point into, and that the embeddings
are finite. Hashing a large index at every start would be slow: above HASH_AT_LOAD
bytes ``load`` checks sizes, headers and offsets only, and ``spectok index verify``
(:func:`verify`) does the full check, hashes and finiteness included.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .data.fetch import sha256_of
from .spectrum import SpectrumError

#: Indexes up to this many bytes are hashed in full at every load (the demo: 14 MB, ~30 ms).
HASH_AT_LOAD = 256 * 2**20
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_SEGMENTS = 16
MAX_PIXELS = 2_000_000


def _hint(path: Path) -> str:
    return (f"rebuild it with `spectok index build --corpus CORPUS --out {path}` "
            "(add --model MODEL_DIR to use other weights)")


def file_records(folder: Path, names) -> dict[str, dict[str, Any]]:
    """The manifest's ``files``: each file's size and sha256."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
            for name in names}


def record_hashes(folder: str | os.PathLike) -> dict:
    """Rewrite ``manifest.json`` of an index folder with sizes and hashes of its files as they are.

    For an index of an older spectok whose manifest listed sizes only; the build writes
    hashes itself. It vouches for the files as they are now, so only run it on a folder
    you trust.
    """
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = file_records(folder, list(manifest["files"]))
    tmp = folder / f".manifest.json.{os.getpid()}.part"
    tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    os.replace(tmp, folder / "manifest.json")
    return manifest


def check_manifest(path: Path, manifest: Any, data_files, manifest_path: Path) -> None:
    """Every field load relies on, with its type and range; a SpectrumError naming the field."""
    def bad(field: str, why: str) -> SpectrumError:
        return SpectrumError(f"{manifest_path}: field {field!r} {why}; the manifest is damaged or "
                             f"not from spectok: {_hint(path)}")

    if not isinstance(manifest, dict):
        raise SpectrumError(f"{manifest_path} is not a JSON object; {_hint(path)}")
    for field, kind in (("n", int), ("dimension", int)):
        value = manifest.get(field)
        if not isinstance(value, kind) or isinstance(value, bool) or value < 1:
            raise bad(field, f"must be a positive whole number, not {value!r}")
    if manifest["dimension"] > 65536:
        raise bad("dimension", f"is {manifest['dimension']}, beyond any spectok model")
    for field in ("weights_hash", "factory", "metric"):
        if not isinstance(manifest.get(field), str):
            raise bad(field, "must be a string")
    if not isinstance(manifest.get("map"), dict) or manifest["map"].get("method") not in ("umap", "pca"):
        raise bad("map", "must be an object whose method is 'umap' or 'pca'")
    if manifest["map"]["method"] == "umap":
        for key in ("a", "b"):
            value = manifest["map"].get(key)
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                raise bad(f"map.{key}", "must be a finite number")
    params = manifest.get("search_params", {})
    if not isinstance(params, dict) or any(
            not isinstance(params.get(k, 1), int) or params.get(k, 1) < 1 for k in ("efSearch", "nprobe")):
        raise bad("search_params", "must be an object with positive whole efSearch / nprobe")
    rerank = params.get("rerank", 0)
    if not isinstance(rerank, int) or isinstance(rerank, bool) or not 0 <= rerank <= 1024:
        raise bad("search_params.rerank", "must be a whole number from 0 to 1024")
    files = manifest.get("files")
    allowed = set(data_files) | {"map.npy"}  # the data files of the manifest's display mode
    if not isinstance(files, dict) or not set(data_files) <= set(files) or not set(files) <= allowed:
        raise bad("files", f"must be an object naming exactly its data files ({', '.join(data_files)})")
    for name, record in files.items():
        if not isinstance(record, dict) or not isinstance(record.get("bytes"), int) \
                or record["bytes"] < 0 or not HEX64.fullmatch(str(record.get("sha256", ""))):
            raise bad(f"files.{name}", "must be {\"bytes\": size, \"sha256\": 64 hex digits} "
                      "(an index from an older spectok records sizes only)")
    if manifest["map"]["method"] == "pca" and "map.npy" not in files:
        raise bad("files", "lacks map.npy, which a PCA map needs")


def check_files(path: Path, manifest: dict, full: bool | None = None) -> bool:
    """Sizes always; sha256 too when ``full`` (default: when the index is at most HASH_AT_LOAD).

    Returns whether the hashes were checked.
    """
    files = manifest["files"]
    for name, record in files.items():
        file = path / name
        if not file.is_file():
            raise SpectrumError(f"index {path} is missing {name}; {_hint(path)}")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise SpectrumError(f"index file {file} has {size} bytes, the manifest says "
                                f"{record['bytes']}: it is truncated or damaged; {_hint(path)}")
    if full is None:
        full = sum(r["bytes"] for r in files.values()) <= HASH_AT_LOAD
    if full:
        for name, record in files.items():
            if sha256_of(path / name) != record["sha256"]:
                raise SpectrumError(
                    f"index file {path / name} does not match the sha256 in the manifest: it was "
                    f"changed or damaged after the build, so the index is not trusted; {_hint(path)}")
    return full


def _expect(path: Path, name: str, array: np.ndarray, dtype, shape: tuple) -> None:
    ok = array.dtype == np.dtype(dtype) and len(array.shape) == len(shape) and all(
        want is None or got == want for got, want in zip(array.shape, shape))
    if not ok:
        raise SpectrumError(
            f"index file {path / name} holds {array.dtype} {array.shape}, not "
            f"{np.dtype(dtype)} {tuple('any' if s is None else s for s in shape)}; {_hint(path)}")


def check_arrays(index, finite: bool | None = None) -> None:
    """Array headers, display-row offsets within their files, and finite embeddings.

    ``finite`` reads every embedding (default: for indexes of at most HASH_AT_LOAD bytes).
    """
    from .index import ROW_DTYPE, SEGMENT_DTYPE

    path, n, dim = index.path, index.manifest["n"], index.manifest["dimension"]
    copies = index.manifest.get("display", "copies") == "copies"
    dtype = index.manifest.get("embeddings_dtype", "float32")
    if dtype not in ("float32", "float16"):
        raise SpectrumError(f"{path / 'manifest.json'}: field 'embeddings_dtype' must be float32 or "
                            f"float16, not {dtype!r}; {_hint(path)}")
    _expect(path, "embeddings.npy", index._embeddings, np.dtype(dtype), (n, dim))
    _expect(path, "coords.npy", index._coords, np.float32, (n, 2))
    if index._map is not None:
        _expect(path, "map.npy", index._map, np.float32, (3, dim))
    if index._index.d != dim:
        raise SpectrumError(f"index file {path / 'index.faiss'} holds {index._index.d}-dimensional "
                            f"vectors, the manifest says {dim}; {_hint(path)}")
    if not copies:
        from .index_format import THUMB_PIXELS

        _expect(path, "thumbnails.npy", index._thumbs, np.float16, (n, THUMB_PIXELS))
        _check_finite(index, finite)
        return
    _expect(path, "display/rows.npy", index._rows, ROW_DTYPE, (n,))
    _expect(path, "display/flux.npy", index._flux, np.float16, (None,))
    _expect(path, "display/mask.npy", index._mask, np.uint8, (None,))
    _expect(path, "display/wave.npy", index._wave, np.float32, (None,))
    _expect(path, "display/segments.npy", index._segments, SEGMENT_DTYPE, (None,))
    rows = index._rows
    pixels = rows["n_pixels"].astype(np.int64)
    n_seg = rows["n_segments"].astype(np.int64)
    explicit = n_seg == 0
    problems = {
        "a pixel count out of range": (pixels < 1) | (pixels > MAX_PIXELS),
        "flux beyond display/flux.npy": (rows["flux_offset"] < 0)
        | (rows["flux_offset"] + pixels > len(index._flux)),
        "a mask beyond display/mask.npy": (rows["mask_offset"] < 0)
        | (rows["mask_offset"] + (pixels + 7) // 8 > len(index._mask)),
        "segments beyond display/segments.npy": (n_seg < 0) | (n_seg > MAX_SEGMENTS)
        | (rows["segment_offset"] < 0) | (rows["segment_offset"] + n_seg > len(index._segments)),
        "wavelengths beyond display/wave.npy": explicit & ((rows["wave_offset"] < 0)
                                                           | (rows["wave_offset"] + pixels > len(index._wave))),
    }
    segment_pixels = index._segments["n_pixels"].astype(np.int64)
    if np.any((segment_pixels < 1) | (segment_pixels > MAX_PIXELS)):
        raise SpectrumError(f"index file {path / 'display/segments.npy'} holds a segment with "
                            f"a pixel count out of range; {_hint(path)}")
    if not problems["segments beyond display/segments.npy"].any():
        ends = np.concatenate([[0], np.cumsum(segment_pixels)])
        start = rows["segment_offset"].astype(np.int64)
        problems["segments that do not add up to its pixels"] = ~explicit & (
            ends[np.clip(start + n_seg, 0, len(segment_pixels))] - ends[np.clip(start, 0, len(segment_pixels))]
            != pixels)
    for what, wrong in problems.items():
        if np.any(wrong):
            row = int(np.argmax(wrong))
            raise SpectrumError(f"index file {path / 'display/rows.npy'}: row {row} points to {what} "
                                f"({int(np.count_nonzero(wrong))} rows do); {_hint(path)}")
    _check_finite(index, finite)


def _check_finite(index, finite: bool | None) -> None:
    path, n = index.path, index.manifest["n"]
    if finite is None:
        finite = sum(r["bytes"] for r in index.manifest["files"].values()) <= HASH_AT_LOAD
    if finite:
        for start in range(0, n, 65536):
            if not np.all(np.isfinite(index._embeddings[start : start + 65536])):
                raise SpectrumError(f"index file {path / 'embeddings.npy'} holds NaN or infinite "
                                    f"embeddings; {_hint(path)}")
        if not np.all(np.isfinite(index._coords)):
            raise SpectrumError(f"index file {path / 'coords.npy'} holds NaN or infinite map "
                                f"coordinates; {_hint(path)}")


def verify(path: str | os.PathLike | None = None) -> dict:
    """The full check of an index folder, however large: hashes, headers, offsets, finiteness."""
    from .index import SpectrumIndex

    index = SpectrumIndex.load(path, tokenizer=False, verify=True)
    return {"path": str(index.path), "n": len(index), "files": len(index.manifest["files"]),
            "bytes": sum(r["bytes"] for r in index.manifest["files"].values())}
