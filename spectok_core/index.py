"""Precomputed embeddings on disk: FAISS search, metadata, a 2-D map and display copies.

An index folder holds everything the app and ``spectok search`` need without the
corpus (which may be gigabytes, or on another machine)::

    manifest.json        format version, model id + weights hash, corpus hash, counts,
                         metric, dimension, FAISS factory, map settings, file sizes
    index.faiss          FAISS index over L2-normalised embeddings (inner product)
    embeddings.npy       (N, D) float32, the same vectors (exact filtered search, embedding(row))
    metadata.parquet     one row per indexed spectrum: labels, survey, origin, split, S/N, source
    coords.npy           (N, 2) float32 map coordinates (UMAP; PCA when UMAP is switched off)
    map.npy              PCA maps only: mean and the two components, for exact placement
    display/rows.npy     per spectrum: offsets into the files below, flux scale, S/N
    display/segments.npy regular grid segments (kind, start, step, n): one per arm or chip
    display/flux.npy     every spectrum's flux / scale as float16, concatenated (memory-mapped)
    display/mask.npy     bad-pixel masks, bit-packed, one byte-aligned run per spectrum
    display/wave.npy     float32 wavelengths of the irregular grids only (SpeX prism, ...)

Nothing here is a pickle: the index can come from anyone, so it is checked before use
(:mod:`spectok_core.index_check`: manifest fields, sha256 of every file, array headers,
display offsets, finite embeddings). This module reads index
folders (search, filters, display copies, placing new spectra on the map);
:mod:`spectok_core.index_build` writes them, resumably and atomically.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .index_check import check_arrays, check_files, check_manifest
from .spectrum import Spectrum, SpectrumError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INDEX = REPO_ROOT / "indexes" / "demo"
FORMAT_VERSION = 1
DEMO_SIZE = 1300  # about 14 MB on disk: the shipped demo index stays under 15 MB
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


def _rebuild_hint(path: Path | str) -> str:
    return (f"rebuild it with `spectok index build --corpus CORPUS --out {path}` "
            "(add --model MODEL_DIR to use other weights)")


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


def _match(column: pd.Series, key: str, value: Any) -> np.ndarray:
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise SpectrumError(f"filter {key}={value!r}: a range is a (low, high) pair")
        if not numeric:
            raise SpectrumError(
                f"filter {key}={value!r}: ranges need a numeric column, and {key!r} holds text; "
                "give one value or a list of values"
            )
        values = column.to_numpy(dtype=float, na_value=np.nan)
        keep = np.isfinite(values)
        low, high = value
        if low is not None:
            keep &= values >= float(low)
        if high is not None:
            keep &= values <= float(high)
        return keep
    wanted = list(value) if isinstance(value, (list, set, frozenset, np.ndarray)) else [value]
    missing = any(v is None for v in wanted)
    wanted = [v for v in wanted if v is not None]
    if numeric:
        values = column.to_numpy(dtype=float, na_value=np.nan)
        try:
            targets = np.array([float(v) for v in wanted], dtype=float)
        except (TypeError, ValueError):
            raise SpectrumError(f"filter {key}={value!r}: {key!r} is numeric; give numbers") from None
        keep = np.isin(values, targets)
        return keep | np.isnan(values) if missing else keep
    targets = {str(v).lower() for v in wanted}
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Compare the few category names, not a million strings.
        lookup = np.array([str(name).lower() in targets for name in column.cat.categories] + [missing])
        return lookup[column.cat.codes.to_numpy()]  # code -1 (missing) picks the last entry
    text = column.astype("string").str.lower()
    keep = text.isin(targets).fillna(False).to_numpy(dtype=bool)
    return keep | column.isna().to_numpy() if missing else keep


def select_demo(metadata: pd.DataFrame, n_per_group: int | None = None,
                max_total: int = DEMO_SIZE, seed: int = 0) -> np.ndarray:
    """Positions of a representative mix: every (survey, class) group, real spectra first.

    Groups take turns, one spectrum each per round, until ``max_total`` is reached
    or each group has given ``n_per_group``; so small groups come in whole and no
    large group crowds out the rest. Within a group real spectra come before
    simulated ones, each in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    survey = metadata["survey"].astype("string").fillna("unknown").to_numpy()
    label = metadata["class"].astype("string").fillna("-").to_numpy() if "class" in metadata else \
        np.full(len(metadata), "-")
    real = (metadata["origin"].astype("string").fillna("") == "real").to_numpy() \
        if "origin" in metadata else np.zeros(len(metadata), bool)
    queues = []
    groups = pd.DataFrame({"s": survey, "c": label}).groupby(["s", "c"], sort=True).indices
    for _, positions in sorted(groups.items()):
        positions = np.asarray(positions)
        first = rng.permutation(positions[real[positions]])
        rest = rng.permutation(positions[~real[positions]])
        queues.append(np.concatenate([first, rest]))
    limit = max(len(q) for q in queues) if queues else 0
    if n_per_group is not None:
        limit = min(limit, n_per_group)
    taken: list[int] = []
    for turn in range(limit):
        for queue in queues:
            if turn < len(queue):
                taken.append(int(queue[turn]))
                if len(taken) >= max_total:
                    return np.sort(np.array(taken, dtype=np.int64))
    return np.sort(np.array(taken, dtype=np.int64))


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


# -- reading display grids and checking models --------------------------------------------------


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


def _check_model(path: Path, manifest: dict, tokenizer) -> None:
    if tokenizer.weights_hash != manifest["weights_hash"]:
        raise SpectrumError(
            f"index {path} was built with model {manifest.get('model_id')!r} (weights "
            f"{manifest['weights_hash'][:12]}), but the model given is {tokenizer.model_id!r} "
            f"(weights {tokenizer.weights_hash[:12] or 'unsaved'}): their embeddings are not "
            f"comparable. Rebuild the index for this model with `spectok index build "
            f"--corpus CORPUS --out {path} --model MODEL_DIR`, or load the model it was built with."
        )


# -- placing new spectra on the map ---------------------------------------------------------------


def place_neighbours(similarities: np.ndarray, neighbour_coords: np.ndarray) -> np.ndarray:
    """Similarity-weighted mean of the neighbours' map coordinates."""
    weights = np.clip(similarities, 1e-6, None)
    return (weights[:, None] * neighbour_coords).sum(axis=0) / weights.sum()


def place_umap(similarities: np.ndarray, neighbour_coords: np.ndarray, all_coords: np.ndarray,
               a: float, b: float, n_epochs: int, rng: np.random.Generator) -> np.ndarray:
    """UMAP's ``transform`` for one point, from what the index stores.

    umap-learn's transform needs the fitted reducer, which cannot be saved without
    a pickle. What it actually uses is small: the new point's nearest neighbours
    (FAISS gives them), the indexed points' map coordinates, and the curve
    parameters a, b. This follows umap_.py: fuzzy membership weights with a
    binary-searched bandwidth, start at their weighted mean, then SGD with
    attraction to the neighbours and repulsion from random points, the indexed
    points held fixed. Updates are applied per epoch rather than per edge.
    """
    distances = np.clip(1.0 - similarities.astype(np.float64), 0.0, None)  # cosine distance
    target = np.log2(len(distances))
    low, high, sigma = 0.0, np.inf, 1.0
    for _ in range(64):
        total = np.exp(-distances / sigma).sum()
        if abs(total - target) < 1e-5:
            break
        if total > target:
            high = sigma
            sigma = (low + high) / 2
        else:
            low = sigma
            sigma = sigma * 2 if high == np.inf else (low + high) / 2
    sigma = max(sigma, 1e-3 * float(distances.mean()) if distances.mean() > 0 else 1e-3)
    weights = np.exp(-distances / sigma)
    point = (weights / weights.sum()) @ neighbour_coords
    weights = np.where(weights >= weights.max() / n_epochs, weights, 0.0)
    active_edges = weights > 0
    per_sample = np.where(active_edges, weights.max() / np.where(active_edges, weights, 1.0), np.inf)
    per_negative = per_sample / 5.0  # negative_sample_rate
    next_sample, next_negative = per_sample.copy(), per_negative.copy()
    for epoch in range(n_epochs):
        alpha = 0.25 * (1.0 - epoch / n_epochs)  # umap's transform: initial alpha 1/4
        due = next_sample <= epoch
        if not due.any():
            continue
        diff = point - neighbour_coords[due]
        d2 = (diff**2).sum(axis=1)
        coeff = np.where(d2 > 0, -2 * a * b * d2 ** (b - 1) / (a * d2**b + 1), 0.0)
        step = np.clip(coeff[:, None] * diff, -4, 4).sum(axis=0)
        per_edge = np.clip(np.floor((epoch - next_negative[due]) / per_negative[due]), 0, None)
        n_negative = int(per_edge.sum())
        if n_negative:
            diff = point - all_coords[rng.integers(len(all_coords), size=n_negative)]
            d2 = (diff**2).sum(axis=1)
            coeff = np.where(d2 > 0, 2 * b / ((0.001 + d2) * (a * d2**b + 1)), 0.0)
            step += np.clip(coeff[:, None] * diff, -4, 4).sum(axis=0)
        point = point + alpha * step
        next_sample[due] += per_sample[due]
        next_negative[due] += per_edge * per_negative[due]
    return point


# -- the index ----------------------------------------------------------------------------------


class SpectrumIndex:
    """An index folder opened for search, browsing and placing new spectra on the map.

    Open one with :meth:`load` (default: the shipped ``indexes/demo``) or make one
    with :meth:`build`. Large arrays are memory-mapped, so opening is quick and a
    million-spectrum index does not have to fit in memory.
    """

    #: How ``place`` puts a new spectrum on the map, chosen by leave-one-out measurement
    #: (benchmarks/search_speed.py, part 2): on 2,732 corpus spectra the weighted mean of
    #: 5 neighbours landed a median 0.053 map units from the true point (p90 0.14; median
    #: pair distance 11.2) in 0.1 ms; UMAP's transform 0.067 (p90 0.14) in 10 ms.
    PLACE_METHOD = "neighbours"
    PLACE_NEIGHBOURS = 5

    def __init__(self, path: Path, manifest: dict, index, tokenizer=None, verify: bool | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.tokenizer = tokenizer
        self._index = index
        self._embeddings = np.load(self.path / "embeddings.npy", mmap_mode="r")
        self._coords = np.load(self.path / "coords.npy", allow_pickle=False)
        self._rows = np.load(self.path / "display" / "rows.npy", allow_pickle=False)
        self._flux = np.load(self.path / "display" / "flux.npy", mmap_mode="r")
        self._mask = np.load(self.path / "display" / "mask.npy", mmap_mode="r")
        self._wave = np.load(self.path / "display" / "wave.npy", mmap_mode="r")
        self._segments = np.load(self.path / "display" / "segments.npy", allow_pickle=False)
        self._map = np.load(self.path / "map.npy") if (self.path / "map.npy").is_file() else None
        self._metadata = _tidy_metadata(pd.read_parquet(self.path / "metadata.parquet"))
        n = manifest["n"]
        shapes = {"embeddings": self._embeddings.shape[0], "coords": self._coords.shape[0],
                  "display rows": len(self._rows), "metadata": len(self._metadata),
                  "FAISS": int(index.ntotal)}
        wrong = {k: v for k, v in shapes.items() if v != n}
        if wrong:
            raise SpectrumError(f"index {self.path} is inconsistent: manifest says {n} spectra, but "
                                f"{wrong}; {_rebuild_hint(self.path)}")
        check_arrays(self, finite=verify or None)

    # -- making and opening ----------------------------------------------------------------

    @classmethod
    def build(cls, corpus: str | os.PathLike, out: str | os.PathLike, tokenizer=None, *,
              factory: str | None = None, batch_size: int = 64,
              where: Mapping[str, Any] | None = None, max_spectra: int | None = None,
              progress: bool = True, umap: bool = True) -> SpectrumIndex:
        """Embed ``corpus`` with ``tokenizer`` (a Tokenizer, a model folder, or None for the
        shipped model) and write the index folder ``out``.

        ``where`` selects spectra by metadata (as in :meth:`search`); ``max_spectra``
        caps their number with a representative mix (:func:`select_demo`). The FAISS
        index is exact (``Flat``, inner product on unit vectors) up to 200,000 vectors
        and ``HNSW32,Flat`` tuned to recall@10 >= 0.97 above; ``factory`` overrides.
        Running the same build again after an interruption resumes the embedding.
        """
        from .index_build import build

        return build(corpus, out, tokenizer, factory=factory, batch_size=batch_size, where=where,
                     max_spectra=max_spectra, progress=progress, umap=umap)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, tokenizer=None, *,
             check_model: bool = True, verify: bool | None = None) -> SpectrumIndex:
        """Open an index folder (default: the shipped ``indexes/demo``).

        ``tokenizer``: the model queries will be embedded with — a Tokenizer, a
        model folder, or None for the shipped model. The index refuses a model
        whose weights differ from those that built it: their embeddings would
        not be comparable. ``tokenizer=False`` or ``check_model=False`` skips the
        model (to browse an index without loading one).

        Every file is checked against the sha256 in the manifest, and the
        embeddings for finiteness, when the index is at most
        ``index_check.HASH_AT_LOAD`` (256 MB); larger ones get sizes, headers
        and offsets only, unless ``verify=True`` (``spectok index verify``).
        """
        import faiss

        path = Path(path) if path is not None else DEFAULT_INDEX
        manifest_path = path / "manifest.json"
        if not path.is_dir():
            raise SpectrumError(f"no index folder at {path}; build one with "
                                f"`spectok index build --corpus CORPUS --out {path}`")
        try:
            manifest = json.loads(manifest_path.read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            raise SpectrumError(f"{path} has no manifest.json, so it is not a complete index; "
                                f"{_rebuild_hint(path)}") from None
        except (OSError, ValueError) as err:
            raise SpectrumError(f"{manifest_path} is damaged ({str(err)[:80]}); "
                                f"{_rebuild_hint(path)}") from None
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise SpectrumError(f"index {path} has format version {version!r}; this spectok reads "
                                f"version {FORMAT_VERSION}: {_rebuild_hint(path)}")
        check_manifest(path, manifest, DATA_FILES, manifest_path)
        check_files(path, manifest, full=verify or None)
        if tokenizer is not False and check_model:
            tokenizer = _resolve_tokenizer(tokenizer)
            _check_model(path, manifest, tokenizer)
        else:
            tokenizer = None if tokenizer is False else tokenizer
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as err:
            raise SpectrumError(f"{path / 'index.faiss'} cannot be read ({str(err)[:80]}); "
                                f"{_rebuild_hint(path)}") from None
        space = faiss.ParameterSpace()
        for name, value in manifest.get("search_params", {}).items():
            if name in ("efSearch", "nprobe"):
                space.set_index_parameter(index, name, value)
        try:
            return cls(path, manifest, index, tokenizer, verify=verify)
        except SpectrumError:
            raise
        except (OSError, ValueError) as err:
            raise SpectrumError(f"index {path} cannot be read ({str(err)[:100]}); "
                                f"{_rebuild_hint(path)}") from None

    def check_model(self, tokenizer) -> None:
        """Refuse a model other than the one that built the index; keep it for queries."""
        _check_model(self.path, self.manifest, tokenizer)
        self.tokenizer = tokenizer

    # -- browsing ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.manifest["n"])

    def __repr__(self) -> str:
        return (f"SpectrumIndex({str(self.path)!r}, n={len(self)}, model={self.manifest.get('model_id')!r}, "
                f"factory={self.manifest['factory']!r})")

    @property
    def metadata(self) -> pd.DataFrame:
        """One row per indexed spectrum (row number = position); text columns are categories."""
        return self._metadata

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) map coordinates, row for row with :attr:`metadata`."""
        return self._coords

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    def embedding(self, row: int) -> np.ndarray:
        self._check_row(row)
        return np.array(self._embeddings[row], dtype=np.float32)

    def spectrum(self, row: int) -> Spectrum:
        """The display copy of an indexed spectrum, on its native grid.

        Flux is kept to float16 precision (about 3 significant digits). The
        inverse variance is nominal — the spectrum's median S/N spread evenly —
        since per-pixel errors are not stored: ``meta['ivar_nominal']`` is True.
        """
        self._check_row(row)
        record = self._rows[row]
        n, offset = int(record["n_pixels"]), int(record["flux_offset"])
        if record["n_segments"] == 0:
            wave = np.asarray(self._wave[record["wave_offset"] : record["wave_offset"] + n], np.float64)
        else:
            at = int(record["segment_offset"])
            wave = segments_wave(self._segments[at : at + int(record["n_segments"])])
        scale = float(record["scale"])
        flux = np.asarray(self._flux[offset : offset + n], np.float32) * scale
        at = int(record["mask_offset"])
        mask = np.unpackbits(self._mask[at : at + (n + 7) // 8])[:n].astype(bool)
        snr = float(record["snr"])
        snr = snr if np.isfinite(snr) and snr > 0 else 1.0
        ivar = np.full(n, (snr / scale) ** 2, np.float32)
        meta = {k: v for k, v in self._row_meta(row).items() if k not in ("survey",)}
        meta.update(display_copy=True, ivar_nominal=True, index_row=int(row))
        survey = str(self._metadata["survey"].iloc[row])
        return Spectrum(wave, flux, ivar, mask, survey, meta)

    def _row_meta(self, row: int) -> dict:
        values = self._metadata.iloc[row].to_dict()
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in values.items()
                if v is not None and not (isinstance(v, float) and np.isnan(v)) and v is not pd.NA}

    def _check_row(self, row: int) -> None:
        if not 0 <= int(row) < len(self):
            raise SpectrumError(f"row {row} is outside this index (0 to {len(self) - 1})")

    # -- searching -------------------------------------------------------------------------------

    def _queries(self, vectors) -> np.ndarray:
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            raise SpectrumError(f"query vectors have shape {np.shape(vectors)}; this index holds "
                                f"{self.dimension}-dimensional embeddings")
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise SpectrumError("query vectors must be finite and non-zero")
        return np.ascontiguousarray(queries / norms)

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, found = self._index.search(queries, min(k, len(self)))
        # Unit vectors: a similarity beyond 1 is a damaged index.faiss (too large to hash at load).
        if sims.size and not np.all(np.abs(sims[found >= 0]) <= 1.01):
            raise SpectrumError(f"{self.path / 'index.faiss'} gives similarities beyond 1: it is "
                                f"damaged. Check it with `spectok index verify {self.path}`; "
                                f"{_rebuild_hint(self.path)}")
        return sims, found

    def _search_subset(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the selected rows only (numpy; the subset is small)."""
        sims = queries @ np.asarray(self._embeddings[rows]).T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(rows) else \
            np.tile(np.arange(len(rows)), (len(queries), 1))
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        return np.take_along_axis(top_sims, order, axis=1), rows[np.take_along_axis(top, order, axis=1)]

    def _search_filtered(self, queries: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k among rows with ``keep``; always min(k, kept) results per query."""
        import faiss

        n_kept = int(np.count_nonzero(keep))
        k = min(k, n_kept)
        factory = self.manifest["factory"]
        exact_index = factory.strip().lower() in ("flat", "flatip", "idmap,flat")
        if n_kept < SUBSET_FRACTION * len(self):  # cheaper than skipping 98% of the index
            return self._search_subset(queries, np.flatnonzero(keep), k)
        bitmap = np.packbits(keep, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))
        params = self.manifest.get("search_params", {})
        if exact_index:
            search_params = [faiss.SearchParameters(sel=selector)]
        elif "efSearch" in params:  # a second, wider try before the exact fallback
            search_params = [faiss.SearchParametersHNSW(sel=selector, efSearch=max(params["efSearch"], 2 * k) * f)
                             for f in (1, 4)]
        elif "nprobe" in params:
            search_params = [faiss.SearchParametersIVF(sel=selector, nprobe=params["nprobe"] * f) for f in (1, 4)]
        else:
            return self._search_subset(queries, np.flatnonzero(keep), k)
        sims, found = self._index.search(queries, k, params=search_params[0])
        for wider in search_params[1:]:
            short = (found < 0).any(axis=1)
            if short.any():
                sims[short], found[short] = self._index.search(queries[short], k, params=wider)
        del bitmap  # the selector points into it until here
        short = (found < 0).any(axis=1)
        if short.any():  # an approximate index can still miss under a tight filter: finish exactly
            sims[short], found[short] = self._search_subset(queries[short], np.flatnonzero(keep), k)
        return sims, found

    def search(self, vectors, k: int = 10, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Nearest indexed spectra by cosine similarity (inner product of unit vectors).

        ``vectors``: one embedding (D,) -> a DataFrame of up to k rows, best first;
        several (M, D) -> one DataFrame with a ``query`` column (0..M-1), each
        query's hits best first. Columns: ``rank`` (1 = best), ``similarity``,
        ``row`` (index row, for :meth:`spectrum` / :attr:`coords`), then metadata.
        ``where`` filters as in :func:`select_rows`, e.g. ``{"survey": ["sdss",
        "desi"], "class": "QSO", "z": (0.1, 0.5)}``; the k results all satisfy it
        (fewer only when fewer rows do).
        """
        single = np.ndim(vectors) == 1
        queries = self._queries(vectors)
        if k < 1:
            raise SpectrumError(f"k must be at least 1, got {k}")
        keep = self._selection(where) if where else None
        if keep is None:
            sims, found = self._search_all(queries, k)
        elif not keep.any():
            sims, found = np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        else:
            sims, found = self._search_filtered(queries, keep, k)
        valid = found >= 0
        rows = found[valid].astype(np.int64)
        columns = {"rank": np.nonzero(valid)[1] + 1, "similarity": sims[valid].astype(np.float64),
                   "row": rows}
        if not single:
            columns = {"query": np.nonzero(valid)[0], **columns}
        # One DataFrame from plain arrays: pandas per-row work would cost more than FAISS.
        for name, (values, codes) in self._result_columns.items():
            columns[name] = values[codes[rows]] if codes is not None else values[rows]
        return pd.DataFrame(columns)

    def _selection(self, where: Mapping[str, Any]) -> np.ndarray:
        """select_rows, remembered for the last few filters (an app repeats its filter)."""
        key = repr(sorted((k, tuple(v.tolist()) if isinstance(v, np.ndarray) else v)
                          for k, v in where.items()))
        cache = self._selections
        if key not in cache:
            cache[key] = select_rows(self._metadata, where)
            while len(cache) > 8:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    @cached_property
    def _selections(self) -> OrderedDict:
        return OrderedDict()

    @cached_property
    def _result_columns(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Metadata as arrays for fast row picking; categories as (names + None, codes)."""
        result = {}
        for name, series in self._metadata.items():
            if isinstance(series.dtype, pd.CategoricalDtype):
                names = np.array([*map(str, series.cat.categories), None], dtype=object)
                result[name] = (names, series.cat.codes.to_numpy())  # code -1 -> None
            else:
                result[name] = (series.to_numpy(), None)
        return result

    # -- the map -----------------------------------------------------------------------------------

    def place(self, vector, k: int | None = None, method: str | None = None) -> tuple[float, float]:
        """Map coordinates (x, y) for a new embedding.

        A spectrum already in the index lands exactly on its own point. PCA maps
        project exactly. UMAP maps use ``method``: "neighbours" (default; the
        similarity-weighted mean of the k=5 nearest indexed points) or "umap"
        (UMAP's own transform, rebuilt from what the index stores; see
        :func:`place_umap`). The default was truer and 100x faster in a
        leave-one-out measurement (see ``PLACE_METHOD``); "umap" stays so the
        comparison can be rerun when the model changes.
        """
        query = self._queries(vector)
        if self.manifest["map"]["method"] == "pca":
            mean, components = self._map[0], self._map[1:]
            x, y = (query[0] - mean) @ components.T
            return float(x), float(y)
        sims, rows = self._neighbours(query, k, method)
        if sims[0] >= 1.0 - 1e-6:
            x, y = self._coords[rows[0]]
            return float(x), float(y)
        x, y = self._place_from(sims, rows, method)
        return float(x), float(y)

    def _neighbours(self, query: np.ndarray, k: int | None, method: str | None,
                    extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
        method = method or self.PLACE_METHOD
        if k is None:
            k = self.manifest["map"].get("n_neighbors", 15) if method == "umap" else self.PLACE_NEIGHBOURS
        sims, rows = self._search_all(query, k + extra)
        valid = rows[0] >= 0
        return sims[0][valid], rows[0][valid]

    def _place_from(self, sims: np.ndarray, rows: np.ndarray, method: str | None = None,
                    seed: int = 0) -> np.ndarray:
        method = method or self.PLACE_METHOD
        if method == "neighbours":
            return place_neighbours(sims, self._coords[rows])
        if method == "umap":
            info = self.manifest["map"]
            n_epochs = 100 if len(self) <= 10_000 else 30  # as umap-learn's transform
            return place_umap(sims, self._coords[rows].astype(np.float64), self._coords, info["a"],
                              info["b"], n_epochs, np.random.default_rng(seed))
        raise SpectrumError(f"unknown placement method {method!r}; use 'neighbours' or 'umap'")


# -- command-line helpers ---------------------------------------------------------------------------


def parse_where(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a filter: ``a,b`` a list, ``lo:hi`` a range (either end may be empty)."""
    where: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpectrumError(f"filter {item!r} is not KEY=VALUE (e.g. z=0.1:0.5, survey=sdss,desi)")
        key, text = key.strip(), text.strip()
        if ":" in text:
            low, _, high = text.partition(":")
            try:
                where[key] = (float(low) if low.strip() else None, float(high) if high.strip() else None)
            except ValueError:
                raise SpectrumError(f"filter {item!r}: a range is LOW:HIGH in numbers") from None
        elif "," in text:
            where[key] = [_number_or_text(v) for v in text.split(",") if v.strip()]
        else:
            where[key] = _number_or_text(text)
    return where


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _labels(row: pd.Series) -> str:
    parts = []
    for key, fmt in (("spectral_type", "SpT={}"), ("teff", "Teff={:.0f}"), ("logg", "logg={:.2f}"),
                     ("feh", "[Fe/H]={:+.2f}")):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            parts.append(fmt.format(value))
    return " ".join(parts) or "-"


def format_hits(hits: pd.DataFrame) -> str:
    """The neighbours as a fixed-width table for a terminal."""
    lines = [f"{'rank':>4} {'sim':>7}  {'survey':<10} {'origin':<9} {'class':<7} {'z':>7}  "
             f"{'labels':<40} object_id"]
    for _, row in hits.iterrows():
        z = row.get("z")
        z_text = f"{z:7.4f}" if z is not None and np.isfinite(z) else f"{'-':>7}"
        lines.append(
            f"{row['rank']:>4} {row['similarity']:7.4f}  {str(row.get('survey')):<10} "
            f"{str(row.get('origin') or '-'):<9} {str(row.get('class') or '-'):<7} {z_text}  "
            f"{_labels(row):<40} {row.get('object_id')}"
        )
    return "\n".join(lines)


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write hits as CSV or ECSV (astropy), chosen by the suffix, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".ecsv"):
        raise SpectrumError(f"{path}: write hits to a .csv or .ecsv file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            from astropy.table import Table

            plain = frame.copy()
            for name in plain.columns:
                if plain[name].dtype == object or isinstance(plain[name].dtype, pd.CategoricalDtype):
                    plain[name] = plain[name].astype(object).where(plain[name].notna(), "").astype(str)
            Table.from_pandas(plain).write(tmp, format="ascii.ecsv", overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
