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

An index built without display copies (``manifest["display"] == "source"``, the default
above 200,000 spectra) has no display/ folder and no map.npy; instead::

    embeddings.npy       (N, D) float16 where an approximate index searches (exact re-ranking)
    thumbnails.npy       (N, 64) float16 flux / scale on a log grid from wave_min to wave_max
    metadata.parquet     also source / source_row (or shard / shard_row), flux_scale, index_row

and a neighbour is read from its source when reachable (:meth:`SpectrumIndex.spectrum`).

Nothing here is a pickle: the index can come from anyone, so it is checked before use
(:mod:`spectok_core.index_check`: manifest fields, sha256 of every file, array headers,
display offsets, finite embeddings). This module reads index
folders (search, filters, display copies, placing new spectra on the map);
:mod:`spectok_core.index_build` writes them, resumably and atomically.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .index_check import check_arrays, check_files, check_manifest
from .index_format import (  # noqa: F401 - re-exported: the format's names, as before
    AIR_LINEAR,
    DATA_FILES,
    DEMO_DISPLAY_PIXELS,
    DEMO_SIZE,
    FORMAT_VERSION,
    INDEX_ROW,
    LINEAR,
    LOG,
    METADATA_COLUMNS,
    NUMERIC_COLUMNS,
    ROW_DTYPE,
    SEGMENT_DTYPE,
    SOURCE_DATA_FILES,
    _resolve_tokenizer,
    _tidy_metadata,
    grid_wave,
    missing_text,
    rerank_search,
    segments_wave,
    select_rows,
    select_rows_parquet,
)
from .spectrum import Spectrum, SpectrumError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INDEX = REPO_ROOT / "indexes" / "demo"
SUBSET_FRACTION = 0.02  # filters keeping fewer rows than this search the subset exactly
#: IVF index files above this size are opened with memory-mapped inverted lists.
MMAP_ABOVE = 256 * 2**20


def _rebuild_hint(path: Path | str) -> str:
    return (f"rebuild it with `spectok index build --corpus CORPUS --out {path}` "
            "(add --model MODEL_DIR to use other weights)")




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


def _prefetch(paths: Sequence[Path], block: int = 8 << 20) -> None:
    """Read memory-mapped index files once, sequentially, in a background thread, so that
    they sit in the page cache before the first search. On a cold 10^7 index that search
    otherwise waits on thousands of random page reads (IVF lists, re-ranked embeddings):
    12-38 s measured here, against about 3 s to read the 3.3 GB in order."""

    def run() -> None:
        for path in paths:
            try:
                with open(path, "rb", buffering=0) as handle:
                    while handle.read(block):
                        pass
            except OSError:
                continue

    threading.Thread(target=run, name="spectok-prefetch", daemon=True).start()


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
        #: "copies": float16 display copies of every spectrum (display/); "source": read
        #: from the source files when reachable, else a stored thumbnail (large indexes).
        self.display = manifest.get("display", "copies")
        self._embeddings = np.load(self.path / "embeddings.npy", mmap_mode="r")
        self._coords = np.load(self.path / "coords.npy", mmap_mode="r" if self.display == "source" else None,
                               allow_pickle=False)
        self._map = np.load(self.path / "map.npy") if (self.path / "map.npy").is_file() else None
        if self.display == "copies":
            self._rows = np.load(self.path / "display" / "rows.npy", allow_pickle=False)
            self._flux = np.load(self.path / "display" / "flux.npy", mmap_mode="r")
            self._mask = np.load(self.path / "display" / "mask.npy", mmap_mode="r")
            self._wave = np.load(self.path / "display" / "wave.npy", mmap_mode="r")
            self._segments = np.load(self.path / "display" / "segments.npy", allow_pickle=False)
            self._thumbs = None
            self.__dict__["_metadata"] = _tidy_metadata(pd.read_parquet(self.path / "metadata.parquet"))
            n_meta, n_display = len(self._metadata), len(self._rows)
        else:
            import pyarrow.parquet as pq

            self._thumbs = np.load(self.path / "thumbnails.npy", mmap_mode="r")
            # Metadata stays in Parquet until asked for: filters and results read only
            # the columns and rows they need (pushed-down predicates, pyarrow take).
            n_meta = pq.ParquetFile(self.path / "metadata.parquet").metadata.num_rows
            n_display = len(self._thumbs)
        n = manifest["n"]
        shapes = {"embeddings": self._embeddings.shape[0], "coords": self._coords.shape[0],
                  "display rows": n_display, "metadata": n_meta, "FAISS": int(index.ntotal)}
        wrong = {k: v for k, v in shapes.items() if v != n}
        if wrong:
            raise SpectrumError(f"index {self.path} is inconsistent: manifest says {n} spectra, but "
                                f"{wrong}; {_rebuild_hint(self.path)}")
        check_arrays(self, finite=verify or None)

    # -- making and opening ----------------------------------------------------------------

    @classmethod
    def build(cls, corpus, out: str | os.PathLike, tokenizer=None, *,
              factory: str | None = None, batch_size: int = 64,
              where: Mapping[str, Any] | None = None, max_spectra: int | None = None,
              progress: bool = True, umap: bool = True, **options) -> SpectrumIndex:
        """Embed ``corpus`` with ``tokenizer`` (a Tokenizer, a model folder, or None for the
        shipped model) and write the index folder ``out``.

        ``corpus``: a corpus folder, or survey files, folders, globs and MMU HDF5
        shards (one or a list). ``where`` selects spectra by metadata (as in
        :meth:`search`); ``max_spectra`` caps a corpus's with a representative mix
        (:func:`~spectok_core.index_build.select_demo`). The FAISS index is exact
        (``Flat``, inner product on unit vectors) up to 200,000 vectors and IVF-PQ
        (OPQ) above, tuned to recall@10 >= 0.95; ``factory`` overrides.
        ``options`` (``scheduler``, ``workers``, ``display``, ``rerank``,
        ``map_sample``): see :func:`spectok_core.index_build.build`. Running the
        same build again after an interruption resumes the embedding.
        """
        # The one use of the builder here; the builder never imports this module.
        from .index_build import build

        path = build(corpus, out, tokenizer, factory=factory, batch_size=batch_size, where=where,
                     max_spectra=max_spectra, progress=progress, umap=umap, **options)
        return cls.load(path, tokenizer=tokenizer)

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
        if manifest.get("display", "copies") not in ("copies", "source"):
            raise SpectrumError(f"{manifest_path}: field 'display' must be 'copies' or 'source'; "
                                f"{_rebuild_hint(path)}")
        data_files = DATA_FILES if manifest.get("display", "copies") == "copies" else SOURCE_DATA_FILES
        check_manifest(path, manifest, data_files, manifest_path)
        check_files(path, manifest, full=verify or None)
        if tokenizer is not False and check_model:
            tokenizer = _resolve_tokenizer(tokenizer)
            _check_model(path, manifest, tokenizer)
        else:
            tokenizer = None if tokenizer is False else tokenizer
        try:
            # Large IVF indexes keep their inverted lists on disk, memory-mapped.
            mmap = "IVF" in manifest["factory"] and (path / "index.faiss").stat().st_size > MMAP_ABOVE
            index = faiss.read_index(str(path / "index.faiss"), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError as err:
            raise SpectrumError(f"{path / 'index.faiss'} cannot be read ({str(err)[:80]}); "
                                f"{_rebuild_hint(path)}") from None
        space = faiss.ParameterSpace()
        for name, value in manifest.get("search_params", {}).items():
            if name in ("efSearch", "nprobe"):
                space.set_index_parameter(index, name, value)
        if manifest.get("display") == "source":
            _prefetch([path / name for name in ("index.faiss", "embeddings.npy", "metadata.parquet")])
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
        """One row per indexed spectrum (row number = position); text columns are categories.

        An index without display copies (a large one) reads this from Parquet on first
        use; :meth:`search` with ``where`` and :meth:`rows_metadata` never need it whole.
        """
        return self._metadata

    @cached_property
    def _metadata(self) -> pd.DataFrame:
        table = pd.read_parquet(self.path / "metadata.parquet")
        return _tidy_metadata(table.drop(columns=[INDEX_ROW], errors="ignore"))

    @cached_property
    def _dataset(self):
        import pyarrow.dataset as ds

        return ds.dataset(self.path / "metadata.parquet", format="parquet")

    def rows_metadata(self, rows, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Metadata of some rows only (read with pyarrow's take when it is not loaded)."""
        rows = np.asarray(rows, np.int64)
        if "_metadata" in self.__dict__:
            frame = self._metadata.iloc[rows]
            return frame[list(columns)] if columns is not None else frame
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise SpectrumError(f"rows must be in 0..{len(self) - 1}")
        # Only the row groups holding these rows are read (a build writes groups of 8,192
        # rows): milliseconds for a page of hits, where a dataset take scans them all.
        starts = self._group_starts
        groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
        table = self._parquet.read_row_groups([int(g) for g in groups],
                                              columns=list(columns) if columns is not None else None)
        held = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups]) if len(groups) else \
            np.zeros(0, np.int64)
        table = table.take(np.searchsorted(held, rows))
        return _tidy_metadata(table.to_pandas().drop(columns=[INDEX_ROW], errors="ignore"))

    @cached_property
    def _parquet(self):
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path / "metadata.parquet")

    @cached_property
    def _group_starts(self) -> np.ndarray:
        """First row of each Parquet row group, and the number of rows at the end."""
        meta = self._parquet.metadata
        return np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])

    @property
    def metadata_loaded(self) -> bool:
        """Whether the whole metadata is in memory (indexes with display copies); a large
        index reads the rows and columns it needs from Parquet instead."""
        return "_metadata" in self.__dict__

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """Some metadata columns of every row (those that exist), read alone from Parquet
        when the metadata is not loaded; remembered, since the app asks again."""
        present = [n for n in names if n in self.column_names]
        if self.metadata_loaded:
            return self._metadata[present]
        missing = [n for n in present if n not in self._columns]
        if missing:
            table = self._dataset.to_table(columns=missing)
            frame = _tidy_metadata(table.to_pandas())
            for name in missing:
                self._columns[name] = frame[name]
        return pd.DataFrame({n: self._columns[n] for n in present})

    def metadata_table(self, names: Sequence[str]):
        """Some metadata columns of every row as a pyarrow Table (for counting in Arrow)."""
        import pyarrow as pa

        present = [n for n in names if n in self.column_names]
        if self.metadata_loaded:
            return pa.Table.from_pandas(self._metadata[present], preserve_index=False)
        return self._dataset.to_table(columns=present)

    @cached_property
    def _columns(self) -> dict[str, pd.Series]:
        return {}

    @cached_property
    def column_names(self) -> list[str]:
        """The metadata's columns (without reading any)."""
        if self.metadata_loaded:
            return list(self._metadata.columns)
        return [n for n in self._dataset.schema.names if n != INDEX_ROW]

    def sample_rows(self, limit: int, seed: int = 0) -> np.ndarray:
        """A fixed random sample of at most ``limit`` rows, sorted (the same on every call).

        With the metadata in Parquet the rows come from whole row groups drawn at random
        (a build writes groups of 8,192 rows), so that reading their metadata touches
        about limit / 8,192 groups, not nearly all of them.
        """
        n = len(self)
        if n <= limit:
            return np.arange(n)
        rng = np.random.default_rng(seed)
        if self.metadata_loaded:
            return np.sort(rng.choice(n, limit, replace=False))
        starts = self._group_starts
        chosen, total = [], 0
        for group in rng.permutation(len(starts) - 1):
            chosen.append(np.arange(starts[group], starts[group + 1]))
            total += len(chosen[-1])
            if total >= limit:
                break
        rows = np.concatenate(chosen)
        return np.sort(rng.choice(rows, limit, replace=False)) if len(rows) > limit else np.sort(rows)

    def find_rows(self, where: Mapping[str, Any]) -> np.ndarray:
        """Index rows matching ``where`` (as in :meth:`search`), in order; for a large index
        the predicates are pushed down to the Parquet scan."""
        return np.flatnonzero(self.select(where))

    def rows_where_equal(self, column: str, value: str) -> np.ndarray:
        """Index rows whose ``column`` is exactly ``value`` (case and all: an object id), in
        order; a large index scans that one column in Parquet."""
        if column not in self.column_names:
            return np.zeros(0, np.int64)
        if self.metadata_loaded:
            return np.flatnonzero(self._metadata[column].astype(str).to_numpy() == value)
        import pyarrow.compute as pc

        table = self._dataset.to_table(columns=[INDEX_ROW], filter=pc.field(column) == str(value))
        return np.sort(table.column(0).to_numpy().astype(np.int64))

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

        An index without display copies reads the spectrum from its source (the
        corpus shard and row, or the file and its index in it, as recorded in the
        metadata) when that is reachable inside the folders the build read
        (``meta['from_source']``), else gives its stored thumbnail
        (``meta['thumbnail']``: 64 pixels on a log grid, flux to scale).
        """
        self._check_row(row)
        if self.display == "source":
            return self._source_spectrum(int(row))
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

    def _source_spectrum(self, row: int) -> Spectrum:
        from .index_sources import read_source_row, thumb_wave

        meta = self._row_meta(row)
        survey = str(meta.get("survey") or "unknown")
        roots = self.manifest.get("source_roots")
        roots = [r for r in roots if isinstance(r, str)] if isinstance(roots, list) else []
        corpus = self.manifest.get("corpus") if isinstance(self.manifest.get("corpus"), str) else None
        got = read_source_row(meta, corpus, roots)
        plain = {k: v for k, v in meta.items() if k != "survey"}
        if got is not None:
            return Spectrum(got.wave, got.flux, got.ivar, got.mask, got.survey,
                            {**got.meta, **plain, "from_source": True, "index_row": row})
        wave = thumb_wave(meta.get("wave_min", 1000.0), meta.get("wave_max", 10000.0))
        scale = float(meta.get("flux_scale") or 1.0)
        flux = np.asarray(self._thumbs[row], np.float32) * scale
        snr = float(meta.get("snr") or 1.0)
        snr = snr if np.isfinite(snr) and snr > 0 else 1.0
        ivar = np.full(len(wave), (snr / scale) ** 2, np.float32)
        from .surveys import SURVEYS

        return Spectrum(wave, flux, ivar, np.zeros(len(wave), bool), survey if survey in SURVEYS else "unknown",
                        {**plain, "thumbnail": True, "ivar_nominal": True, "index_row": row})

    def _row_meta(self, row: int) -> dict:
        values = self.rows_metadata([row]).iloc[0].to_dict()
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
        rerank = int(self.manifest.get("search_params", {}).get("rerank", 0))
        if rerank:  # IVF-PQ candidates, re-scored exactly from the stored float16 embeddings
            sims, found = self._rerank(queries, min(k, len(self)), rerank)
        else:
            sims, found = self._index.search(queries, min(k, len(self)))
        # Unit vectors: a similarity beyond 1 is a damaged index.faiss (too large to hash at load).
        if sims.size and not np.all(np.abs(sims[found >= 0]) <= 1.01):
            raise SpectrumError(f"{self.path / 'index.faiss'} gives similarities beyond 1: it is "
                                f"damaged. Check it with `spectok index verify {self.path}`; "
                                f"{_rebuild_hint(self.path)}")
        return sims, found

    def _search_subset(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the selected rows only (numpy; the subset is small)."""
        sims = queries @ np.asarray(self._embeddings[rows], np.float32).T
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
        rerank = int(params.get("rerank", 0))

        def run(q: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
            return self._rerank(q, k, rerank, p) if rerank else self._index.search(q, k, params=p)

        sims, found = run(queries, search_params[0])
        for wider in search_params[1:]:
            short = (found < 0).any(axis=1)
            if short.any():
                sims[short], found[short] = run(queries[short], wider)
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
        if "_metadata" in self.__dict__:
            for name, (values, codes) in self._result_columns.items():
                columns[name] = values[codes[rows]] if codes is not None else values[rows]
        else:  # a large index: only the result rows are read from Parquet
            found_meta = self.rows_metadata(rows).reset_index(drop=True)
            for name in found_meta.columns:
                values = found_meta[name]
                columns[name] = values.astype(object).where(values.notna(), None).to_numpy() \
                    if isinstance(values.dtype, pd.CategoricalDtype) else values.to_numpy()
        return pd.DataFrame(columns)

    def _rerank(self, queries: np.ndarray, k: int, factor: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        # The same function the build tunes nprobe with, so the recorded recall is what search gives.
        return rerank_search(self._index, self._embeddings, queries, k, factor, params)

    def select(self, where: Mapping[str, Any] | None) -> np.ndarray:
        """Boolean mask of the rows matching ``where`` (as in :func:`select_rows`).

        An index whose metadata is not loaded (a large one) reads only the filtered
        columns from Parquet, with the predicates pushed down to the scan.
        """
        return self._selection(where) if where else np.ones(len(self), bool)

    def _selection(self, where: Mapping[str, Any]) -> np.ndarray:
        """select_rows, remembered for the last few filters (an app repeats its filter)."""
        key = repr(sorted((k, tuple(v.tolist()) if isinstance(v, np.ndarray) else v)
                          for k, v in where.items()))
        cache = self._selections
        if key not in cache:
            if "_metadata" in self.__dict__:
                cache[key] = select_rows(self._metadata, where)
            else:  # only the filtered columns are read, with the predicates pushed down to Parquet
                cache[key] = select_rows_parquet(self._dataset, where, len(self))
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


def _text(value: Any) -> str:
    """A table cell for a text value: '-' when it is missing (None, NaN, empty)."""
    return "-" if missing_text(value) else str(value)


def format_hits(hits: pd.DataFrame) -> str:
    """The neighbours as a fixed-width table for a terminal."""
    lines = [f"{'rank':>4} {'sim':>7}  {'survey':<10} {'origin':<9} {'class':<7} {'z':>7}  "
             f"{'labels':<40} object_id"]
    for _, row in hits.iterrows():
        z = row.get("z")
        z_text = f"{z:7.4f}" if z is not None and np.isfinite(z) else f"{'-':>7}"
        lines.append(
            f"{row['rank']:>4} {row['similarity']:7.4f}  {str(row.get('survey')):<10} "
            f"{_text(row.get('origin')):<9} {_text(row.get('class')):<7} {z_text}  "
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
