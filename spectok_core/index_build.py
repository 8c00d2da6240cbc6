"""Building an index folder: embed spectra from any source, in parts, then FAISS, metadata and map.

The layout of the folder is described in :mod:`spectok_core.index`, which reads it;
this module depends only on the format (:mod:`.index_format`), the sources
(:mod:`.index_sources`) and the checks (:mod:`.index_check`), never on the reader.

A build runs in a hidden work folder beside ``out`` (``.NAME.building``). Its input
is planned as units of at most CHUNK_SIZE spectra (:mod:`.index_sources`); each unit
is read, embedded and saved as one part (``chunks/chunk-NNNNN.npz``, written under a
temporary name and renamed), in this process (``scheduler="local"``) or on Dask
workers (:mod:`.index_cluster`). A finished part is never redone: running the same
build again embeds only the missing ones. The index is then assembled part by part
(bounded memory: embeddings, thumbnails and display copies go straight into
memory-mapped files, metadata into Parquet row groups) in ``.NAME.building/stage``
and renamed onto ``out`` at the very end, so a crash never leaves a half index and
never damages an old one.

Small indexes (up to DISPLAY_LIMIT spectra) keep float16 display copies of every
spectrum and exact FAISS search; larger ones show neighbours from their sources (or
a stored thumbnail), keep float16 embeddings for exact re-ranking, and use IVF-PQ
trained on a sample, with ``nprobe`` tuned at build time to recall@10 >= 0.95.
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

from .index_check import file_records
from .index_format import (
    AIR_LINEAR,
    DATA_FILES,
    DEMO_SIZE,
    FORMAT_VERSION,
    INDEX_ROW,
    LINEAR,
    LOG,
    METADATA_COLUMNS,
    ROW_DTYPE,
    SEGMENT_DTYPE,
    SOURCE_DATA_FILES,
    THUMB_PIXELS,
    _resolve_tokenizer,
    _tidy_metadata,
    exact_knn,
    grid_wave,
    rerank_search,
    select_rows,
)
from .index_sources import (
    column_kind,
    corpus_units,
    file_units,
    is_corpus,
    pack_records,
    read_unit,
    source_roots,
    thumbnail,
    unit_size,
)
from .spectrum import Spectrum, SpectrumError

EXACT_LIMIT = 200_000  # up to this many vectors the index is exact (IndexFlatIP)

APPROX_FACTORY = "HNSW32,Flat"

TARGET_RECALL = 0.97  # recall@10 an HNSW index is tuned to at build time
IVF_TARGET_RECALL = 0.95  # recall@10 an IVF index is tuned to (issue 14)

CHUNK_SIZE = 512  # spectra per resumable embedding chunk (one part)

DISPLAY_LIMIT = 200_000  # up to this many planned spectra an index keeps display copies
MIN_DISPLAY_PIXELS = 64

RERANK = 8  # IVF-PQ: k * RERANK candidates re-scored exactly from float16 embeddings
RERANK_CHOICES = (8, 32, 128)  # deeper candidate lists the build tries when 8 misses the target

TRAIN_SAMPLE = 256 * 1024  # vectors an IVF / PQ index is trained on, at most

MAP_SAMPLE = 50_000  # UMAP is fitted on this many points; the rest are placed by neighbours

ADD_BATCH = 100_000  # vectors added to FAISS at a time (from the memory-mapped embeddings)

UMAP_EPOCHS = 200  # umap-learn's default for large data; plenty for a browsing map

MAX_SEGMENTS = 16

MAX_ERRORS_LISTED = 10_000  # unreadable sources listed in the manifest (all are counted)


def ivf_factory(n: int, dim: int) -> str:
    """The IVF-PQ factory for n vectors: about 4 sqrt(n) lists, 4 dimensions per PQ byte.

    ``np``: no polysemous training, which took 109 s against 17 s for 12,800 training
    vectors here and serves only Hamming-filtered search, which spectok does not use.
    No OPQ by default: its rotation took 194 s to train on the same sample (one core),
    and the exact re-ranking from float16 embeddings already brings recall@10 to the
    target; ``--factory OPQ32,IVF4096,PQ32np`` asks for it where training time is cheap.
    """
    nlist = int(2 ** round(np.log2(max(64.0, 4 * np.sqrt(n)))))
    nlist = min(nlist, max(64, n // 39))  # FAISS wants >= 39 training points per list
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return f"IVF{nlist},PQ{m}np"


# -- a representative mix -------------------------------------------------------------------------

#: Surveys whose real spectra a demo selection always takes in whole (issue 13: "SDSS + real").
SURVEY_REAL = ("sdss", "boss", "desi", "lamost_lrs", "lamost_mrs", "apogee")


def select_demo(metadata: pd.DataFrame, n_per_group: int | None = None,
                max_total: int = DEMO_SIZE, seed: int = 0) -> np.ndarray:
    """Positions of a representative mix: every (survey, class) group, real spectra first.

    Groups take turns, one spectrum each per round, until ``max_total`` is reached
    or each group has given ``n_per_group``; so small groups come in whole and no
    large group crowds out the rest. Within a group real spectra come before
    simulated ones, each in a seeded random order. Real spectra of the big surveys
    (:data:`SURVEY_REAL`) all come in before the mix, whatever their group.
    """
    rng = np.random.default_rng(seed)
    survey = metadata["survey"].astype("string").fillna("unknown").to_numpy()
    label = metadata["class"].astype("string").fillna("-").to_numpy() if "class" in metadata else \
        np.full(len(metadata), "-")
    real = (metadata["origin"].astype("string").fillna("") == "real").to_numpy() \
        if "origin" in metadata else np.zeros(len(metadata), bool)
    first_in = real & np.isin(survey, SURVEY_REAL)
    taken: list[int] = [int(i) for i in rng.permutation(np.flatnonzero(first_in))[:max_total]]
    if len(taken) >= max_total:
        return np.sort(np.array(taken, dtype=np.int64))
    queues = []
    groups = pd.DataFrame({"s": survey, "c": label}).groupby(["s", "c"], sort=True).indices
    for _, positions in sorted(groups.items()):
        positions = np.asarray(positions)
        positions = positions[~first_in[positions]]
        first = rng.permutation(positions[real[positions]])
        rest = rng.permutation(positions[~real[positions]])
        queues.append(np.concatenate([first, rest]))
    limit = max(len(q) for q in queues) if queues else 0
    if n_per_group is not None:
        limit = min(limit, n_per_group)
    for turn in range(limit):
        for queue in queues:
            if turn < len(queue):
                taken.append(int(queue[turn]))
                if len(taken) >= max_total:
                    return np.sort(np.array(taken, dtype=np.int64))
    return np.sort(np.array(taken, dtype=np.int64))



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


def arm_cuts(wave: np.ndarray) -> np.ndarray:
    """Indices where a new arm starts: after a step over 5 x the median (LAMOST MRS, APOGEE chips)."""
    steps = np.diff(wave)
    return np.flatnonzero(steps > 5 * np.median(steps)) + 1


def describe_grid(wave: np.ndarray) -> list[tuple[int, float, float, int]]:
    """The grid as regular segments (kind, start, step, n); [] when it is irregular.

    One segment for a single-arm grid; a grid with gaps (the arms of LAMOST MRS,
    APOGEE's chips) is cut at them and each piece must be regular on its own.
    """
    whole = _regular(wave)
    if whole:
        return [(*whole, len(wave))]
    cuts = arm_cuts(wave)
    if not 0 < len(cuts) < MAX_SEGMENTS:
        return []
    segments = []
    for piece in np.split(wave, cuts):
        regular = _regular(piece)
        if regular is None:
            return []
        segments.append((*regular, len(piece)))
    return segments


def binned_for_display(spectrum: Spectrum, max_pixels: int | None) -> Spectrum:
    """A copy with at most about ``max_pixels`` pixels, for plots: bins of m adjacent pixels.

    Each arm (the pieces between gaps, as in :func:`describe_grid`) is binned on
    its own, so no bin spans a gap; flux is the inverse-variance-weighted mean of a
    bin's good pixels, ivar their sum, and a bin without good pixels is masked. The
    mean wavelength of m pixels of a linear or log-linear grid is again linear or
    log-linear, so the binned grid stays compact. Up to m - 1 pixels at the red end
    of each arm are dropped. A spectrum already short enough, or one that binning would leave
    with too few good pixels, is returned as it is.
    """
    n = len(spectrum)
    if not max_pixels or n <= max_pixels:
        return spectrum
    m = -(-n // max_pixels)
    weight = np.where(spectrum.good, spectrum.ivar, 0.0)
    parts: list[tuple[np.ndarray, ...]] = []
    for piece in np.split(np.arange(n), arm_cuts(spectrum.wave)):
        k = max(1, len(piece) // m)
        take = piece[: k * m] if len(piece) >= m else piece
        width = len(take) // k
        w = weight[take].reshape(k, width)
        f = spectrum.flux[take].reshape(k, width)
        total = w.sum(axis=1)
        flux = np.where(total > 0, (w * f).sum(axis=1) / np.where(total > 0, total, 1.0), f.mean(axis=1))
        parts.append((spectrum.wave[take].reshape(k, width).mean(axis=1), flux, total, total <= 0))
    wave, flux, ivar, mask = (np.concatenate(column) for column in zip(*parts))
    meta = {**spectrum.meta, "display_binned": m}
    try:
        return Spectrum(wave, flux, ivar, mask, spectrum.survey, meta)
    except SpectrumError:  # too few good bins to be a spectrum: keep every pixel instead
        return spectrum


def _pack_display(spectra: Sequence[Spectrum], max_pixels: int | None = None) -> dict[str, np.ndarray]:
    """One chunk's display copies: float16 flux / scale, packed masks, compact grids
    (binned to at most about ``max_pixels`` pixels each when given)."""
    rows = np.zeros(len(spectra), ROW_DTYPE)
    flux_parts, mask_parts, wave_parts, segments = [], [], [], []
    flux_at = mask_at = wave_at = 0
    for i, spectrum in enumerate(spectra):
        spectrum = binned_for_display(spectrum, max_pixels)
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


# -- embedding one unit into a part -----------------------------------------------------------------


def _part_columns(unit: dict) -> list[str]:
    """Metadata columns of a part: the corpus plan's, or the catalogue ones plus the source."""
    if unit["kind"] == "corpus":
        return list(unit["meta"])
    return [*METADATA_COLUMNS, "source", "source_row"]


def _embed_chunk(unit: dict, tokenizer, batch_size: int, display: str = "copies",
                 timings: Counter | None = None, where: Mapping[str, Any] | None = None) -> dict:
    """Read one unit, embed it and return its part: arrays only, ready for np.savez."""
    timings = Counter() if timings is None else timings
    tick = time.perf_counter()
    spectra, records, errors = read_unit(unit)
    if where and unit["kind"] != "corpus" and spectra:  # a corpus plan is filtered beforehand
        table = _tidy_metadata(pd.DataFrame.from_records(records, columns=_part_columns(unit)))
        keep = select_rows(table, where)
        spectra = [s for s, k in zip(spectra, keep) if k]
        records = [r for r, k in zip(records, keep) if k]
    timings["read"] += time.perf_counter() - tick
    tick = time.perf_counter()
    embeddings, keep = _embed(tokenizer, spectra, batch_size) if spectra else \
        (np.zeros((0, tokenizer.config.d_embed), np.float32), np.zeros(0, bool))
    for record, kept in zip(records, keep):
        if not kept:
            where_from = record.get("source") or f"{record.get('shard')}:{record.get('shard_row')}"
            errors.append((str(where_from), "the model refused it (see Tokenizer.embed)"))
    spectra = [s for s, k in zip(spectra, keep) if k]
    records = [r for r, k in zip(records, keep) if k]
    for record, spectrum in zip(records, spectra):
        record["survey"] = spectrum.survey  # the key the model was given
    timings["embed_model"] += time.perf_counter() - tick
    tick = time.perf_counter()
    part = {
        "embeddings": embeddings[keep].astype(np.float32),
        **{f"meta__{k}": v for k, v in pack_records(records, _part_columns(unit)).items()},
        "snr": np.array([s.median_snr for s in spectra], np.float64),
        "n_pixels": np.array([len(s) for s in spectra], np.int64),
        "wave_min": np.array([s.wave[0] for s in spectra], np.float64),
        "wave_max": np.array([s.wave[-1] for s in spectra], np.float64),
        "error_source": np.array([e[0] for e in errors], dtype=str),
        "error_reason": np.array([e[1] for e in errors], dtype=str),
        "n_planned": np.array(unit_size(unit), np.int64),
    }
    if display == "copies":
        part.update(_pack_display(spectra, unit.get("display_pixels")))
    else:
        thumbs = [thumbnail(s) for s in spectra]
        part["thumbs"] = np.array([t for t, _ in thumbs], np.float16).reshape(-1, THUMB_PIXELS)
        part["flux_scale"] = np.array([s for _, s in thumbs], np.float64)
    timings["display_copy"] += time.perf_counter() - tick
    return part


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


# -- assembling the parts, with bounded memory ---------------------------------------------------


def _arrow_schema(columns: Sequence[str], display: str):
    import pyarrow as pa

    kinds = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
    fields = [pa.field(name, kinds[column_kind(name)]) for name in columns]
    fields += [pa.field("snr", pa.float64()), pa.field("n_pixels", pa.int64()),
               pa.field("wave_min", pa.float64()), pa.field("wave_max", pa.float64())]
    if display == "source":
        fields += [pa.field("flux_scale", pa.float64()), pa.field(INDEX_ROW, pa.int64())]
    return pa.schema(fields)


def _part_table(data, schema, first_row: int):
    import pyarrow as pa

    arrays = []
    for field in schema:
        name = field.name
        if name == INDEX_ROW:
            arrays.append(pa.array(np.arange(first_row, first_row + len(data["snr"])), pa.int64()))
            continue
        values = data[f"meta__{name}"] if f"meta__{name}" in data else data[name]
        if pa.types.is_string(field.type):
            text = values.astype(str)
            arrays.append(pa.array(text, pa.string(), mask=(text == "") | (text == "None")))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _count_into(counts: dict, table) -> None:
    frame = table.select(["survey", "origin", "class"]).to_pandas()
    for name in ("survey", "origin", "class"):
        counts[name].update(frame[name].astype("string").fillna("-").tolist())
    both = frame[frame["survey"].notna() & frame["origin"].notna()]
    counts["survey_origin"].update((both["survey"] + "|" + both["origin"]).tolist())
    known = frame[frame["survey"].notna()]  # the app's contents table, without reading the metadata
    counts["survey_class"].update((known["survey"].astype("string") + "|"
                                   + known["class"].astype("string").fillna("-")).tolist())


#: Rows per Parquet row group of metadata.parquet. Scans (filters, a column for "Random") pay
#: per group, reading some rows reads their whole groups: at 10^7 rows, groups of 512 (one per
#: part) made a filter take 15 s and a column 8.8 s; groups of 8,192 take 0.9 s and 0.2 s, and a
#: page of 10 hits still reads in milliseconds.
ROW_GROUP = 8192


def _assemble(chunks: list[Path], stage: Path, display: str, dim: int, columns: Sequence[str],
              dtype=np.float32) -> dict:
    """Write the stage's embeddings, metadata, display copies or thumbnails from the parts.

    One part is in memory at a time; everything else goes straight to memory-mapped
    arrays and Parquet row groups. Returns counts, errors and sizes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, totals = 0, Counter()
    for path in chunks:
        with np.load(path, allow_pickle=False) as data:
            n += len(data["snr"])
            if display == "copies":
                for name in ("flux", "mask", "wave"):
                    totals[name] += data[name].size
    stage.mkdir(parents=True, exist_ok=True)
    embeddings = np.lib.format.open_memmap(stage / "embeddings.npy", "w+", dtype, (n, dim))
    outputs: dict[str, np.ndarray] = {}
    if display == "copies":
        (stage / "display").mkdir(parents=True, exist_ok=True)
        dtypes = {"flux": np.float16, "mask": np.uint8, "wave": np.float32}
        outputs = {name: np.lib.format.open_memmap(stage / "display" / f"{name}.npy", "w+",
                                                   dtypes[name], (totals[name],)) for name in dtypes}
    else:
        thumbs = np.lib.format.open_memmap(stage / "thumbnails.npy", "w+", np.float16, (n, THUMB_PIXELS))
    schema = _arrow_schema(columns, display)
    writer = pq.ParquetWriter(stage / "metadata.parquet", schema)
    counts = {name: Counter() for name in ("survey", "origin", "class", "survey_origin", "survey_class")}
    errors: list[tuple[str, str]] = []
    n_errors = n_planned = 0
    at, row = Counter(), 0
    rows, segments, n_segments = [], [], 0
    pending, pending_rows = [], 0  # parts gathered into row groups of ROW_GROUP rows
    try:
        for path in chunks:
            with np.load(path, allow_pickle=False) as data:
                size = len(data["snr"])
                embeddings[row : row + size] = data["embeddings"]
                table = _part_table(data, schema, row)
                if size:
                    pending.append(table)
                    pending_rows += size
                    if pending_rows >= ROW_GROUP:
                        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)
                        pending, pending_rows = [], 0
                    _count_into(counts, table)
                n_planned += int(data["n_planned"])
                n_errors += len(data["error_source"])
                room = MAX_ERRORS_LISTED - len(errors)
                if room > 0:
                    errors.extend(zip(data["error_source"][:room].tolist(), data["error_reason"][:room].tolist()))
                if display == "copies":
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
                    rows.append(chunk_rows)
                else:
                    thumbs[row : row + size] = data["thumbs"]
                row += size
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)
    finally:
        writer.close()
    embeddings.flush()
    for out in outputs.values():
        out.flush()
    if display == "copies":
        _save_npy(stage / "display" / "segments.npy",
                  np.concatenate(segments) if segments else np.zeros(0, SEGMENT_DTYPE))
        _save_npy(stage / "display" / "rows.npy", np.concatenate(rows) if rows else np.zeros(0, ROW_DTYPE))
    else:
        thumbs.flush()
    del embeddings, outputs
    return {"n": n, "n_planned": n_planned, "n_errors": n_errors, "errors": errors,
            "counts": {k: dict(sorted(v.items())) for k, v in counts.items()}}


# -- FAISS and the map -----------------------------------------------------------------------------


def _as_f32(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block, dtype=np.float32)


def _sample_ids(n: int, size: int, seed: int = 0) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _build_faiss(embeddings: np.ndarray, factory: str, rerank: int = 0,
                 target: float | None = None) -> tuple[Any, dict]:
    """The FAISS index, trained on a sample and filled in batches; approximate ones tuned."""
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
        sample = _as_f32(embeddings[_sample_ids(n, TRAIN_SAMPLE)])
        try:
            index.train(sample)
        except RuntimeError as err:
            raise SpectrumError(
                f"FAISS cannot train {factory!r} on {n} vectors ({str(err).splitlines()[-1][:120]}); "
                "choose fewer lists/centroids or the exact 'Flat'"
            ) from None
        del sample
    for start in range(0, n, ADD_BATCH):
        index.add(_as_f32(embeddings[start : start + ADD_BATCH]))
    if target is None:
        target = IVF_TARGET_RECALL if "IVF" in factory else TARGET_RECALL
    return index, tune_search(index, embeddings, factory, target=target, rerank=rerank)


def tune_search(index, embeddings: np.ndarray, factory: str, target: float = TARGET_RECALL,
                n_queries: int = 300, seed: int = 0, rerank: int = 0) -> dict:
    """The smallest efSearch / nprobe whose recall@10 against exact search reaches ``target``.

    Queries are indexed vectors whose own match is left out of both answers: as
    hard as a new spectrum like those indexed (finding oneself is too easy). With
    ``rerank``, recall is measured after the exact re-ranking that search applies.
    """
    import faiss

    name = "efSearch" if "HNSW" in factory else "nprobe" if "IVF" in factory else None
    if name is None or len(embeddings) < 2:
        return {}
    n = len(embeddings)
    ids = _sample_ids(n, min(n, n_queries), seed)
    queries = _as_f32(embeddings[ids])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = min(10, n - 1)
    _, truth = exact_knn(queries, embeddings, k + 1)

    def others(found: np.ndarray) -> list[set]:
        return [set([i for i in row if i != own and i >= 0][:k]) for row, own in zip(found, ids)]

    truth_sets = others(truth)
    space = faiss.ParameterSpace()
    values = [16, 32, 64, 128, 256, 512, 1024] if name == "efSearch" else \
        [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if v <= max(1, _nlist(index))]
    # With re-ranking, deeper candidate lists are tried when the PQ codes alone cannot
    # bring the true neighbours into the first k * rerank (near-duplicate spectra).
    factors = [f for f in RERANK_CHOICES if f >= rerank] or [rerank] if rerank else [0]
    chosen = {name: values[-1], "recall_at_10": None}
    for factor in factors:
        for value in values:
            space.set_index_parameter(index, name, value)
            if factor:
                _, found = rerank_search(index, embeddings, queries, k + 1, factor)
            else:
                _, found = index.search(queries, k + 1)
            recall = float(np.mean([len(a & b) / k for a, b in zip(others(found), truth_sets)]))
            chosen = {name: value, "recall_at_10": round(recall, 4), **({"rerank": factor} if factor else {})}
            if recall >= target:
                space.set_index_parameter(index, name, value)
                return chosen
    space.set_index_parameter(index, name, chosen[name])
    return chosen


def _nlist(index) -> int:
    import faiss

    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        return 1024


def _fit_map(embeddings: np.ndarray, use_umap: bool, progress: bool,
             sample: int | None = None) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """2-D map coordinates: UMAP (cosine, seeded) on a sample, PCA when UMAP is off or there are too few points.

    UMAP is fitted on at most ``sample`` points (MAP_SAMPLE); every other point is
    placed at the similarity-weighted mean of its 5 nearest sample points (the
    placement :class:`~spectok_core.index.SpectrumIndex` uses for new spectra).
    PCA is fitted on the sample and projects every point exactly.
    """
    import faiss

    n = len(embeddings)
    ids = _sample_ids(n, sample or MAP_SAMPLE, seed=1)
    fit = _as_f32(embeddings[ids])
    if use_umap and len(ids) >= 10:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs forced to 1 by random_state, etc.
            import umap

            n_neighbors = min(15, len(ids) - 1)
            n_epochs = UMAP_EPOCHS
            if progress:
                print(f"fitting the UMAP map of {len(ids):,} embeddings", file=sys.stderr)
            reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine",
                                random_state=0, n_epochs=n_epochs, init="spectral" if len(ids) > 50 else "random")
            fitted = reducer.fit_transform(fit).astype(np.float32)
        info = {"method": "umap", "n_neighbors": n_neighbors, "min_dist": 0.1, "metric": "cosine",
                "n_epochs": n_epochs, "random_state": 0, "a": float(reducer._a),
                "b": float(reducer._b), "umap_version": umap.__version__, "sample": int(len(ids))}
        if len(ids) == n:
            return fitted, info, None
        coords = np.zeros((n, 2), np.float32)
        coords[ids] = fitted
        rest = np.setdiff1d(np.arange(n), ids)
        flat = faiss.IndexFlatIP(fit.shape[1])
        flat.add(fit / np.linalg.norm(fit, axis=1, keepdims=True))
        for start in range(0, len(rest), ADD_BATCH):
            chunk = rest[start : start + ADD_BATCH]
            queries = _as_f32(embeddings[chunk])
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            sims, found = flat.search(queries, 5)
            weights = np.clip(sims, 1e-6, None)
            coords[chunk] = (weights[:, :, None] * fitted[found]).sum(1) / weights.sum(1, keepdims=True)
        info["placed"] = "neighbours"
        return coords, info, None
    mean = fit.mean(axis=0, dtype=np.float64)
    centred = fit - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, :2].T
    components *= np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])[:, None]
    coords = np.zeros((n, 2), np.float32)
    for start in range(0, n, ADD_BATCH):
        coords[start : start + ADD_BATCH] = (_as_f32(embeddings[start : start + ADD_BATCH]) - mean) @ components.T
    return coords, {"method": "pca", "sample": int(len(ids))}, np.vstack([mean, components]).astype(np.float32)


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


def _plan_key(units_digest: str, weights_hash: str, display: str, where) -> str:
    digest = hashlib.sha256(f"{FORMAT_VERSION}:{CHUNK_SIZE}:{units_digest}:{weights_hash}:{display}:"
                            f"{sorted((where or {}).items())!r}\n".encode())
    return digest.hexdigest()


def _corpus_digest(plan: pd.DataFrame, corpus_hash: str) -> str:
    digest = hashlib.sha256(corpus_hash.encode())
    digest.update("\n".join(plan["shard"].astype(str) + ":" + plan["shard_row"].astype(str)).encode())
    return digest.hexdigest()


def _embed_all(units: list[dict], work: Path, tokenizer, batch_size: int, display: str, progress: bool,
               timings: Counter, where, scheduler: str = "local", workers: int | None = None,
               model_dir: Path | None = None, worker_hash: str | None = None) -> list[Path]:
    """Embed every unit into its part, skipping parts an earlier run saved; returns the part files."""
    from tqdm import tqdm

    chunk_files = [work / "chunks" / f"chunk-{c:05d}.npz" for c in range(len(units))]
    todo = [(c, unit) for c, unit in enumerate(units) if not chunk_files[c].is_file()]
    total = sum(unit_size(u) for u in units)
    bar = tqdm(total=total, initial=total - sum(unit_size(u) for _, u in todo), unit="spectra",
               desc="embedding", disable=not progress)
    if scheduler == "local":
        for c, unit in todo:
            _save_npz(chunk_files[c], _embed_chunk(unit, tokenizer, batch_size, display, timings, where))
            bar.update(unit_size(unit))
    else:
        from .index_cluster import run_parts

        tick = time.perf_counter()
        run_parts([(unit, chunk_files[c]) for c, unit in todo], scheduler, workers, model_dir,
                  worker_hash or tokenizer.weights_hash, batch_size, display, where,
                  on_done=lambda unit: bar.update(unit_size(unit)))
        timings["embed_cluster"] += time.perf_counter() - tick
    bar.close()
    return chunk_files


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


def build(sources, out: str | os.PathLike, tokenizer=None, *, factory: str | None = None,
          batch_size: int = 64, where: Mapping[str, Any] | None = None, max_spectra: int | None = None,
          progress: bool = True, umap: bool = True, scheduler: str = "local", workers: int | None = None,
          display: str = "auto", rerank: int | None = None, map_sample: int | None = None,
          display_pixels: int | None = None) -> Path:
    """Embed spectra and write an index folder at ``out``; returns ``out``.

    ``sources``: a corpus folder, or survey files / folders / globs / MMU HDF5 shards
    (one or a list). ``scheduler``: "local" (this process), "dask" (a LocalCluster
    of ``workers`` processes) or a scheduler address "tcp://HOST:8786".
    ``display``: "copies" (float16 copies of every spectrum), "source" (read from
    the sources, else a thumbnail) or "auto" (copies up to DISPLAY_LIMIT spectra).
    ``rerank``: candidates per result re-scored exactly (default RERANK for IVF-PQ).
    ``display_pixels``: display copies binned to at most about this many pixels
    (:func:`binned_for_display`); None keeps every pixel.
    See :meth:`spectok_core.index.SpectrumIndex.build`.

    Holds :func:`build_lock` on ``out`` throughout: a second build into the same
    folder stops with a SpectrumError instead of sharing the work folder.
    """
    out = Path(out)
    with build_lock(out):
        _build(sources, out, tokenizer, factory=factory, batch_size=batch_size, where=where,
               max_spectra=max_spectra, progress=progress, umap=umap, scheduler=scheduler,
               workers=workers, display=display, rerank=rerank, map_sample=map_sample,
               display_pixels=display_pixels)
    return out


def _check_scheduler(scheduler: str, workers: int | None) -> None:
    if scheduler in ("local", "dask") or scheduler.startswith(("tcp://", "tls://", "ucx://")):
        if workers is not None and workers < 1:
            raise SpectrumError(f"--workers must be at least 1, got {workers}")
        return
    raise SpectrumError(f"scheduler {scheduler!r}: use 'local', 'dask' (with --workers N) or a "
                        "scheduler address such as tcp://HOST:8786")


def _build(sources, out: Path, tokenizer, *, factory: str | None, batch_size: int,
           where: Mapping[str, Any] | None, max_spectra: int | None, progress: bool, umap: bool,
           scheduler: str, workers: int | None, display: str, rerank: int | None,
           map_sample: int | None, display_pixels: int | None = None) -> None:
    import faiss

    from . import __version__

    _check_scheduler(scheduler, workers)
    if display not in ("auto", "copies", "source"):
        raise SpectrumError(f"display {display!r}: use 'auto', 'copies' or 'source'")
    if display_pixels is not None and not MIN_DISPLAY_PIXELS <= display_pixels <= 1_000_000:
        raise SpectrumError(f"--display-pixels {display_pixels}: give {MIN_DISPLAY_PIXELS} to 1,000,000 "
                            "(a plot needs a few hundred pixels at least)")
    source_list = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not source_list:
        raise SpectrumError("no sources given: name a corpus folder, survey files, folders or globs")
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise SpectrumError(f"{out} exists and is not an index folder; choose a new --out "
                            "(a build replaces the folder at --out)")
    model_dir = Path(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else None
    if tokenizer is None:
        from .model.tokenizer import DEFAULT_MODEL

        model_dir = Path(DEFAULT_MODEL)
    tokenizer = _resolve_tokenizer(tokenizer)
    if not tokenizer.weights_hash:
        raise SpectrumError(
            "the model has no saved weights, so the index could not say which model made it; "
            "save it first (tok.save(folder)) and build with Tokenizer.from_pretrained(folder)"
        )
    start = time.time()
    corpus = Path(source_list[0]) if len(source_list) == 1 and is_corpus(Path(source_list[0])) else None
    if corpus is None and len(source_list) == 1 and Path(source_list[0]).is_dir() \
            and (Path(source_list[0]) / "manifest.json").is_file() and (Path(source_list[0]) / "index.faiss").is_file():
        raise SpectrumError(f"{source_list[0]} is an index folder, not spectra to index")
    source_errors: list[tuple[str, str]] = []
    if corpus is not None:
        from .data.corpus import corpus_hash as hash_corpus

        corpus_digest = hash_corpus(corpus)
        plan = _plan(corpus, where, max_spectra)
        units = corpus_units(corpus, plan, CHUNK_SIZE)
        units_digest = _corpus_digest(plan, corpus_digest)
        unit_where = None
    else:
        if max_spectra is not None:
            raise SpectrumError("--max-spectra picks a representative mix of a corpus folder; "
                                "for files, name fewer files")
        if len(source_list) == 1 and not any(c in str(source_list[0]) for c in "*?[") \
                and not Path(source_list[0]).exists():
            raise SpectrumError(f"{source_list[0]} does not exist; give a corpus folder (from "
                                "`spectok corpus build`), survey files, folders or globs")
        units, source_errors, units_digest = file_units(source_list, CHUNK_SIZE)
        corpus_digest = None
        unit_where = where
        if not units:
            raise SpectrumError(f"no files to read in {', '.join(map(str, source_list))}"
                                + (f" ({source_errors[0][1]})" if source_errors else ""))
    n_planned = sum(unit_size(u) for u in units)
    if display == "auto":
        display = "copies" if n_planned <= DISPLAY_LIMIT else "source"
    for unit in units:  # travels with each unit to the process (or Dask worker) that packs it
        unit["display_pixels"] = display_pixels
    work = out.parent / f".{out.name}.building"
    _open_work(work, _plan_key(units_digest, tokenizer.weights_hash, f"{display}:{display_pixels}", where),
               n_planned, progress)
    if scheduler != "local" and model_dir is None:
        model_dir = work / "model"  # a Tokenizer object: the workers load this saved copy
    worker_hash = tokenizer.weights_hash
    if scheduler != "local" and model_dir == work / "model":
        import copy

        saved = copy.copy(tokenizer)  # save() records the copy's own file hash on the copy
        saved.save(model_dir)
        worker_hash = saved.weights_hash
    timings: Counter = Counter()
    chunk_files = _embed_all(units, work, tokenizer, batch_size, display, progress, timings, unit_where,
                             scheduler, workers, model_dir, worker_hash)

    tick = time.perf_counter()
    stage = work / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    columns = list(units[0]["meta"]) if corpus is not None else [*METADATA_COLUMNS, "source", "source_row"]
    # float16 (half the disk; for re-ranking) only where an approximate index does the search.
    dtype = np.float16 if display == "source" and n_planned > EXACT_LIMIT else np.float32
    summary = _assemble(chunk_files, stage, display, tokenizer.config.d_embed, columns, dtype)
    n = summary["n"]
    if not n:
        reason = f" (first: {source_errors[0] if source_errors else summary['errors'][0]})" \
            if source_errors or summary["errors"] else ""
        raise SpectrumError(f"none of the {n_planned} planned spectra could be read or embedded{reason}")
    embeddings = np.load(stage / "embeddings.npy", mmap_mode="r")
    timings["assemble"] += time.perf_counter() - tick

    tick = time.perf_counter()
    factory = factory or ("Flat" if n <= EXACT_LIMIT else ivf_factory(n, embeddings.shape[1]))
    if rerank is None:
        rerank = RERANK if "PQ" in factory else 0
    if rerank is None:
        rerank = 0
    if progress:
        print(f"building the FAISS index ({factory}) of {n:,} vectors", file=sys.stderr)
    index, search_params = _build_faiss(embeddings, factory, rerank)  # tuning may deepen rerank
    if rerank and "rerank" not in search_params:
        search_params["rerank"] = int(rerank)
    timings["faiss"] += time.perf_counter() - tick
    tick = time.perf_counter()
    coords, map_info, map_arrays = _fit_map(embeddings, umap, progress, map_sample)
    timings["map"] += time.perf_counter() - tick

    tick = time.perf_counter()
    _save_npy(stage / "coords.npy", coords)
    if map_arrays is not None:
        _save_npy(stage / "map.npy", map_arrays)
    faiss.write_index(index, str(stage / "index.faiss"))
    del index, embeddings
    data_files = DATA_FILES if display == "copies" else SOURCE_DATA_FILES
    files = [*data_files, *(["map.npy"] if map_arrays is not None else [])]
    errors = source_errors + summary["errors"]
    manifest = {
        "format_version": FORMAT_VERSION,
        "spectok_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_id": tokenizer.model_id,
        "weights_hash": tokenizer.weights_hash,
        "corpus": str(corpus) if corpus is not None else None,
        "corpus_hash": corpus_digest,
        "sources": [str(s) for s in source_list],
        "source_roots": [str(corpus.resolve())] if corpus is not None else source_roots(source_list),
        "selection": {"where": {k: list(v) if isinstance(v, (tuple, set)) else v
                                for k, v in (where or {}).items()},
                      "max_spectra": max_spectra, "selected": n_planned,
                      "skipped_unreadable": int(max(0, n_planned - n))},
        "unreadable": {"count": len(source_errors) + summary["n_errors"],
                       "listed": [{"source": s, "reason": r} for s, r in errors[:MAX_ERRORS_LISTED]]},
        "n": int(n),
        "counts": summary["counts"],
        "metric": "inner_product",
        "dimension": int(tokenizer.config.d_embed),
        "display": display,
        "display_pixels": display_pixels,
        "embeddings_dtype": np.dtype(dtype).name,
        "factory": factory,
        "search_params": search_params,
        "map": map_info,
        "build": {"scheduler": scheduler if not scheduler.startswith(("tcp", "tls", "ucx")) else "address",
                  "workers": workers, "parts": len(chunk_files), "chunk_size": CHUNK_SIZE},
        # This run only: a resumed build does not repeat the chunks it found.
        "seconds": {**{k: round(v, 2) for k, v in timings.items()},
                    "write": round(time.perf_counter() - tick, 2),
                    "total": round(time.time() - start, 2)},
        "files": file_records(stage, files),  # size and sha256: load checks both
    }
    _write_json(stage / "manifest.json", manifest)  # last: a folder without it is no index
    _swap_into_place(stage, out)
    shutil.rmtree(work, ignore_errors=True)
