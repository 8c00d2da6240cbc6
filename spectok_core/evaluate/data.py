"""Corpus access for the evaluation: which rows, their embeddings, their resampled flux.

The evaluation reads the corpus once: every row a task needs is read from its
shard, embedded by the frozen model and, for the baselines, rebinned onto one
fixed log-λ grid (:data:`GRID_EDGES`). A task's "common grid" is then a slice
of that grid, so baselines of different tasks never re-read the shards.

Embeddings are cached per model hash and corpus hash as plain ``.npy`` (NaN
rows = not yet embedded), so a rerun — or a full run after ``--quick`` —
embeds only what is missing. The rebinned flux is cached the same way per
corpus hash (``.npz`` read with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data.corpus import COLUMNS, corpus_hash, metadata
from ..spectrum import Spectrum, SpectrumError

EXTRA_COLUMNS = ("alpha_m", "star_name")
# The baselines' grid: 3000-26000 Å in steps of 7e-4 in ln λ (210 km/s, about
# Nyquist for R = 1400). Fine enough for redshifts and lines at R ~ 2000, and
# small enough to hold every row in memory.
GRID_STEP = 7e-4
GRID_EDGES = np.exp(np.arange(np.log(3000.0), np.log(26000.0) + GRID_STEP, GRID_STEP))
GRID_CENTERS = np.sqrt(GRID_EDGES[:-1] * GRID_EDGES[1:])
GRID_VERSION = 1
SAVE_EVERY_S = 120.0  # write the embedding cache this often while embedding


def rebin(spectrum: Spectrum) -> tuple[int, np.ndarray]:
    """Flux on the bins of GRID_EDGES that lie inside the spectrum's good range.

    Masked pixels are bridged by linear interpolation between good neighbours;
    each bin gets the mean of that interpolated flux over its width (the
    integral of the curve, so a fine spectrum is averaged, not aliased, and a
    coarse one is interpolated). Returns (first bin, values float32).
    """
    good = spectrum.good
    wave = spectrum.wave[good]
    flux = spectrum.flux[good].astype(np.float64)
    first = int(np.searchsorted(GRID_EDGES, wave[0], side="left"))
    last = int(np.searchsorted(GRID_EDGES, wave[-1], side="right")) - 1  # last edge inside
    if last - first < 1:
        return first, np.zeros(0, np.float32)
    # Cumulative integral of the piecewise-linear flux, evaluated at the bin edges.
    area = np.concatenate([[0.0], np.cumsum(0.5 * (flux[1:] + flux[:-1]) * np.diff(wave))])
    edges = GRID_EDGES[first : last + 1]
    # Between pixels the integral of a linear segment is quadratic; linear
    # interpolation of the cumulative area is exact at pixels and close between.
    cumulative = np.interp(edges, wave, area)
    values = np.diff(cumulative) / np.diff(edges)
    return first, values.astype(np.float32)


def model_hash(tok) -> str:
    """The weights' sha256, or a hash of the in-memory parameters for an unsaved model."""
    if tok.weights_hash:
        return tok.weights_hash
    digest = hashlib.sha256()
    for name, tensor in sorted(tok.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


class EvalCorpus:
    """The corpus table plus, for the rows loaded so far, embeddings and rebinned flux."""

    def __init__(self, corpus_dir: str | os.PathLike, tok, cache_dir: Path | None = None,
                 progress: bool = True):
        self.corpus_dir = Path(corpus_dir)
        if not self.corpus_dir.is_dir():
            raise SpectrumError(f"corpus folder {self.corpus_dir} does not exist; "
                                "build one with `spectok corpus build`")
        self.tok = tok
        self.progress = progress
        self.table = metadata(self.corpus_dir, COLUMNS + EXTRA_COLUMNS)
        self.table["origin"] = self.table["origin"].fillna("real")
        self.table["instrument"] = self.table["survey"] + "/" + self.table["origin"].map(
            lambda o: "sim" if o == "simulated" else "real")
        self.corpus_hash = corpus_hash(self.corpus_dir)
        self.model_hash = model_hash(tok)
        n, d = len(self.table), tok.config.d_embed
        self.embeddings = np.full((n, d), np.nan, np.float32)
        self.feature_start = np.full(n, -1, np.int64)
        self.features: dict[int, np.ndarray] = {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.embedded_now = 0  # rows embedded in this run (not from the cache)
        self._load_caches()

    # -- caches ----------------------------------------------------------------------

    def _embedding_cache(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "embeddings" / self.model_hash[:16] / f"{self.corpus_hash}.npy"

    def _feature_cache(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "rebinned" / f"{self.corpus_hash}-v{GRID_VERSION}.npz"

    def _load_caches(self) -> None:
        path = self._embedding_cache()
        if path is not None and path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                cached = None  # a damaged cache is recomputed, never trusted
            if cached is not None and cached.shape == self.embeddings.shape:
                self.embeddings[:] = cached
        path = self._feature_cache()
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    rows, starts, lengths, flat = (data[k] for k in ("rows", "starts", "lengths", "flat"))
            except (OSError, ValueError, KeyError):
                return
            if rows.size and rows.max() >= len(self.table):
                return
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for i, row in enumerate(rows):
                self.feature_start[row] = starts[i]
                self.features[int(row)] = flat[offsets[i] : offsets[i + 1]]

    def save_caches(self, features: bool = True) -> None:
        """Write the embedding cache (and, unless ``features`` is False, the rebinned flux)."""
        path = self._embedding_cache()
        if path is None:
            return
        _atomic_save_npy(path, self.embeddings)
        info = path.with_suffix(".json")
        info.with_suffix(".tmp").write_text(json.dumps({
            "model_id": self.tok.model_id, "model_hash": self.model_hash,
            "corpus": str(self.corpus_dir), "corpus_hash": self.corpus_hash,
            "n_rows": len(self.table), "n_embedded": int(self.has_embedding.sum()),
        }, indent=1))
        os.replace(info.with_suffix(".tmp"), info)
        if not features:
            return
        rows = np.array(sorted(self.features), np.int64)
        path = self._feature_cache()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, rows=rows, starts=self.feature_start[rows],
                 lengths=np.array([self.features[r].size for r in rows], np.int64),
                 flat=np.concatenate([self.features[r] for r in rows]) if rows.size else np.zeros(0, np.float32))
        os.replace(tmp, path)

    @property
    def has_embedding(self) -> np.ndarray:
        return np.isfinite(self.embeddings[:, 0])

    # -- reading -----------------------------------------------------------------------

    def read(self, rows: np.ndarray) -> Iterator[tuple[int, Spectrum]]:
        """(table row, Spectrum) for the given table rows, shard by shard; bad rows skipped.

        Spectra carry the table's metadata columns as meta (object id, class,
        z, labels, split, origin), enough for probes and plots.
        """
        import h5py

        rows = np.asarray(rows, np.int64)
        table = self.table.iloc[rows]
        for shard, group in table.groupby("shard", sort=True):
            order = np.argsort(group["row"].to_numpy())
            shard_rows = group["row"].to_numpy()[order]
            table_rows = group.index.to_numpy()[order]
            with h5py.File(self.corpus_dir / shard, "r") as h5:
                wave = h5["spectrum_lambda"][shard_rows]
                flux = h5["spectrum_flux"][shard_rows]
                ivar = h5["spectrum_ivar"][shard_rows]
                mask = h5["spectrum_mask"][shard_rows]
            records = self.table.loc[table_rows, list(COLUMNS + EXTRA_COLUMNS)].to_dict("records")
            for i, (table_row, record) in enumerate(zip(table_rows, records)):
                keep = wave[i] > 0
                meta = {k: v for k, v in record.items()
                        if v is not None and not (isinstance(v, float) and np.isnan(v))}
                try:
                    spectrum = Spectrum(wave[i, keep], flux[i, keep], ivar[i, keep], mask[i, keep],
                                        str(record["survey"]), meta)
                except SpectrumError:
                    continue  # validated at build time; a damaged row is skipped, not fatal
                yield int(table_row), spectrum

    def spectra(self, rows: np.ndarray) -> list[tuple[int, Spectrum]]:
        return list(self.read(rows))

    def load(self, rows: np.ndarray, chunk: int = 256) -> None:
        """Make sure embeddings and rebinned flux exist for ``rows`` (reads what is missing)."""
        rows = np.unique(np.asarray(rows, np.int64))
        missing = rows[~self.has_embedding[rows] | (self.feature_start[rows] < 0)]
        if not missing.size:
            return
        bar = tqdm(total=missing.size, desc="embed + rebin", unit="spectra", disable=not self.progress)
        last_save = time.time()
        pending: list[tuple[int, Spectrum]] = []

        def flush():
            need = [(r, s) for r, s in pending if not self.has_embedding[r]]
            if need:
                self.embeddings[[r for r, _ in need]] = self.tok.embed([s for _, s in need], batch_size=32)
                self.embedded_now += len(need)
            pending.clear()

        for row, spectrum in self.read(missing):
            if self.feature_start[row] < 0:
                start, values = rebin(spectrum)
                self.feature_start[row] = start
                self.features[row] = values
            pending.append((row, spectrum))
            if len(pending) >= chunk:
                flush()
                bar.update(chunk)
                if time.time() - last_save > SAVE_EVERY_S:
                    self.save_caches(features=False)  # embeddings are the expensive part
                    last_save = time.time()
        n_last = len(pending)
        flush()
        bar.update(n_last)
        bar.close()
        self.save_caches()

    # -- access ------------------------------------------------------------------------

    def loaded(self, rows: np.ndarray) -> np.ndarray:
        """The subset of ``rows`` that has an embedding (unreadable rows drop out)."""
        rows = np.asarray(rows, np.int64)
        return rows[self.has_embedding[rows] & (self.feature_start[rows] >= 0)]

    def embed(self, rows: np.ndarray) -> np.ndarray:
        return self.embeddings[np.asarray(rows, np.int64)]

    def coverage(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last+1 grid bin covered by each row."""
        starts = self.feature_start[rows]
        ends = starts + np.array([self.features[int(r)].size for r in rows], np.int64)
        return starts, ends

    def flux(self, rows: np.ndarray, columns: slice, bin_factor: int = 1) -> np.ndarray:
        """Rebinned flux on grid bins ``columns``, each row divided by its median there.

        Bins a row does not cover take its nearest covered value (the common
        range is chosen so that this touches only a few percent of rows).
        ``bin_factor`` averages that many adjacent bins to bound the feature count.
        """
        lo, hi = columns.start, columns.stop
        out = np.empty((len(rows), hi - lo), np.float32)
        for i, row in enumerate(np.asarray(rows, np.int64)):
            start, values = self.feature_start[row], self.features[int(row)]
            index = np.clip(np.arange(lo, hi) - start, 0, max(values.size - 1, 0))
            out[i] = values[index] if values.size else 1.0
        n = (hi - lo) // bin_factor * bin_factor
        out = out[:, :n].reshape(len(rows), -1, bin_factor).mean(axis=2)
        level = np.median(out, axis=1, keepdims=True)
        level = np.where(np.abs(level) > 0, np.abs(level), 1.0)
        return (out / level).astype(np.float32)

    def select(self, split: str | None = None, cap: int | None = None, seed: int = 0,
               **equal) -> np.ndarray:
        """Table rows matching column == value (and split), at most ``cap`` drawn at random."""
        keep = np.ones(len(self.table), bool)
        if split is not None:
            keep &= (self.table["split"] == split).to_numpy()
        for column, value in equal.items():
            values = value if isinstance(value, (list, tuple, set)) else [value]
            keep &= self.table[column].isin(values).to_numpy()
        rows = np.flatnonzero(keep)
        return draw(rows, cap, seed, self.table["object_id"].to_numpy()[rows])


def draw(rows: np.ndarray, cap: int | None, seed: int, object_ids=None) -> np.ndarray:
    """At most ``cap`` of ``rows`` (sorted), the same ones for the same seed.

    With ``object_ids`` the choice goes by a hash of the object id, so capped
    samples of two instruments keep the same objects (and their pairs).
    """
    rows = np.asarray(rows, np.int64)
    if cap is None or rows.size <= cap:
        return rows
    if object_ids is None:
        return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))
    scores = np.array([zlib.crc32(f"{seed}:{key}".encode()) for key in object_ids], np.int64)
    return np.sort(rows[np.argsort(scores, kind="stable")[:cap]])


def finite(table: pd.DataFrame, rows: np.ndarray, columns) -> np.ndarray:
    """The rows whose ``columns`` are all finite numbers."""
    values = table.loc[rows, list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    return np.asarray(rows)[np.isfinite(values).all(axis=1)]
