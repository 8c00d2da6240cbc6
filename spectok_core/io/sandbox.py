"""Reading untrusted bytes in a worker process with memory and CPU-time limits.

The readers bound every size they can see, but the parsers under them (HDF5,
astropy's decompression, zlib) are C code: a crafted file could still crash
one. :func:`read_isolated` runs :func:`read_spectra` in a fresh worker process
(``python -m spectok_core.io.sandbox``) that imports the readers, then sets
RLIMIT_AS and RLIMIT_CPU on itself, and only then reads the bytes from its
stdin. A segfault, a memory bomb or an endless loop costs that worker only, and
the caller gets a :class:`SpectrumError` saying what happened.

Each worker reads one request and ends, so no file ever sees what an earlier
one left in a parser. Starting Python and importing astropy and h5py takes
about a second, so one *spare* worker is started ahead of need: it imports
the readers and waits on its stdin. A request takes the spare (when it was
started with the same environment) and starts the next spare at once, so
the import happens while the user looks at the result, not while they wait.
The app runs each page inside :func:`spare_after_page`: its reads start no
spare, and one is started when the page has been sent, so the import competes
with neither the embedding nor the search, and the first upload after the
page opens finds a spare waiting.

The answer comes back on the worker's stdout as a .npz of plain arrays plus
JSON (never a pickle), checked on arrival like any file: a worker that a
crafted file took over cannot send anything the server would execute.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError
from .source import Limits, _env_int, safe_name

#: Memory a worker may add to what it maps once the readers are imported (SPECTOK_WORKER_MEMORY_MB).
MEMORY_MB = 2048
#: CPU seconds a worker may use (SPECTOK_WORKER_CPU_S); wall-clock time is bounded at twice this.
CPU_SECONDS = 30
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("spectok.sandbox")


def _mapped_bytes() -> int:
    """The address space this process maps now (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit_self(memory_mb: int, cpu_seconds: int, output_bytes: int) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: no limits, the worker still isolates a crash
        return
    memory = _mapped_bytes() + memory_mb * 2**20
    for name, value in (("RLIMIT_AS", memory), ("RLIMIT_CPU", cpu_seconds), ("RLIMIT_CORE", 0),
                        ("RLIMIT_FSIZE", output_bytes)):
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        soft, hard = resource.getrlimit(limit)
        hard_value = value + 1 if name == "RLIMIT_CPU" else value
        if hard != resource.RLIM_INFINITY:
            value, hard_value = min(value, hard), min(hard_value, hard)
        try:
            resource.setrlimit(limit, (value, hard_value))
        except (ValueError, OSError):
            pass


# -- the worker's answer: plain arrays and JSON ------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def encode(spectra) -> bytes:
    """Spectra (and the list's ``problems``) as .npz bytes: concatenated arrays plus JSON."""
    spectra_list = list(spectra)
    arrays = {
        "lengths": np.array([len(s) for s in spectra_list], np.int64),
        "wave": np.concatenate([s.wave for s in spectra_list] or [np.zeros(0)]),
        "flux": np.concatenate([s.flux for s in spectra_list] or [np.zeros(0, np.float32)]),
        "ivar": np.concatenate([s.ivar for s in spectra_list] or [np.zeros(0, np.float32)]),
        "mask": np.concatenate([s.mask for s in spectra_list] or [np.zeros(0, bool)]),
    }
    records = [{"survey": s.survey, "meta": s.meta} for s in spectra_list]
    text = json.dumps({"spectra": records, "problems": list(getattr(spectra, "problems", []))},
                      default=_plain)
    arrays["info"] = np.frombuffer(text.encode("utf-8"), np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode(data: bytes, limits: Limits):
    """The SpectrumList of :func:`encode`'s bytes, every spectrum validated again."""
    from . import SpectrumList
    from .guard import read_npz

    arrays = read_npz(data, Limits(max_bytes=4 * len(data) + 2**20), "<worker answer>")
    info = json.loads(bytes(arrays["info"]).decode("utf-8"))
    lengths = arrays["lengths"]
    if len(lengths) != len(info["spectra"]) or np.any(lengths < 0) or \
            any(len(arrays[k]) != int(lengths.sum()) for k in ("wave", "flux", "ivar", "mask")):
        raise SpectrumError("the arrays and the spectrum list disagree")
    ends = np.cumsum(lengths)
    spectra = []
    for record, end, n in zip(info["spectra"], ends, lengths):
        part = slice(int(end - n), int(end))
        if n > limits.max_pixels:
            raise SpectrumError(f"a spectrum of {n:,} pixels is over the limit")
        spectra.append(Spectrum(arrays["wave"][part], arrays["flux"][part], arrays["ivar"][part],
                                arrays["mask"][part], str(record["survey"]), dict(record["meta"])))
    return SpectrumList(spectra, [str(p) for p in info["problems"]])


def _split_options(options: dict) -> tuple[dict, dict[str, bytes]]:
    plain, blobs = {}, {}
    for key, value in options.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            blobs[key] = bytes(value)
        else:
            json.dumps(value)  # a TypeError here: an option the worker cannot be given
            plain[key] = value
    return plain, blobs


def _worker_main() -> int:
    """``python -m spectok_core.io.sandbox``: one request on stdin, one answer on stdout."""
    # What most reads need, imported before the request arrives (a spare waits here).
    import astropy.io.fits  # noqa: F401
    import astropy.table  # noqa: F401
    import astropy.units  # noqa: F401
    import h5py  # noqa: F401

    from . import read_spectra

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    line = stdin.readline()
    if not line.strip():  # a spare whose server ended (or let it go) before using it
        return 0
    request = json.loads(line)
    _limit_self(int(request["memory_mb"]), int(request["cpu_seconds"]), int(request["max_answer"]))
    name = request["name"]
    try:
        data = stdin.read(int(request["size"]))
        options = dict(request["options"])
        for key, size in request["blobs"]:
            options[key] = stdin.read(int(size))
        if request.get("crash_test"):  # tests: a reader that dies as a C parser might
            os.kill(os.getpid(), signal.SIGSEGV)
        answer = b"ok" + encode(read_spectra(data, name=name, **options))
    except SpectrumError as err:
        answer = b"er" + str(err).encode("utf-8", "replace")
    except MemoryError:
        answer = b"er" + (f"{name}: reading it needed more than the {request['memory_mb']} MB a "
                          "worker may use; the file is too large or crafted to expand").encode()
    except Exception as err:  # noqa: BLE001 - the worker reports anything, then ends
        answer = b"er" + f"{name}: could not be read ({type(err).__name__}: {err})".encode()
    stdout.write(answer)
    stdout.flush()
    return 0


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class _Worker:
    """One started worker process, its output files (which it cannot grow past
    RLIMIT_FSIZE, never read into our memory unchecked) and the environment it got."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-m", "spectok_core.io.sandbox"],
                                        stdin=subprocess.PIPE, stdout=self.out, stderr=self.err,
                                        env=env)

    def send(self, payload: bytes) -> None:
        try:
            self.process.stdin.write(payload)
            self.process.stdin.close()
        except (BrokenPipeError, OSError, ValueError):  # it ended before reading all; its status says how
            pass

    def usable(self, env: dict[str, str]) -> bool:
        return self.env == env and self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.out, self.err):
            if stream is not None and not stream.closed:
                stream.close()


_spare: _Worker | None = None
_spare_lock = threading.Lock()
_deferred = threading.local()  # .active: inside spare_after_page on this thread


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _take_worker() -> _Worker:
    """The spare worker when it is alive and has this environment, else a new one."""
    global _spare
    env = _worker_env()
    with _spare_lock:
        worker, _spare = _spare, None
    if worker is not None and not worker.usable(env):
        worker.close()
        worker = None
    return worker or _Worker(env)


def start_spare() -> None:
    """Start the spare worker for the next request, unless one is waiting already."""
    global _spare
    with _spare_lock:
        if _spare is not None:
            return
        try:
            _spare = _Worker(_worker_env())
        except OSError:  # no spare this time (process limit): the next request starts its own
            _spare = None


@contextlib.contextmanager
def spare_after_page():
    """Reads on this thread start no spare until the block ends; then one is started.

    The app wraps each page run in it. A page that reads several files (a DESI coadd
    with its redshift catalogue) starts a worker for each read after the first.
    """
    outer = getattr(_deferred, "active", False)
    _deferred.active = True
    try:
        yield
    finally:
        _deferred.active = outer
        if not outer:
            start_spare()


@atexit.register
def _close_spare() -> None:
    global _spare
    with _spare_lock:
        if _spare is not None:
            _spare.close()
            _spare = None


def read_isolated(data: bytes, name: str = "<upload>", *, memory_mb: int | None = None,
                  cpu_seconds: int | None = None, _crash_test: bool = False, **options):
    """:func:`read_spectra` of ``data`` in a limited worker process; the same SpectrumList back.

    ``memory_mb`` and ``cpu_seconds`` default to SPECTOK_WORKER_MEMORY_MB and
    SPECTOK_WORKER_CPU_S (2048 MB, 30 s). Whatever goes wrong in the worker,
    including a crash, comes back as a SpectrumError naming the file; nothing of
    the failed read stays in this process. Bytes-valued options (a DESI
    ``redshift_catalog``) travel with the data.
    """
    name = safe_name(name)
    limits = Limits.from_env()
    memory_mb = memory_mb or _env_int("SPECTOK_WORKER_MEMORY_MB", MEMORY_MB)
    cpu_seconds = cpu_seconds or _env_int("SPECTOK_WORKER_CPU_S", CPU_SECONDS)
    plain, blobs = _split_options(options)
    request = {"name": name, "size": len(data), "options": plain, "memory_mb": memory_mb,
               "cpu_seconds": cpu_seconds, "blobs": [[k, len(v)] for k, v in blobs.items()],
               "crash_test": _crash_test, "max_answer": 8 * limits.max_bytes + 2**20}
    payload = json.dumps(request).encode() + b"\n" + bytes(data) + b"".join(blobs.values())
    worker = _take_worker()
    try:
        # Written from a thread, so that a worker that stops reading cannot block us past the timeout.
        writer = threading.Thread(target=worker.send, args=(payload,), daemon=True)
        writer.start()
        try:
            code = worker.process.wait(timeout=2 * cpu_seconds + 10)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
            raise SpectrumError(f"{name}: reading it took more than {2 * cpu_seconds + 10} s and "
                                "was stopped; the file is too large or crafted to be slow") from None
        out, err = worker.out, worker.err
        if os.fstat(out.fileno()).st_size > request["max_answer"]:
            raise SpectrumError(f"{name}: the reader's answer is too large; the file may be crafted")
        out.seek(0)
        answer = out.read()
        if code != 0:
            err.seek(max(0, os.fstat(err.fileno()).st_size - 2000))
            log.warning("the reader worker for %s ended with %s: %s", name, code,
                        err.read().decode("utf-8", "replace"))
    finally:
        worker.close()
        if not getattr(_deferred, "active", False):
            start_spare()
    if code != 0 or answer[:2] not in (b"ok", b"er"):
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            raise SpectrumError(f"{name}: reading it took more than {cpu_seconds} s of CPU time "
                                "and was stopped; the file is too large or crafted to be slow")
        what = _signal_name(code) if code < 0 else f"exit status {code}"
        raise SpectrumError(f"{name}: the file crashed the reader ({what}); it is damaged or "
                            "crafted. The server is fine; check the file or try another")
    if answer[:2] == b"er":
        raise SpectrumError(answer[2:].decode("utf-8", "replace"))
    try:
        return decode(answer[2:], limits)
    except (SpectrumError, KeyError, ValueError, TypeError) as err:
        raise SpectrumError(f"{name}: the reader's answer was malformed ({str(err)[:100]}); "
                            "the file may be crafted") from None


if __name__ == "__main__":
    # The answer is written and flushed: end at once, without the interpreter's teardown of
    # astropy and h5py (a few tenths of a second the user would otherwise wait for).
    status = _worker_main()
    sys.stdout.flush()
    os._exit(status)
