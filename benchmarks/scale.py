"""Scale figures of issue 14: Dask against in-process embedding, IVF-PQ at 1e5-1e7, a killed worker.

    python benchmarks/scale.py embed --n 20000              # in-process vs a 2-worker LocalCluster
    python benchmarks/scale.py index --sizes 1e5            # build + search of IVF-PQ at each size
    python benchmarks/scale.py index --sizes 1e6            # one command per size ...
    python benchmarks/scale.py index --sizes 1e7            # ... (2.5 GB of float16 vectors on disk)
    python benchmarks/scale.py fault --n 4000               # one worker killed mid-run

``index`` vectors are the shipped model's embeddings of real and simulated spectra
(``--base``: an index folder's embeddings.npy, default indexes/full, else the demo
index) repeated with Gaussian noise (``--noise`` per dimension) and re-normalised
until there are N: "simulated" vectors in the report. Each size runs in its own
process so that its peak RSS is its own. Figures go to stdout and, as JSON, to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _MemorySampler:
    """Peak anonymous and file-backed resident memory of this process (Linux /proc), sampled
    every 20 ms: memory-mapped vectors count in RSS as file pages the kernel can drop, while
    anonymous pages are what the build itself holds."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[str, int]:
        found = {}
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in self.peak:
                    found[key] = int(value.split()[0])  # kB
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for key, value in self._read().items():
                self.peak[key] = max(self.peak[key], value)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mb(self) -> dict[str, float]:
        return {key: round(value / 1024) for key, value in self.peak.items()}


def _plan_units(corpus: Path, n: int, chunk: int):
    from spectok_core import index_build

    plan = index_build._plan(corpus, None, None)
    rng = np.random.default_rng(0)
    plan = plan.iloc[np.sort(rng.choice(len(plan), min(n, len(plan)), replace=False))].reset_index(drop=True)
    return index_build.corpus_units(corpus, plan, chunk), plan


def _load_parts(paths) -> tuple[np.ndarray, list]:
    embeddings, ids = [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            embeddings.append(data["embeddings"])
            ids += [f"{s}:{r}" for s, r in zip(data["meta__shard"], data["meta__shard_row"])]
    return np.concatenate(embeddings), ids


# -- 1. embedding: in-process against a 2-worker LocalCluster -----------------------------------


def bench_embed(args) -> dict:
    from spectok_core import index_build
    from spectok_core.index_cluster import run_parts
    from spectok_core.model import Tokenizer

    units, plan = _plan_units(Path(args.corpus), args.n, args.chunk)
    tok = Tokenizer.from_pretrained(args.model)
    work = Path(tempfile.mkdtemp(prefix="spectok-scale-"))
    try:
        local_parts = [work / "local" / f"chunk-{i:05d}.npz" for i in range(len(units))]
        (work / "local").mkdir()
        tick = time.perf_counter()
        for unit, path in zip(units, local_parts):
            index_build._save_npz(path, index_build._embed_chunk(unit, tok, 64, "copies"))
        local_s = time.perf_counter() - tick
        dask_parts = [work / "dask" / f"chunk-{i:05d}.npz" for i in range(len(units))]
        (work / "dask").mkdir()
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        client = Client(cluster)
        client.run(lambda: __import__("spectok_core.index_cluster").index_cluster._worker_tokenizer(
            str(Path(args.model).resolve()), tok.weights_hash) and None)  # model loading is not the throughput
        tick = time.perf_counter()
        run_parts(list(zip(units, dask_parts)), "dask", args.workers, Path(args.model), tok.weights_hash, 64,
                  "copies", None, client=client)
        dask_s = time.perf_counter() - tick
        client.close()
        cluster.close()
        a, ids_a = _load_parts(local_parts)
        b, ids_b = _load_parts(dask_parts)
        assert ids_a == ids_b
        n = len(a)
        return {"part": "embed", "n": n, "workers": args.workers, "local_s": round(local_s, 1),
                "dask_s": round(dask_s, 1), "local_per_s": round(n / local_s, 1),
                "dask_per_s": round(n / dask_s, 1), "throughput_ratio": round(local_s / dask_s, 3),
                "max_abs_diff": float(np.max(np.abs(a - b))), "cores": len(os.sched_getaffinity(0))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 2. index build and search at N vectors ------------------------------------------------------


def _base(path: str | None) -> tuple[np.ndarray, str]:
    for candidate in ([path] if path else [str(REPO / "indexes" / "full"), str(REPO / "indexes" / "demo")]):
        file = Path(candidate) / "embeddings.npy"
        if file.is_file():
            return np.asarray(np.load(file, mmap_mode="r"), np.float32), str(candidate)
    raise SystemExit("no base embeddings: build an index first (spectok index build --full)")


def _vectors(file: Path, n: int, base: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    out = np.lib.format.open_memmap(file, "w+", np.float16, (n, base.shape[1]))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 1 << 20):
        stop = min(n, start + (1 << 20))
        at = np.arange(start, stop)
        rows = base[at % len(base)]
        copies = at >= len(base)  # the model's own embeddings first, then noisy copies of them
        if copies.any():
            rows[copies] += noise * rng.standard_normal((int(copies.sum()), base.shape[1]), dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()
    return np.load(file, mmap_mode="r")


def bench_index_one(args) -> dict:
    import faiss

    from spectok_core import index_build
    from spectok_core.index_format import exact_knn, rerank_search

    n = int(float(args.sizes[0]))
    base, base_from = _base(args.base)
    work = Path(tempfile.mkdtemp(prefix="spectok-scale-", dir=args.tmp))
    try:
        n_base = len(base)
        del base
        # The vectors are made by a child process, so that this process's memory is the build's.
        tick = time.perf_counter()
        subprocess.run([sys.executable, __file__, "make-vectors", "--sizes", str(n), "--noise", str(args.noise),
                        "--out", str(work / "embeddings.npy")] + (["--base", args.base] if args.base else []),
                       check=True)
        make_s = time.perf_counter() - tick
        vectors = np.load(work / "embeddings.npy", mmap_mode="r")
        factory = args.factory or index_build.ivf_factory(n, vectors.shape[1])
        rss_before = _peak_rss_mb()
        tick = time.perf_counter()
        with _MemorySampler() as memory:
            index, params = index_build._build_faiss(vectors, factory, rerank=args.rerank)
            faiss.write_index(index, str(work / "index.faiss"))
        build_s = time.perf_counter() - tick
        build_rss = _peak_rss_mb()
        del index
        index = faiss.read_index(str(work / "index.faiss"), faiss.IO_FLAG_MMAP)
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", params["nprobe"])
        rng = np.random.default_rng(7)
        ids = np.sort(rng.choice(n, 1000, replace=False))
        queries = np.asarray(vectors[ids], np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        rerank = int(params.get("rerank", 0))
        times = []
        found = np.zeros((len(ids), 11), np.int64)
        for i, q in enumerate(queries):
            t = time.perf_counter()
            if rerank:
                _, f = rerank_search(index, vectors, q[None], 11, rerank)
            else:
                _, f = index.search(q[None], 11)
            times.append(time.perf_counter() - t)
            found[i] = f[0]
        _, truth = exact_knn(queries, vectors, 11)
        recall = float(np.mean([len(set(t[t != i][:10]) & set(f[f != i][:10])) / 10
                                for t, f, i in zip(truth, found, ids)]))
        sizes = {"index.faiss": (work / "index.faiss").stat().st_size,
                 "embeddings.npy (float16, re-ranking)": (work / "embeddings.npy").stat().st_size}
        return {"part": "index", "n": n, "factory": factory, **params,
                "vectors": f"{min(n, n_base):,} model embeddings ({base_from})" + (
                    f", {n - n_base:,} noisy copies (sigma {args.noise}/dim)" if n > n_base else " (all real)"),
                "make_vectors_s": round(make_s, 1),
                "build_s": round(build_s, 1), "peak_rss_mb": round(_peak_rss_mb(), 0),
                "rss_before_build_mb": round(rss_before, 0), "build_peak_rss_mb": round(build_rss, 0),
                "build_peak_anon_file_mb": memory.mb(),
                "disk_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
                "search_p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
                "search_p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
                "recall_at_10_1000q": round(recall, 4), "cores": len(os.sched_getaffinity(0))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_index(args) -> list[dict]:
    results = []
    for size in args.sizes:
        command = [sys.executable, __file__, "index-one", "--sizes", size, "--noise", str(args.noise),
                   "--rerank", str(args.rerank)] + (["--base", args.base] if args.base else []) \
            + (["--factory", args.factory] if args.factory else []) + (["--tmp", args.tmp] if args.tmp else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


# -- 3. a worker killed mid-run --------------------------------------------------------------------


def bench_fault(args) -> dict:
    from distributed import Client, LocalCluster

    from spectok_core.index_cluster import run_parts
    from spectok_core.model import Tokenizer

    units, plan = _plan_units(Path(args.corpus), args.n, args.chunk)
    tok = Tokenizer.from_pretrained(args.model)
    work = Path(tempfile.mkdtemp(prefix="spectok-fault-"))
    parts = [work / f"chunk-{i:05d}.npz" for i in range(len(units))]
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    client = Client(cluster)
    killed = {}

    def killer():
        while not any(p.is_file() for p in parts):
            time.sleep(0.05)
        pid = sorted(client.run(os.getpid).values())[0]
        os.kill(pid, signal.SIGKILL)
        killed.update(pid=pid, after_parts=sum(p.is_file() for p in parts))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    tick = time.perf_counter()
    try:
        run_parts(list(zip(units, parts)), "dask", 2, Path(args.model), tok.weights_hash, 64, "copies", None,
                  client=client)
        _, ids = _load_parts(parts)
        planned = [f"{s}:{r}" for s, r in zip(plan["shard"], plan["shard_row"])]
        return {"part": "fault", "n_planned": len(planned), "parts": len(parts), "killed": killed,
                "seconds": round(time.perf_counter() - tick, 1), "each_exactly_once": sorted(ids) == sorted(planned)
                or f"{len(ids)} embedded, {len(set(ids))} distinct, planned {len(planned)} (unreadable ones drop)",
                "no_duplicates": len(ids) == len(set(ids))}
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("embed", "index", "index-one", "make-vectors", "fault"))
    parser.add_argument("--corpus", default="/work/corpus" if Path("/work/corpus").is_dir() else "corpus")
    parser.add_argument("--model", default=str(REPO / "assets" / "models" / "spectok-small"))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["1e5"])
    parser.add_argument("--base", default=None, help="index folder whose embeddings seed the vectors")
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--rerank", type=int, default=8)
    parser.add_argument("--factory", default=None)
    parser.add_argument("--tmp", default=None, help="folder for the temporary vectors (10^7: 2.5 GB)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.part == "index-one":
        print(json.dumps(bench_index_one(args)))
        return
    if args.part == "make-vectors":  # the child process of index-one
        base, _ = _base(args.base)
        _vectors(Path(args.out), int(float(args.sizes[0])), base, args.noise)
        return
    result = {"embed": bench_embed, "index": bench_index, "fault": bench_fault}[args.part](args)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
