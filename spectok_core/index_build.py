"""Building an index folder: embed a corpus, write FAISS, metadata, map and display copies.

The layout of the folder is described in :mod:`spectok_core.index`, which reads it.
A build runs in a hidden work folder beside ``out`` (``.NAME.building``): the
embeddings are saved there chunk by chunk, so running the same build again after an
interruption embeds only what is missing; the finished index is assembled in
``.NAME.building/stage`` and renamed onto ``out`` at the very end, so a crash never
leaves a half index and never damages an old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .index import (
    AIR_LINEAR,
    DATA_FILES,
    FORMAT_VERSION,
    LINEAR,
    LOG,
    METADATA_COLUMNS,
    ROW_DTYPE,
    SEGMENT_DTYPE,
    SpectrumIndex,
    _resolve_tokenizer,
    _tidy_metadata,
    grid_wave,
    select_demo,
    select_rows,
)
from .index_check import file_records
from .spectrum import Spectrum, SpectrumError

EXACT_LIMIT = 200_000  # up to this many vectors the index is exact (IndexFlatIP)

APPROX_FACTORY = "HNSW32,Flat"

TARGET_RECALL = 0.97  # recall@10 the approximate index is tuned to at build time

CHUNK_SIZE = 512  # spectra per resumable embedding chunk

UMAP_EPOCHS = 200  # umap-learn's default for large data; plenty for a browsing map

MAX_SEGMENTS = 16



# -- reading corpus rows ------------------------------------------------------------------------


def _read_rows(corpus: Path, shard: str, rows: np.ndarray, surveys: Sequence[str]) -> list:
    """Spectra of some rows of one shard (None for a row that is not a valid spectrum)."""
    import h5py

    from .io import mmu
    from .spectrum import sigma_to_ivar

    order = np.argsort(rows)
    wanted = rows[order]
    lo, hi = int(wanted[0]), int(wanted[-1]) + 1
    # A dense run is one contiguous read; scattered rows use h5py's point selection.
    dense = hi - lo <= 2 * len(wanted)

    def take(dataset) -> np.ndarray:
        return dataset[lo:hi][wanted - lo] if dense else dataset[wanted]

    with h5py.File(corpus / shard, "r") as h5:
        wave = take(h5["spectrum_lambda"]).astype(np.float64) * mmu._wave_factor(h5)
        flux = take(h5["spectrum_flux"]).astype(np.float64)
        ivar_name, sigma_name = mmu._first(h5, mmu.IVAR_NAMES), mmu._first(h5, mmu.SIGMA_NAMES)
        if ivar_name:
            ivar = take(h5[ivar_name]).astype(np.float64)
        elif sigma_name:
            ivar = sigma_to_ivar(take(h5[sigma_name]))
        else:
            ivar = np.ones_like(flux)
        if "spectrum_mask" in h5:
            mask = take(h5["spectrum_mask"]) != 0
        elif "spectrum_bitmask" in h5:
            mask = (take(h5["spectrum_bitmask"]).astype(np.int64) & mmu.APOGEE_BAD_BITS) != 0
        else:
            mask = np.zeros(flux.shape, bool)
        default_survey = str(mmu.plain(h5.attrs.get("survey", "unknown")) or "unknown")
    from .surveys import SURVEYS

    out: list[Spectrum | None] = [None] * len(rows)
    for i, j in enumerate(order):
        survey = surveys[j] if surveys[j] in SURVEYS else default_survey
        try:
            parts = mmu._unpad(wave[i], flux[i], ivar[i], mask[i])  # drop the shard's padding
            out[j] = Spectrum(*parts, survey=survey if survey in SURVEYS else "unknown")
        except SpectrumError:
            pass
    return out


# -- the display copy: float16 flux, packed masks, grids as segments --------------------------


def _regular(wave: np.ndarray) -> tuple[int, float, float] | None:
    """(kind, start, step) when ``wave`` is one regular grid, else None."""
    from .spectrum import air_to_vacuum

    n = len(wave)
    if n < 2:
        return None
    tolerance = 1e-3 * np.diff(wave).min()  # far below what a plot can show
    air = wave.copy()
    for _ in range(3):  # the exact inverse of air_to_vacuum, so the grid round-trips
        air = wave * air / air_to_vacuum(air)
    for kind, axis in ((LINEAR, wave), (LOG, np.log(wave)), (AIR_LINEAR, air)):
        step = (axis[-1] - axis[0]) / (n - 1)
        if np.max(np.abs(grid_wave(kind, axis[0], step, n) - wave)) <= tolerance:
            return kind, float(axis[0]), float(step)
    return None


def describe_grid(wave: np.ndarray) -> list[tuple[int, float, float, int]]:
    """The grid as regular segments (kind, start, step, n); [] when it is irregular.

    One segment for a single-arm grid; a grid with gaps (the arms of LAMOST MRS,
    APOGEE's chips) is cut at them and each piece must be regular on its own.
    """
    whole = _regular(wave)
    if whole:
        return [(*whole, len(wave))]
    steps = np.diff(wave)
    cuts = np.flatnonzero(steps > 5 * np.median(steps)) + 1
    if not 0 < len(cuts) < MAX_SEGMENTS:
        return []
    segments = []
    for piece in np.split(wave, cuts):
        regular = _regular(piece)
        if regular is None:
            return []
        segments.append((*regular, len(piece)))
    return segments


def _pack_display(spectra: Sequence[Spectrum]) -> dict[str, np.ndarray]:
    """One chunk's display copies: float16 flux / scale, packed masks, compact grids."""
    rows = np.zeros(len(spectra), ROW_DTYPE)
    flux_parts, mask_parts, wave_parts, segments = [], [], [], []
    flux_at = mask_at = wave_at = 0
    for i, spectrum in enumerate(spectra):
        good = spectrum.good
        scale = float(np.median(np.abs(spectrum.flux[good])))
        scale = scale if np.isfinite(scale) and scale > 0 else 1.0
        # float16 overflows at 65504; an emission line 60,000 times the median is clipped.
        flux_parts.append(np.clip(spectrum.flux / scale, -65000, 65000).astype(np.float16))
        packed = np.packbits(spectrum.mask)
        mask_parts.append(packed)
        pieces = describe_grid(spectrum.wave)
        wave_offset = -1
        if not pieces:
            wave_parts.append(spectrum.wave.astype(np.float32))
            wave_offset = wave_at
            wave_at += len(spectrum)
        rows[i] = (flux_at, len(spectrum), mask_at, wave_offset, len(segments), len(pieces), scale,
                   spectrum.median_snr)
        segments.extend(pieces)
        flux_at += len(spectrum)
        mask_at += len(packed)
    return {
        "rows": rows,
        "flux": np.concatenate(flux_parts) if flux_parts else np.zeros(0, np.float16),
        "mask": np.concatenate(mask_parts) if mask_parts else np.zeros(0, np.uint8),
        "wave": np.concatenate(wave_parts) if wave_parts else np.zeros(0, np.float32),
        "segments": np.array(segments, dtype=SEGMENT_DTYPE),
    }


# -- embedding in resumable chunks ----------------------------------------------------------------


def _embed(tokenizer, spectra: list[Spectrum], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and a keep-mask: a spectrum the model refuses is skipped, not fatal."""
    try:
        return tokenizer.embed(spectra, batch_size=batch_size), np.ones(len(spectra), bool)
    except SpectrumError:
        out = np.zeros((len(spectra), tokenizer.config.d_embed), np.float32)
        keep = np.zeros(len(spectra), bool)
        for i, spectrum in enumerate(spectra):
            try:
                out[i] = tokenizer.embed([spectrum], batch_size=1)[0]
                keep[i] = True
            except SpectrumError:
                continue
        return out, keep


def _embed_chunk(corpus: Path, plan: pd.DataFrame, tokenizer, batch_size: int,
                 timings: Counter | None = None) -> dict:
    timings = Counter() if timings is None else timings
    tick = time.perf_counter()
    spectra, positions = [], []
    for shard, group in plan.groupby("shard", sort=False):
        got = _read_rows(corpus, shard, group["shard_row"].to_numpy(),
                         group["survey"].astype("string").fillna("unknown").tolist())
        for position, spectrum in zip(group.index, got):
            if spectrum is not None:
                spectra.append(spectrum)
                positions.append(position)
    timings["read_corpus"] += time.perf_counter() - tick
    tick = time.perf_counter()
    embeddings, keep = _embed(tokenizer, spectra, batch_size) if spectra else \
        (np.zeros((0, tokenizer.config.d_embed), np.float32), np.zeros(0, bool))
    spectra = [s for s, k in zip(spectra, keep) if k]
    timings["embed_model"] += time.perf_counter() - tick
    tick = time.perf_counter()
    display = _pack_display(spectra)
    timings["display_copy"] += time.perf_counter() - tick
    return {"positions": np.asarray(positions, np.int64)[keep], "embeddings": embeddings[keep],
            "surveys": np.array([s.survey for s in spectra], dtype="U32"), **display}


def _part(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process picks."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")


def _save_npz(path: Path, arrays: dict) -> None:
    tmp = _part(path)
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part(path)
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


def _assemble(chunks: list[Path], stage: Path) -> tuple[np.ndarray, ...]:
    """Concatenate the chunk files into the display arrays.

    Returns the plan positions kept, their embeddings, display rows and survey keys.
    """
    totals = Counter()
    for path in chunks:
        with np.load(path, allow_pickle=False) as data:
            for name in ("flux", "mask", "wave"):
                totals[name] += data[name].size
    (stage / "display").mkdir(parents=True, exist_ok=True)
    dtypes = {"flux": np.float16, "mask": np.uint8, "wave": np.float32}
    outputs = {
        name: np.lib.format.open_memmap(stage / "display" / f"{name}.npy", "w+", dtypes[name],
                                        (totals[name],))
        for name in dtypes
    }
    at = Counter()
    positions, embeddings, rows, surveys, segments = [], [], [], [], []
    n_segments = 0
    for path in chunks:
        with np.load(path, allow_pickle=False) as data:
            chunk_rows = data["rows"].copy()
            chunk_rows["flux_offset"] += at["flux"]
            chunk_rows["mask_offset"] += at["mask"]
            explicit = chunk_rows["wave_offset"] >= 0
            chunk_rows["wave_offset"][explicit] += at["wave"]
            chunk_rows["segment_offset"] += n_segments
            segments.append(data["segments"])
            n_segments += len(data["segments"])
            for name, out in outputs.items():
                part = data[name]
                out[at[name] : at[name] + part.size] = part
                at[name] += part.size
            positions.append(data["positions"])
            embeddings.append(data["embeddings"])
            rows.append(chunk_rows)
            surveys.append(data["surveys"])
    for out in outputs.values():
        out.flush()
    del outputs
    _save_npy(stage / "display" / "segments.npy", np.concatenate(segments))
    return (np.concatenate(positions), np.concatenate(embeddings), np.concatenate(rows),
            np.concatenate(surveys))


# -- FAISS and the map -----------------------------------------------------------------------------


def _build_faiss(embeddings: np.ndarray, factory: str) -> tuple[Any, dict]:
    """The FAISS index, trained and filled; approximate ones tuned to TARGET_RECALL."""
    import faiss

    n, dim = embeddings.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise SpectrumError(
            f"FAISS cannot make index {factory!r} ({str(err).splitlines()[-1][:120]}); "
            "use e.g. 'Flat', 'HNSW32,Flat' or 'IVF1024,PQ32'"
        ) from None
    if not index.is_trained:
        rng = np.random.default_rng(0)
        sample = embeddings[np.sort(rng.choice(n, min(n, 200_000), replace=False))]
        try:
            index.train(sample)
        except RuntimeError as err:
            raise SpectrumError(
                f"FAISS cannot train {factory!r} on {n} vectors ({str(err).splitlines()[-1][:120]}); "
                "choose fewer lists/centroids or the exact 'Flat'"
            ) from None
    for start in range(0, n, 100_000):
        index.add(np.ascontiguousarray(embeddings[start : start + 100_000]))
    return index, tune_search(index, embeddings, factory)


def tune_search(index, embeddings: np.ndarray, factory: str, target: float = TARGET_RECALL,
                n_queries: int = 300, seed: int = 0) -> dict:
    """The smallest efSearch / nprobe whose recall@10 against exact search reaches ``target``.

    Queries are indexed vectors whose own match is left out of both answers: as
    hard as a new spectrum like those indexed (finding oneself is too easy).
    """
    import faiss

    name = "efSearch" if "HNSW" in factory else "nprobe" if "IVF" in factory else None
    if name is None or len(embeddings) < 2:
        return {}
    rng = np.random.default_rng(seed)
    n = len(embeddings)
    ids = np.sort(rng.choice(n, min(n, n_queries), replace=False))
    queries = np.ascontiguousarray(embeddings[ids])
    k = min(10, n - 1)
    _, truth = faiss.knn(queries, np.ascontiguousarray(embeddings), k + 1, metric=faiss.METRIC_INNER_PRODUCT)

    def others(found: np.ndarray) -> list[set]:
        return [set([i for i in row if i != own and i >= 0][:k]) for row, own in zip(found, ids)]

    truth_sets = others(truth)
    space = faiss.ParameterSpace()
    values = [16, 32, 64, 128, 256, 512, 1024] if name == "efSearch" else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    chosen = {name: values[-1], "recall_at_10": None}
    for value in values:
        space.set_index_parameter(index, name, value)
        _, found = index.search(queries, k + 1)
        recall = float(np.mean([len(a & b) / k for a, b in zip(others(found), truth_sets)]))
        chosen = {name: value, "recall_at_10": round(recall, 4)}
        if recall >= target:
            break
    space.set_index_parameter(index, name, chosen[name])
    return chosen


def _fit_map(embeddings: np.ndarray, use_umap: bool, progress: bool) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """2-D map coordinates: UMAP (cosine, seeded); PCA when UMAP is off or there are too few points."""
    n = len(embeddings)
    if use_umap and n >= 10:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs forced to 1 by random_state, etc.
            import umap

            n_neighbors = min(15, n - 1)
            n_epochs = UMAP_EPOCHS
            if progress:
                print(f"fitting the UMAP map of {n:,} embeddings", file=sys.stderr)
            reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine",
                                random_state=0, n_epochs=n_epochs, init="spectral" if n > 50 else "random")
            coords = reducer.fit_transform(embeddings).astype(np.float32)
        info = {"method": "umap", "n_neighbors": n_neighbors, "min_dist": 0.1, "metric": "cosine",
                "n_epochs": n_epochs, "random_state": 0, "a": float(reducer._a),
                "b": float(reducer._b), "umap_version": umap.__version__}
        return coords, info, None
    mean = embeddings.mean(axis=0, dtype=np.float64)
    centred = embeddings - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, :2].T
    components *= np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])[:, None]
    coords = (centred @ components.T).astype(np.float32)
    return coords, {"method": "pca"}, np.vstack([mean, components]).astype(np.float32)


# -- the build ------------------------------------------------------------------------------------


def _plan(corpus: Path, where, max_spectra) -> pd.DataFrame:
    from .data import corpus as corpus_module

    table = corpus_module.metadata(corpus, METADATA_COLUMNS).rename(columns={"row": "shard_row"})
    table = _tidy_metadata(table)
    table = table[select_rows(table, where)]
    if max_spectra is not None and len(table) > max_spectra:
        table = table.iloc[select_demo(table, max_total=int(max_spectra))]
    if not len(table):
        raise SpectrumError(f"no spectra in {corpus} match {dict(where or {})}; loosen the selection")
    return table.reset_index(drop=True)


def _plan_key(plan: pd.DataFrame, corpus_hash: str, weights_hash: str) -> str:
    digest = hashlib.sha256(f"{FORMAT_VERSION}:{CHUNK_SIZE}:{corpus_hash}:{weights_hash}\n".encode())
    digest.update("\n".join(plan["shard"].astype(str) + ":" + plan["shard_row"].astype(str)).encode())
    return digest.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    tmp = _part(path)
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _open_work(work: Path, key: str, n: int, progress: bool) -> None:
    """The hidden work folder of a build: kept from an interrupted run of the same plan."""
    plan_file = work / "plan.json"
    if work.exists():
        try:
            same = json.loads(plan_file.read_text()).get("key") == key
        except (OSError, ValueError):
            same = False
        if not same:
            if progress:
                print(f"discarding an unfinished build in {work} (other corpus, model or selection)",
                      file=sys.stderr)
            shutil.rmtree(work)
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    _write_json(plan_file, {"key": key, "n": n})


def _embed_all(corpus: Path, plan: pd.DataFrame, work: Path, tokenizer, batch_size: int,
               progress: bool, timings: Counter) -> list[Path]:
    """Embed the plan chunk by chunk, skipping chunks an earlier run saved; returns the chunk files."""
    from tqdm import tqdm

    n_chunks = -(-len(plan) // CHUNK_SIZE)
    chunk_files = [work / "chunks" / f"chunk-{c:05d}.npz" for c in range(n_chunks)]
    done = sum(p.is_file() for p in chunk_files)
    bar = tqdm(total=len(plan), initial=min(len(plan), done * CHUNK_SIZE), unit="spectra",
               desc="embedding", disable=not progress)
    for c, path in enumerate(chunk_files):
        if path.is_file():
            continue
        part = plan.iloc[c * CHUNK_SIZE : (c + 1) * CHUNK_SIZE]
        _save_npz(path, _embed_chunk(corpus, part, tokenizer, batch_size, timings))
        bar.update(len(part))
    bar.close()
    return chunk_files


def _counts(metadata: pd.DataFrame) -> dict:
    counts = {
        name: {str(k): int(v) for k, v in metadata[name].astype("string").fillna("-").value_counts().items()}
        for name in ("survey", "origin", "class")
    }
    pairs = metadata.groupby(["survey", "origin"], observed=True).size()
    counts["survey_origin"] = {f"{s}|{o}": int(v) for (s, o), v in pairs.items()}
    return counts


def _swap_into_place(stage: Path, out: Path) -> None:
    """Move the finished index to ``out``; an old index there stays whole until this moment."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.parent / f".{out.name}.previous"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def build_lock(out: Path):
    """An exclusive lock on building ``out`` (``.NAME.lock`` beside it), or a SpectrumError.

    Two builds into one folder would share its work folder; the second stops at once
    and says so. The lock is the operating system's (flock), so it ends with the
    process that held it, however that process ends.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    handle = open(lock_path, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        handle.close()
        raise SpectrumError(
            f"another `spectok index build` is writing {out} (it holds {lock_path}); wait for it "
            "to finish, or choose another --out"
        ) from None
    try:
        yield lock_path
    finally:
        handle.close()  # releases the lock; the empty lock file stays, so no build races its removal


def build(corpus: str | os.PathLike, out: str | os.PathLike, tokenizer=None, *,
          factory: str | None = None, batch_size: int = 64, where: Mapping[str, Any] | None = None,
          max_spectra: int | None = None, progress: bool = True, umap: bool = True) -> SpectrumIndex:
    """Embed a corpus and write an index folder at ``out``; see :meth:`SpectrumIndex.build`.

    Holds :func:`build_lock` on ``out`` throughout: a second build into the same
    folder stops with a SpectrumError instead of sharing the work folder.
    """
    out = Path(out)
    with build_lock(out):
        return _build(corpus, out, tokenizer, factory=factory, batch_size=batch_size, where=where,
                      max_spectra=max_spectra, progress=progress, umap=umap)


def _build(corpus: str | os.PathLike, out: Path, tokenizer=None, *, factory: str | None,
           batch_size: int, where: Mapping[str, Any] | None, max_spectra: int | None,
           progress: bool, umap: bool) -> SpectrumIndex:
    import faiss

    from . import __version__
    from .data.corpus import corpus_hash as hash_corpus

    corpus, out = Path(corpus), Path(out)
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise SpectrumError(f"{out} exists and is not an index folder; choose a new --out "
                            "(a build replaces the folder at --out)")
    tokenizer = _resolve_tokenizer(tokenizer)
    if not tokenizer.weights_hash:
        raise SpectrumError(
            "the model has no saved weights, so the index could not say which model made it; "
            "save it first (tok.save(folder)) and build with Tokenizer.from_pretrained(folder)"
        )
    if not corpus.is_dir():
        raise SpectrumError(f"corpus folder {corpus} does not exist; build one with `spectok corpus build`")
    start = time.time()
    corpus_digest = hash_corpus(corpus)
    plan = _plan(corpus, where, max_spectra)
    work = out.parent / f".{out.name}.building"
    _open_work(work, _plan_key(plan, corpus_digest, tokenizer.weights_hash), len(plan), progress)
    timings: Counter = Counter()
    chunk_files = _embed_all(corpus, plan, work, tokenizer, batch_size, progress, timings)

    tick = time.perf_counter()
    stage = work / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    positions, embeddings, rows, survey_keys = _assemble(chunk_files, stage)
    if not len(positions):
        raise SpectrumError(f"none of the {len(plan)} selected spectra could be read or embedded")
    metadata = plan.iloc[positions].reset_index(drop=True)
    metadata["survey"] = pd.Categorical(survey_keys.astype(object))  # the keys the model was given
    metadata["snr"] = rows["snr"].astype(np.float64)
    metadata["n_pixels"] = rows["n_pixels"].astype(np.int64)
    metadata["wave_min"], metadata["wave_max"] = _wave_span(
        rows, np.load(stage / "display" / "segments.npy"), np.load(stage / "display" / "wave.npy"))
    timings["assemble"] += time.perf_counter() - tick

    tick = time.perf_counter()
    factory = factory or ("Flat" if len(embeddings) <= EXACT_LIMIT else APPROX_FACTORY)
    if progress:
        print(f"building the FAISS index ({factory}) of {len(embeddings):,} vectors", file=sys.stderr)
    index, search_params = _build_faiss(embeddings, factory)
    timings["faiss"] += time.perf_counter() - tick
    tick = time.perf_counter()
    coords, map_info, map_arrays = _fit_map(embeddings, umap, progress)
    timings["map"] += time.perf_counter() - tick

    tick = time.perf_counter()
    _save_npy(stage / "embeddings.npy", embeddings.astype(np.float32))
    _save_npy(stage / "coords.npy", coords)
    _save_npy(stage / "display" / "rows.npy", rows)
    if map_arrays is not None:
        _save_npy(stage / "map.npy", map_arrays)
    faiss.write_index(index, str(stage / "index.faiss"))
    metadata.to_parquet(stage / "metadata.parquet", index=False)
    files = [*DATA_FILES, *(["map.npy"] if map_arrays is not None else [])]
    manifest = {
        "format_version": FORMAT_VERSION,
        "spectok_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_id": tokenizer.model_id,
        "weights_hash": tokenizer.weights_hash,
        "corpus": str(corpus),
        "corpus_hash": corpus_digest,
        "selection": {"where": {k: list(v) if isinstance(v, (tuple, set)) else v
                                for k, v in (where or {}).items()},
                      "max_spectra": max_spectra, "selected": len(plan),
                      "skipped_unreadable": int(len(plan) - len(positions))},
        "n": int(len(embeddings)),
        "counts": _counts(metadata),
        "metric": "inner_product",
        "dimension": int(embeddings.shape[1]),
        "factory": factory,
        "search_params": search_params,
        "map": map_info,
        # This run only: a resumed build does not repeat the chunks it found.
        "seconds": {**{k: round(v, 2) for k, v in timings.items()},
                    "write": round(time.perf_counter() - tick, 2),
                    "total": round(time.time() - start, 2)},
        "files": file_records(stage, files),  # size and sha256: load checks both
    }
    _write_json(stage / "manifest.json", manifest)  # last: a folder without it is no index
    _swap_into_place(stage, out)
    shutil.rmtree(work, ignore_errors=True)
    return SpectrumIndex.load(out, tokenizer=tokenizer)


def _wave_span(rows: np.ndarray, segments: np.ndarray, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last wavelength of every display copy, without expanding the grids."""
    first, last = np.zeros(len(rows)), np.zeros(len(rows))
    regular = np.flatnonzero(rows["n_segments"] > 0)
    head = segments[rows["segment_offset"][regular]]
    tail = segments[rows["segment_offset"][regular] + rows["n_segments"][regular] - 1]
    for kind in (LINEAR, LOG, AIR_LINEAR):
        at, end = head["grid"] == kind, tail["grid"] == kind
        if at.any():
            first[regular[at]] = grid_wave(kind, head["start"][at], 0.0, 1)
        if end.any():
            axis_end = tail["start"][end] + tail["step"][end] * (tail["n_pixels"][end] - 1)
            last[regular[end]] = grid_wave(kind, axis_end, 0.0, 1)
    explicit = np.flatnonzero(rows["n_segments"] == 0)
    if explicit.size:
        at = rows["wave_offset"][explicit]
        first[explicit] = wave[at]
        last[explicit] = wave[at + rows["n_pixels"][explicit] - 1]
    return first, last

