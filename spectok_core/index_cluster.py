"""Embedding the parts of an index build on Dask (``spectok[distributed]``).

``spectok index build --scheduler dask --workers N`` starts a ``dask.distributed``
LocalCluster of N single-threaded worker processes on this machine;
``--scheduler tcp://HOST:8786`` uses a running cluster (for example workers started
on Slurm with dask-jobqueue, see the README). Each unit of the plan is one task.

* A worker loads the model once (from the model folder's safetensors, checked
  against the weights hash of the build) and keeps it for every task it runs.
* A task writes its part itself, atomically (temporary name, then rename), into
  the build's work folder, which the workers must see under the same path (a
  shared file system on a cluster). The client receives only a count.
* A failed task is retried (``retries``); a task whose worker dies is run again
  elsewhere by the scheduler. A part that exists is never written again, so a
  killed worker loses no finished part and a rerun of the build resumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .spectrum import SpectrumError

RETRIES = 3  # a failed partition is tried this many more times before the build stops

_MODELS: dict[tuple[str, str], Any] = {}  # per worker process: (model folder, weights hash) -> Tokenizer


def _worker_tokenizer(model_dir: str, weights_hash: str):
    key = (model_dir, weights_hash)
    if key not in _MODELS:
        import torch

        from .model.tokenizer import Tokenizer

        torch.set_num_threads(int(os.environ.get("SPECTOK_WORKER_THREADS", "1")))
        tokenizer = Tokenizer.from_pretrained(model_dir)
        if tokenizer.weights_hash != weights_hash:
            raise SpectrumError(
                f"the model at {model_dir} on this worker has weights {tokenizer.weights_hash[:12]}, "
                f"the build's are {weights_hash[:12]}: give the workers the same model folder")
        _MODELS.clear()  # one model per worker
        _MODELS[key] = tokenizer
    return _MODELS[key]


def embed_part(unit: dict, path: str, model_dir: str, weights_hash: str, batch_size: int,
               display: str, where: Mapping[str, Any] | None) -> int:
    """One task: embed a unit and write its part to ``path`` (skipped when it exists)."""
    from . import index_build

    target = Path(path)
    if target.is_file():
        return -1
    tokenizer = _worker_tokenizer(model_dir, weights_hash)
    part = index_build._embed_chunk(unit, tokenizer, batch_size, display, None, where)
    index_build._save_npz(target, part)
    return int(len(part["snr"]))


def _task_key(path: Path, weights_hash: str) -> str:
    """One key per part file and model: two builds sharing a cluster never share a task."""
    import hashlib

    digest = hashlib.sha256(f"{path.resolve()}:{weights_hash}".encode()).hexdigest()[:16]
    return f"spectok-part-{path.stem}-{digest}"


def client_for(scheduler: str, workers: int | None):
    """A dask Client (and the LocalCluster it owns, or None) for a scheduler setting."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SpectrumError("--scheduler dask needs dask.distributed: pip install 'spectok[distributed]'") from None
    if scheduler == "dask":
        n = workers or max(1, (os.cpu_count() or 2) - 1)
        threads = os.environ.get("SPECTOK_WORKER_THREADS", "1")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        return Client(cluster), cluster
    return Client(scheduler, timeout="30s"), None


def run_parts(todo: Sequence[tuple[dict, Path]], scheduler: str, workers: int | None,
              model_dir: Path | None, weights_hash: str, batch_size: int, display: str,
              where: Mapping[str, Any] | None, on_done: Callable[[dict], None] | None = None,
              client=None, retries: int = RETRIES) -> None:
    """Run every (unit, part path) on the cluster; returns when all parts are written."""
    if not todo:
        return
    if model_dir is None:
        raise SpectrumError("a Dask build needs the model as a folder (--model MODEL_DIR)")
    from distributed import as_completed

    own, cluster = (client_for(scheduler, workers) if client is None else (client, None))
    try:
        futures = {}
        for unit, path in todo:
            future = own.submit(embed_part, unit, str(Path(path).resolve()), str(Path(model_dir).resolve()),
                                weights_hash, batch_size, display, dict(where) if where else None,
                                key=_task_key(Path(path), weights_hash), retries=retries,
                                pure=False)
            futures[future] = unit
        failed = None
        for future in as_completed(futures):
            if future.status == "error":
                failed = failed or future
                continue
            if on_done is not None:
                on_done(futures[future])
        if failed is not None:
            error = failed.exception()
            raise SpectrumError(f"a partition failed {retries + 1} times on the cluster "
                                f"({type(error).__name__}: {str(error)[:200]}); the finished parts are "
                                "kept: run the same build again to resume") from None
    finally:
        if client is None:
            own.close()
            if cluster is not None:
                cluster.close()
