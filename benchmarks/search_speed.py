"""Index build time, query latency, memory and recall, and how best to place new spectra on the map.

    .venv/bin/python benchmarks/search_speed.py [--corpus /tmp/corpus_small] [--model PATH]
        [--sizes 1e4 1e5 1e6] [--uniform-max 1e5] [--threads 1] [--skip-build] [--skip-scaling]

Three parts:

1. build: ``SpectrumIndex.build`` on a real corpus folder (real + simulated spectra), timed
   by stage (reading shards, model embedding, display copies, FAISS, UMAP, writing), and
   scaled to seconds per 10,000 spectra with and without the model's embedding.
2. placement: leave-one-out on the indexed points of that build: each point is placed
   from its nearest neighbours *other than itself*, by the similarity-weighted mean and by
   the UMAP-style transform, and compared with its true map position.
3. scaling: exact (``Flat``) and approximate (``HNSW32,Flat``, efSearch tuned by
   ``tune_search`` as in a real build) FAISS indexes of 1e4-1e6 synthetic unit vectors of the
   model's dimension: single-query latency p50/p99 through ``SpectrumIndex.search`` and
   raw FAISS, filtered-search latency, memory, and recall@10 of the approximate index
   against exact search, on held-out queries. Two kinds of vectors: "uniform" (random
   directions, the worst case for any approximate index) and "clustered" (256 clusters in
   a 16-dimensional subspace plus noise: like real embeddings, whose variance sits in few
   directions). Targets: p50 <= 5 ms at 1e5, <= 20 ms at 1e6 with recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vectors(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return unit(rng.standard_normal((n, dim), dtype=np.float32))
    latent_dim, n_clusters = 16, 256
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((dim, latent_dim)))[0].T
    centres = np.random.default_rng(98).standard_normal((n_clusters, latent_dim)) * 3
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        latent = centres[rng.integers(n_clusters, size=m)] + rng.standard_normal((m, latent_dim))
        out[start : start + m] = latent @ basis + 0.05 * rng.standard_normal((m, dim))
    return unit(out)


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1e3
    return f"p50 {np.percentile(ms, 50):6.2f} ms  p99 {np.percentile(ms, 99):6.2f} ms"


# -- 1. build ---------------------------------------------------------------------------------------


def build_part(corpus: Path, model: str | None, workdir: Path):
    from spectok_core.index import SpectrumIndex
    from spectok_core.model import Tokenizer

    if model:
        tok = Tokenizer.from_pretrained(model)
    else:  # speed does not depend on the weights: an untrained model of the shipped size
        tok = Tokenizer.from_config("small", seed=0)
        tok = Tokenizer.from_pretrained(tok.save(workdir / "model", model_id="small-untrained"))
    print(f"\n== 1. build: {corpus} with model {tok.model_id} (d_embed {tok.config.d_embed})")
    start = time.perf_counter()
    index = SpectrumIndex.build(corpus, workdir / "index", tok, progress=False, umap=True)
    wall = time.perf_counter() - start
    seconds = index.manifest["seconds"]
    n = len(index)
    print(f"{n} spectra ({dict(index.manifest['counts']['origin'])}), wall {wall:.1f} s")
    for stage, value in seconds.items():
        print(f"  {stage:<14} {value:8.2f} s   {value / n * 1e4:8.1f} s per 10k spectra")
    without = seconds["total"] - seconds.get("embed_model", 0.0)
    print(f"  per 10k spectra: {seconds['total'] / n * 1e4:.0f} s including the model's embedding, "
          f"{without / n * 1e4:.0f} s excluding it (UMAP grows faster than linearly; see part 3)")
    size = sum(f.stat().st_size for f in (workdir / "index").rglob("*") if f.is_file())
    print(f"  index folder {size / 1e6:.1f} MB ({size / n / 1e3:.1f} kB per spectrum, mostly the "
          "float16 display copies)")
    return index


# -- 2. placement -------------------------------------------------------------------------------------


def placement_part(index, n_points: int = 500, seed: int = 0) -> None:
    print(f"\n== 2. placement on the UMAP map, leave-one-out over {min(n_points, len(index))} indexed points")
    coords = index.coords
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(index), min(n_points, len(index)), replace=False))
    sample = coords[rng.choice(len(coords), min(2000, len(coords)), replace=False)]
    pair = np.median(np.linalg.norm(sample[:, None] - sample[None], axis=-1))
    nearest = np.sort(np.linalg.norm(coords[rows, None] - coords[None], axis=-1), axis=1)[:, 1]
    print(f"  map scale: median pair distance {pair:.2f}; median distance to the nearest other "
          f"point {np.median(nearest):.3f}")
    for method in ("neighbours", "umap"):
        errors, spent = [], []
        for row in rows:
            query = index.embedding(row)[None]
            tick = time.perf_counter()
            sims, found = index._neighbours(query, None, method, extra=1)
            keep = found != row
            placed = index._place_from(sims[keep], found[keep], method)
            spent.append(time.perf_counter() - tick)
            errors.append(np.linalg.norm(placed - coords[row]))
        errors = np.array(errors)
        print(f"  {method:<10} error median {np.median(errors):.3f} ({np.median(errors) / pair:.1%} of "
              f"the pair scale), p90 {np.percentile(errors, 90):.3f}; within the point's own "
              f"nearest-neighbour distance x3: {np.mean(errors < 3 * nearest):.0%};  "
              f"{percentiles(spent)} per placement")


# -- 3. scaling ------------------------------------------------------------------------------------


def shell_index(index, embeddings: np.ndarray, factory: str, params: dict):
    """A SpectrumIndex around a bare FAISS index, to time the real search path (and filters)."""
    from spectok_core.index import SpectrumIndex

    shell = SpectrumIndex.__new__(SpectrumIndex)
    shell.path, shell.tokenizer, shell._index, shell._embeddings = Path("."), None, index, embeddings
    shell.manifest = {"n": len(embeddings), "dimension": embeddings.shape[1], "factory": factory,
                      "search_params": params, "map": {"method": "pca"}}
    rng = np.random.default_rng(1)
    surveys = np.array(["sdss", "boss", "desi", "lamost", "gaia_xp", "apogee", "rare"])
    share = np.array([0.2, 0.2, 0.2, 0.15, 0.15, 0.095, 0.005])
    shell._metadata = pd.DataFrame({
        "survey": pd.Categorical(surveys[rng.choice(len(surveys), len(embeddings), p=share)]),
        "z": rng.uniform(0, 3, len(embeddings)),
    })
    return shell


def time_queries(fn, queries: np.ndarray) -> list[float]:
    fn(queries[0])  # warm-up
    spent = []
    for q in queries:
        tick = time.perf_counter()
        fn(q)
        spent.append(time.perf_counter() - tick)
    return spent


def measure(kind: str, factory: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> None:
    from spectok_core.index_build import _build_faiss

    before = rss_mb()
    tick = time.perf_counter()
    index, params = _build_faiss(base, factory)
    built = time.perf_counter() - tick
    memory = rss_mb() - before
    shell = shell_index(index, base, factory, params)
    half = queries[: len(queries) // 2]
    raw = time_queries(lambda q: index.search(q[None], 10), queries)
    api = time_queries(lambda q: shell.search(q, k=10), queries)
    common = time_queries(lambda q: shell.search(q, k=10, where={"survey": ["sdss", "desi"]}), half)
    rare = time_queries(lambda q: shell.search(q, k=10, where={"survey": "rare", "z": (0.5, 2)}), half)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    print(f"{kind:<9} n={len(base):>9,} {factory:<12} build {built:7.1f} s  memory +{memory:6.0f} MB  "
          f"recall@10 {recall:.3f}  {params or ''}")
    print(f"    raw FAISS  {percentiles(raw)} | search() {percentiles(api)}")
    print(f"    filtered 40%: {percentiles(common)} | filtered 0.2%: {percentiles(rare)}", flush=True)


def scaling_part(sizes: list[int], dim: int, uniform_max: int, n_queries: int, map_max: int,
                 kinds: list[str]) -> None:
    import faiss

    from spectok_core.index_build import APPROX_FACTORY, _fit_map

    print(f"\n== 3. scaling: synthetic unit vectors, dimension {dim}, {n_queries} held-out single "
          f"queries, FAISS threads {faiss.omp_get_max_threads()}")
    for kind in kinds:
        for n in sizes:
            if kind == "uniform" and n > uniform_max:
                continue
            data = vectors(kind, n + n_queries, dim, seed=n)
            base, queries = np.ascontiguousarray(data[:n]), data[n:]
            _, truth = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
            for factory in ("Flat", APPROX_FACTORY):
                measure(kind, factory, base, queries, truth)
            if kind == "clustered" and n <= map_max:
                tick = time.perf_counter()
                _fit_map(base, True, False)
                print(f"    UMAP map of {n:,} vectors: {time.perf_counter() - tick:.0f} s "
                      "(includes numba compilation the first time, ~15-40 s)", flush=True)
            del data, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="/tmp/corpus_small", help="corpus folder for parts 1-2")
    parser.add_argument("--model", default=None, help="model folder (default: untrained small model)")
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    parser.add_argument("--uniform-max", type=float, default=1e5, help="largest uniform-vector index")
    parser.add_argument("--map-max", type=float, default=1e5, help="largest UMAP fit timed")
    parser.add_argument("--dim", type=int, default=None, help="vector dimension (default: the model's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--kinds", nargs="+", default=["clustered", "uniform"], choices=["clustered", "uniform"])
    parser.add_argument("--threads", type=int, default=1, help="FAISS/OpenMP threads")
    parser.add_argument("--keep", default=None, help="build the part-1 index (and model) in this folder")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(max(args.threads, 2))
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine)")
    dim = args.dim
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_build:
            index = build_part(Path(args.corpus), args.model, Path(args.keep or folder))
            placement_part(index)
            dim = dim or index.dimension
    if not args.skip_scaling:
        from spectok_core.model.config import PRESETS

        scaling_part([int(s) for s in args.sizes], dim or PRESETS["small"].d_embed,
                     int(args.uniform_max), args.queries, int(args.map_max), args.kinds)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
