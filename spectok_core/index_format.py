"""The index folder's format, shared by the reader (:mod:`.index`) and the builder (:mod:`.index_build`).

Constants of the layout, the metadata columns and how they are tidied, regular grid
segments, and the metadata filters. Neither :mod:`.index` nor :mod:`.index_build`
is imported here, and :mod:`.index_build` does not import :mod:`.index`: the builder
writes the format, the reader reads it, and ``SpectrumIndex.build`` is the one place
the reader calls the builder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .spectrum import SpectrumError

FORMAT_VERSION = 1
DEMO_SIZE = 4000  # about 14.5 MB on disk with binned display copies: the shipped demo index stays under 15 MB
DEMO_DISPLAY_PIXELS = 1500  # the demo's display copies, binned: enough for a plot 1,500 px wide
MISSING_TEXT = ("", "None", "nan", "NaN", "<NA>")  # how a missing text value reads once str()-ed


def missing_text(value: Any) -> bool:
    """Whether a table cell holds no text: None, NaN, or one of MISSING_TEXT."""
    return value is None or (isinstance(value, float) and value != value) or str(value) in MISSING_TEXT


SUBSET_FRACTION = 0.02  # filters keeping fewer rows than this search the subset exactly

METADATA_COLUMNS = (
    "object_id", "survey", "origin", "class", "subclass", "split", "z", "teff", "logg", "feh",
    "alpha_m", "spectral_type", "ra", "dec", "flux_unit",
)
NUMERIC_COLUMNS = ("z", "teff", "logg", "feh", "alpha_m", "ra", "dec")
# Per-spectrum record of the display copy. Its wavelengths are n_segments regular
# segments (one for most surveys, one per arm for multi-arm spectrographs) or, when
# n_segments is 0, an explicit float32 array at wave_offset in display/wave.npy.
ROW_DTYPE = np.dtype([
    ("flux_offset", "<i8"), ("n_pixels", "<i4"), ("mask_offset", "<i8"), ("wave_offset", "<i8"),
    ("segment_offset", "<i8"), ("n_segments", "<i2"), ("scale", "<f4"), ("snr", "<f4"),
])
# One regular piece of a grid: start + step * i on the axis of its kind.
SEGMENT_DTYPE = np.dtype([("grid", "i1"), ("start", "<f8"), ("step", "<f8"), ("n_pixels", "<i4")])
# Grid kinds: linear in λ, in ln λ, or linear in air λ (the libraries, converted by their readers).
LINEAR, LOG, AIR_LINEAR = 0, 1, 2
DATA_FILES = (
    "index.faiss", "embeddings.npy", "metadata.parquet", "coords.npy", "display/rows.npy",
    "display/segments.npy", "display/flux.npy", "display/mask.npy", "display/wave.npy",
)


#: An index built for scale shows neighbours from their source files (or a thumbnail)
#: instead of storing display copies of every spectrum: these are its data files.
SOURCE_DATA_FILES = ("index.faiss", "embeddings.npy", "metadata.parquet", "coords.npy",
                     "thumbnails.npy")
#: The row number, stored in the Parquet metadata of those indexes so that a pushed-down
#: filter can say which rows passed without reading the rest.
INDEX_ROW = "index_row"
THUMB_PIXELS = 64  # a stored thumbnail: flux / scale on a log grid from wave_min to wave_max


# -- filters --------------------------------------------------------------------------------


# -- filters ---------------------------------------------------------------------------------


def select_rows(metadata: pd.DataFrame, where: Mapping[str, Any] | None) -> np.ndarray:
    """Boolean mask of the rows matching ``where``.

    Lists (and sets) mean membership, tuples ``(lo, hi)`` closed ranges (``None``
    leaves an end open; numeric columns only), scalars equality, ``None`` a missing
    value. Text compares case-insensitively, so ``{"class": "qso"}`` finds "QSO".
    """
    mask = np.ones(len(metadata), dtype=bool)
    if not where:
        return mask
    unknown = sorted(set(where) - set(metadata.columns))
    if unknown:
        raise SpectrumError(
            f"unknown filter key(s) {', '.join(map(repr, unknown))}; valid keys: "
            + ", ".join(metadata.columns)
        )
    for key, value in where.items():
        mask &= _match(metadata[key], key, value)
    return mask


def _filter_terms(key: str, value: Any, numeric: bool) -> tuple[bool, tuple]:
    """Check one filter against its column's kind and split it, for the pandas and the
    Parquet paths alike: (True, (low, high)) for a range (bounds as floats or None), or
    (False, (wanted, missing)) for a list of values (floats for a numeric column) and
    whether missing values (None) are wanted too."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise SpectrumError(f"filter {key}={value!r}: a range is a (low, high) pair")
        if not numeric:
            raise SpectrumError(
                f"filter {key}={value!r}: ranges need a numeric column, and {key!r} holds text; "
                "give one value or a list of values"
            )
        low, high = value
        return True, (None if low is None else float(low), None if high is None else float(high))
    wanted = list(value) if isinstance(value, (list, set, frozenset, np.ndarray)) else [value]
    missing = any(v is None for v in wanted)
    wanted = [v for v in wanted if v is not None]
    if numeric:
        try:
            wanted = [float(v) for v in wanted]
        except (TypeError, ValueError):
            raise SpectrumError(f"filter {key}={value!r}: {key!r} is numeric; give numbers") from None
    return False, (wanted, missing)


def _match(column: pd.Series, key: str, value: Any) -> np.ndarray:
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    is_range, (first, second) = _filter_terms(key, value, numeric)
    if is_range:
        values = column.to_numpy(dtype=float, na_value=np.nan)
        keep = np.isfinite(values)
        if first is not None:
            keep &= values >= first
        if second is not None:
            keep &= values <= second
        return keep
    wanted, missing = first, second
    if numeric:
        values = column.to_numpy(dtype=float, na_value=np.nan)
        keep = np.isin(values, np.array(wanted, dtype=float))
        return keep | np.isnan(values) if missing else keep
    targets = {str(v).lower() for v in wanted}
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Compare the few category names, not a million strings.
        lookup = np.array([str(name).lower() in targets for name in column.cat.categories] + [missing])
        return lookup[column.cat.codes.to_numpy()]  # code -1 (missing) picks the last entry
    text = column.astype("string").str.lower()
    keep = text.isin(targets).fillna(False).to_numpy(dtype=bool)
    return keep | column.isna().to_numpy() if missing else keep


def _tidy_metadata(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64, text as categories (fast filters, small Parquet), ids as strings."""
    table = table.copy()
    for name in table.columns:
        if name in NUMERIC_COLUMNS:
            table[name] = pd.to_numeric(table[name], errors="coerce").astype("float64")
        elif name in ("object_id", "shard"):
            table[name] = table[name].astype("string").astype(object)
        elif table[name].dtype == object or pd.api.types.is_string_dtype(table[name]):
            values = table[name].astype("string").replace({"": pd.NA, "None": pd.NA})
            table[name] = values.astype(object).where(values.notna(), None).astype("category")
    return table


# -- grids and models ---------------------------------------------------------------------------


def grid_wave(kind: int, start: float, step: float, n: int) -> np.ndarray:
    """Wavelengths of one regular segment: start + step * i on the axis of its kind."""
    from .spectrum import air_to_vacuum

    axis = start + step * np.arange(n)
    return np.exp(axis) if kind == LOG else air_to_vacuum(axis) if kind == AIR_LINEAR else axis


def segments_wave(segments: np.ndarray) -> np.ndarray:
    """Wavelengths of a grid from its SEGMENT_DTYPE records."""
    return np.concatenate([grid_wave(int(g["grid"]), float(g["start"]), float(g["step"]),
                                     int(g["n_pixels"])) for g in segments])


def _resolve_tokenizer(tokenizer):
    from .model.tokenizer import Tokenizer

    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        return Tokenizer.from_pretrained(tokenizer)
    return tokenizer


# -- search helpers shared by the reader and the build's tuning -------------------------------------


def _as_f32(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block, dtype=np.float32)


def exact_knn(queries: np.ndarray, embeddings: np.ndarray, k: int,
              block: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top k over (memory-mapped) embeddings, a block at a time."""
    import faiss

    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(embeddings), block):
        sims, ids = faiss.knn(queries, _as_f32(embeddings[start : start + block]), min(k, len(embeddings) - start),
                              metric=faiss.METRIC_INNER_PRODUCT)
        merged_s = np.concatenate([best_s, sims], axis=1)
        merged_i = np.concatenate([best_i, ids + start], axis=1)
        top = np.argsort(-merged_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(merged_s, top, 1), np.take_along_axis(merged_i, top, 1)
    return best_s, best_i


def rerank_search(index, embeddings: np.ndarray, queries: np.ndarray, k: int, factor: int,
                  params=None) -> tuple[np.ndarray, np.ndarray]:
    """FAISS candidates (k * factor), re-scored exactly from the stored embeddings."""
    wide = min(int(index.ntotal), k * factor)
    sims, found = index.search(queries, wide, params=params) if params is not None else index.search(queries, wide)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for q in range(len(queries)):
        ids = found[q][found[q] >= 0]
        if not len(ids):
            continue
        order = np.argsort(ids)  # memory-mapped rows read in file order
        exact = _as_f32(embeddings[ids[order]]) @ queries[q]
        top = np.argsort(-exact, kind="stable")[:k]
        out_s[q, : len(top)], out_i[q, : len(top)] = exact[top], ids[order][top]
    return out_s, out_i


def _expression(key: str, value: Any, numeric: bool):
    import pyarrow.compute as pc

    field = pc.field(key)
    is_range, (first, second) = _filter_terms(key, value, numeric)
    if is_range:
        expr = pc.is_finite(field)
        if first is not None:
            expr = expr & (field >= first)
        if second is not None:
            expr = expr & (field <= second)
        return expr
    wanted, missing = first, second
    if numeric:
        expr = field.isin(wanted)
        return (expr | field.is_null() | ~pc.is_finite(field)) if missing else expr
    expr = pc.utf8_lower(field).isin([str(v).lower() for v in wanted])
    return (expr | field.is_null()) if missing else expr


def select_rows_parquet(dataset, where: Mapping[str, Any] | None, n: int) -> np.ndarray:
    """:func:`select_rows` on a Parquet dataset: the predicates are pushed down to the scan.

    Only the filtered columns are read (row groups whose statistics rule them out
    are skipped); the result is the same boolean mask over all ``n`` rows.
    """
    import pyarrow as pa

    mask = np.ones(n, dtype=bool)
    if not where:
        return mask
    schema = dataset.schema
    unknown = sorted(set(where) - set(schema.names))
    if unknown:
        raise SpectrumError(
            f"unknown filter key(s) {', '.join(map(repr, unknown))}; valid keys: " + ", ".join(schema.names))
    expr = None
    for key, value in where.items():
        kind = schema.field(key).type
        numeric = (pa.types.is_integer(kind) or pa.types.is_floating(kind))
        part = _expression(key, value, numeric)
        expr = part if expr is None else expr & part
    # Only rows that pass come back, and only their row numbers (INDEX_ROW).
    table = dataset.to_table(columns=[INDEX_ROW], filter=expr)
    mask[:] = False
    mask[table.column(0).to_numpy()] = True
    return mask
