"""The explorer's index at 10^6-10^7 spectra: how fast it opens and answers what the app asks.

    python benchmarks/app_scale.py inflate SEED OUT --n 1e6   # a large index from a small one
    python benchmarks/app_scale.py time OUT                    # open it and time the app's calls
    python benchmarks/app_speed.py --index OUT                 # the app itself on it

``inflate`` makes a *simulated* large index from a real one built with
``--display source`` (``spectok index build --corpus corpus --out SEED --max-spectra 2000
--display source``): every seed row is repeated with Gaussian noise on its embedding
(``--noise`` per dimension, re-normalised) and its map point, a new object id
(``ID-cNNNNNNN``) and a jittered sky position; the copies keep the seed's source
pointers, so each reads its seed spectrum. The FAISS index is IVF-PQ with re-ranking,
as ``spectok index build`` makes above 200,000 spectra, and the manifest records sizes
and sha256 like a build. ``time`` opens the index in a fresh process and prints, as
JSON: the time to open it, the Home page's contents table, a search with and without a
filter, the Atlas map (density of every point plus a 50,000-point sample), an object-id
lookup, a random pick and a neighbour's spectrum, with the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BLOCK = 1 << 20


def inflate(seed: Path, out: Path, n: int, noise: float, seed_rng: int = 0) -> dict:
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spectok_core import index_build
    from spectok_core.index_check import file_records

    manifest = json.loads((seed / "manifest.json").read_text())
    if manifest.get("display") != "source":
        raise SystemExit(f"{seed}: build the seed with --display source (thumbnails, source pointers)")
    base = np.asarray(np.load(seed / "embeddings.npy"), np.float32)
    coords = np.load(seed / "coords.npy").astype(np.float32)
    thumbs = np.load(seed / "thumbnails.npy")
    meta = pq.read_table(seed / "metadata.parquet")
    m = len(base)
    spread = coords.std(axis=0) * 0.02
    stage = out.with_name(out.name + ".inflating")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    rng = np.random.default_rng(seed_rng)
    tick = time.perf_counter()
    emb = np.lib.format.open_memmap(stage / "embeddings.npy", "w+", np.float16, (n, base.shape[1]))
    xy = np.lib.format.open_memmap(stage / "coords.npy", "w+", np.float32, (n, 2))
    th = np.lib.format.open_memmap(stage / "thumbnails.npy", "w+", thumbs.dtype, (n,) + thumbs.shape[1:])
    writer = None
    ids = np.array(meta.column("object_id").to_pylist(), dtype=object)
    has_sky = "ra" in meta.column_names and "dec" in meta.column_names
    for start in range(0, n, BLOCK):
        at = np.arange(start, min(n, start + BLOCK))
        src = at % m
        rows = base[src]
        copies = at >= m
        rows[copies] += noise * rng.standard_normal((int(copies.sum()), base.shape[1]), dtype=np.float32)
        emb[at] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        xy[at] = coords[src] + copies[:, None] * rng.normal(0, 1, (len(at), 2)).astype(np.float32) * spread
        th[at] = thumbs[src]
        part = meta.take(pa.array(src))
        new_ids = [i if c == 0 else f"{i}-c{c:07d}" for i, c in zip(ids[src], at // m)]
        part = part.set_column(part.column_names.index("object_id"), "object_id", pa.array(new_ids))
        if has_sky:
            for name, scale in (("ra", 1.0), ("dec", 1.0)):
                values = part.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                jitter = np.where(copies, rng.normal(0, scale, len(at)), 0.0)
                moved = values + jitter if name == "ra" else np.clip(values + jitter, -90, 90)
                moved = np.mod(moved, 360.0) if name == "ra" else moved
                part = part.set_column(part.column_names.index(name), name, pa.array(moved))
        if writer is None:
            writer = pq.ParquetWriter(stage / "metadata.parquet", part.schema)
        writer.write_table(part, row_group_size=index_build.ROW_GROUP)  # as a build writes them
    writer.close()
    emb.flush()
    xy.flush()
    th.flush()
    del emb, xy, th
    shutil.copy2(seed / "map.npy", stage / "map.npy") if (seed / "map.npy").is_file() else None
    make_s = time.perf_counter() - tick
    vectors = np.load(stage / "embeddings.npy", mmap_mode="r")
    factory = index_build.ivf_factory(n, vectors.shape[1])
    tick = time.perf_counter()
    index, params = index_build._build_faiss(vectors, factory, rerank=index_build.RERANK)
    params.setdefault("rerank", index_build.RERANK)
    faiss.write_index(index, str(stage / "index.faiss"))
    faiss_s = time.perf_counter() - tick
    del index, vectors
    counts = {}
    table = pq.read_table(stage / "metadata.parquet", columns=[c for c in ("survey", "class", "origin")
                                                               if c in meta.column_names])
    frame = table.to_pandas().astype(object)
    frame = frame.where(frame.notna(), "-").astype(str)
    for name in frame.columns:  # as a build records them (spectok_core.index_build._count_into)
        counts[name] = {str(k): int(v) for k, v in frame[name].value_counts().sort_index().items()}
    for name in ("origin", "class"):
        if name in frame and "survey" in frame:
            joint = (frame["survey"] + "|" + frame[name]).value_counts().sort_index()
            counts[f"survey_{name}"] = {str(k): int(v) for k, v in joint.items()
                                        if name == "class" or not str(k).endswith("|-")}
    files = ["index.faiss", "embeddings.npy", "coords.npy", "metadata.parquet", "thumbnails.npy"] + \
        (["map.npy"] if (stage / "map.npy").is_file() else [])
    manifest.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "n": int(n), "counts": counts,
        "embeddings_dtype": "float16", "factory": factory, "search_params": params,
        "selection": {**manifest.get("selection", {}), "selected": int(n),
                      "inflated_from": str(seed), "noise": noise},
        "seconds": {"inflate": round(make_s, 1), "faiss": round(faiss_s, 1)},
        "files": file_records(stage, files)})
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    stage.rename(out)
    return {"n": n, "seed": m, "inflate_s": round(make_s, 1), "faiss_s": round(faiss_s, 1),
            "factory": factory, "search_params": params,
            "disk_mb": round(sum(p.stat().st_size for p in out.iterdir()) / 2**20, 1)}


def timed(results: dict, name: str, fn):
    tick = time.perf_counter()
    value = fn()
    results[name] = round(time.perf_counter() - tick, 3)
    return value


def time_app_calls(path: Path) -> dict:
    from spectok_core import explore
    from spectok_core.index import SpectrumIndex

    out: dict = {}
    tok = timed(out, "load_model_s", lambda: explore.load_tokenizer(None))
    index = timed(out, "open_index_s", lambda: SpectrumIndex.load(path, tokenizer=tok))
    out["n"] = len(index)
    timed(out, "home_contents_s", lambda: explore.index_contents_of(index))
    query = np.asarray(index.embedding(12345 % len(index)), np.float32)
    timed(out, "search_k10_s", lambda: explore.neighbours(index, query, k=10))
    hits = timed(out, "search_k10_again_s", lambda: explore.neighbours(index, query, k=10))
    timed(out, "search_filtered_survey_s", lambda: explore.neighbours(index, query, k=10, where={"survey": ["sdss"]}))
    timed(out, "search_filtered_survey_again_s",
          lambda: explore.neighbours(index, query, k=10, where={"survey": ["sdss"]}))
    timed(out, "atlas_density_s", lambda: explore.map_density(index.coords))
    rows = index.sample_rows(explore.map_points_limit())
    timed(out, "atlas_sample_metadata_s",
          lambda: explore.map_frame(index.rows_metadata(rows), np.asarray(index.coords[rows])))
    wanted = str(hits["object_id"].iloc[0])
    found = timed(out, "lookup_object_id_s", lambda: explore.lookup_in(index, wanted))
    out["lookup_found_rows"] = len(found.rows)
    timed(out, "random_pick_s", lambda: explore.random_row_of(index, bright=True))
    spectrum = timed(out, "neighbour_spectrum_s", lambda: index.spectrum(int(hits["row"].iloc[1])))
    out["neighbour_spectrum_from"] = "source" if spectrum.meta.get("from_source") else "thumbnail"
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("inflate", "time"))
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--n", default="1e6")
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.part == "inflate":
        result = inflate(Path(args.paths[0]), Path(args.paths[1]), int(float(args.n)), args.noise)
    else:
        result = time_app_calls(Path(args.paths[0]))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
