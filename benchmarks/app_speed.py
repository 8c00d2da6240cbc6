"""How fast the explorer feels: start-up to an interactive first page, and upload to neighbours.

Starts ``spectok app --headless`` on a free port, drives it with Playwright and
Debian's chromium (/usr/bin/chromium; Playwright's own browser download is not
used), and prints:

* start → interactive: from launching ``spectok app`` to the Home page showing
  its links (clickable) — and to "ready", when the model and index are loaded
  and the page's script has finished;
* query: from handing a file to the Search page's uploader to the neighbours
  (table and spectra) drawn and the page idle — the median of several uploads.

Targets (DESIGN / the explorer issue): first page interactive < 5 s; upload → neighbours
drawn median < 1.5 s and worst < 3 s over the real files of ../shared/data/formats, on 2
CPU cores. A file the app refuses (e.g. SDSS's failed spectrum) is listed, not timed.
``--settle`` waits before each upload until the app and browser are idle (the previous
query's spare reader worker imported), as a user choosing a file would. Usage::

    .venv/bin/python benchmarks/app_speed.py [--model DIR] [--index DIR] [--repeat 3]
        [--files FILE ...]   # real survey files instead of the bundled examples
        [--settle] [--screenshot PNG]

Without --model/--index the app uses $SPECTOK_MODEL / $SPECTOK_INDEX or the
shipped ones. Say which model and index were used when quoting the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 900}  # a laptop screen; rendering cost grows with pixels
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def descendants_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds (user + system) used so far by every descendant of ``root`` (default: us).

    The app server, Playwright's driver and chromium all descend from this
    process, so the difference across a query is the CPU the query cost —
    a figure a loaded machine does not inflate the way it inflates wall time.
    """
    root = os.getpid() if root is None else root
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid in cpu:
        p = parent.get(pid)
        while p and p != root:
            p = parent.get(p)
        if p == root:
            total += cpu[pid]
    return total


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) of one process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(window_s: float = 0.3, busy_cpu: float = 0.03, timeout_s: float = 10.0) -> float:
    """Wait until the app server and browser use under ``busy_cpu`` CPU-s per ``window_s``.

    After the previous query the server starts a spare reader worker (about 1 s of
    imports) and the browser finishes drawing; a user takes longer than that to choose the
    next file. Returns the seconds waited (``timeout_s`` when it never went quiet).
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        before = descendants_cpu_seconds()
        time.sleep(window_s)
        if descendants_cpu_seconds() - before < busy_cpu:
            break
    return time.monotonic() - t0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spectok_command() -> list[str]:
    exe = Path(sys.executable).with_name("spectok")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "spectok_core.cli"]


def start_app(port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [*spectok_command(), "app", "--headless", "--port", str(port), "--address", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def stop_app(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the page's script has finished (call after the new content has appeared)."""
    page.wait_for_selector(IDLE, state="attached", timeout=timeout_ms)


def wait_plots(page, count: int, timeout_ms: int = 60_000) -> None:
    """Wait until ``count`` plotly charts have been drawn (their SVG exists)."""
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {count}",
        timeout=timeout_ms)


def open_when_up(page, url: str, deadline: float) -> None:
    while True:
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=5000)
            return
        except Exception:  # noqa: BLE001 - connection refused until the server is up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def measure_start(browser, port: int, env: dict) -> tuple[float, float, subprocess.Popen]:
    t0 = time.monotonic()
    process = start_app(port, env)
    page = browser.new_page(viewport=VIEWPORT)
    open_when_up(page, f"http://127.0.0.1:{port}/", t0 + 60)
    page.get_by_text("Search — upload a spectrum").wait_for(timeout=60_000)
    interactive = time.monotonic() - t0
    page.get_by_text("loaded; index of").wait_for(timeout=120_000)
    wait_idle(page)
    ready = time.monotonic() - t0
    page.close()
    return interactive, ready, process


def object_id(path: Path) -> str:
    """The OBJECT_ID a bundled example's header gives (to recognise its results)."""
    for line in path.read_text().splitlines():
        if line.startswith("# OBJECT_ID:"):
            return line.split(":", 1)[1].strip()
    return ""


def measure_query(browser, port: int, files: list[Path], screenshot: Path | None,
                  server_pid: int | None = None, settle: bool = False,
                  ) -> tuple[list[float], list[float], list[str]]:
    """Upload each file on a fresh Search page; (times, CPU, refused files).

    A file the app refuses (its error message shown instead of neighbours) is listed, not
    timed. ``settle``: before each upload, wait until the app and browser are idle (see
    :func:`wait_quiet`) so that one query's clean-up does not land in the next's time.
    """
    page = browser.new_page(viewport=VIEWPORT)
    # As a user does: land on Home, then follow the link to Search.
    page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
    page.get_by_text("loaded; index of").wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("link", name="Search", exact=True).click()
    page.locator('input[type="file"]').wait_for(state="attached", timeout=60_000)
    wait_idle(page)
    times, cpu, refused = [], [], []
    search_url = page.url
    for number, path in enumerate(files):
        if number:
            # The uploader keeps earlier files (it takes several at once): start each query
            # from a fresh Search page, so the timing covers this file alone.
            page.goto(search_url, wait_until="domcontentloaded")
            page.locator('input[type="file"]').wait_for(state="attached", timeout=60_000)
            wait_idle(page)
        waited = wait_quiet() if settle else 0.0
        cpu0 = descendants_cpu_seconds()
        server0 = process_cpu_seconds(server_pid) if server_pid else 0.0
        t0 = time.monotonic()
        page.locator('input[type="file"]').set_input_files(str(path))
        # The neighbours' summary line (the file's id now sits in a canvas-drawn table), or
        # the message of a file the app refuses.
        closest = page.get_by_text("Closest: ").first
        closest.or_(page.get_by_text("could not be read").first).wait_for(timeout=60_000)
        if not closest.is_visible():
            refused.append(path.name)
            print(f"  {path.name}: refused by the app (its message shown), not timed")
            continue
        seen = time.monotonic() - t0
        page.get_by_text("Download neighbours (CSV)").wait_for(timeout=60_000)
        wait_idle(page)
        idle = time.monotonic() - t0
        wait_plots(page, 2)  # the spectrum and the neighbours' small multiples
        times.append(time.monotonic() - t0)
        cpu.append(descendants_cpu_seconds() - cpu0)
        server = process_cpu_seconds(server_pid) - server0 if server_pid else float("nan")
        print(f"  {path.name}: spectrum read {seen:.2f} s, script done {idle:.2f} s, "
              f"drawn {times[-1]:.2f} s; CPU used by app + browser {cpu[-1]:.2f} s "
              f"(app server {server:.2f} s)" + (f"; waited {waited:.1f} s for quiet" if settle else ""))
    if screenshot is not None:
        page.set_viewport_size({"width": 1400, "height": 2400})  # the whole page in one picture
        page.goto(search_url, wait_until="domcontentloaded")
        page.locator('input[type="file"]').wait_for(state="attached", timeout=60_000)
        wait_idle(page)
        page.locator('input[type="file"]').set_input_files(str(files[0]))
        page.get_by_text("Closest: ").first.wait_for(timeout=60_000)
        wait_idle(page)
        page.wait_for_timeout(500)
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return times, cpu, refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (sets SPECTOK_MODEL)")
    parser.add_argument("--index", default=None, help="index folder (sets SPECTOK_INDEX)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads to time (median reported)")
    parser.add_argument("--starts", type=int, default=2,
                        help="app starts; the first warms caches, the last is reported")
    parser.add_argument("--screenshot", default=None, help="save the Search page here (PNG)")
    parser.add_argument("--settle", action="store_true",
                        help="before each upload wait until app and browser are idle, as a "
                             "user choosing the next file would (default: upload at once)")
    parser.add_argument("--files", nargs="+", default=None, metavar="FILE",
                        help="upload these files (e.g. real survey files such as ../shared/data/formats/"
                        "*/*.fits) instead of the bundled examples; each is one query")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("error: pip install playwright (the browser extra)", file=sys.stderr)
        return 1
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if args.model:
        env["SPECTOK_MODEL"] = str(Path(args.model).resolve())
    if args.index:
        env["SPECTOK_INDEX"] = str(Path(args.index).resolve())
    if args.files:
        missing = [f for f in args.files if not Path(f).is_file()]
        if missing:
            print(f"error: not a file: {', '.join(missing)}", file=sys.stderr)
            return 1
        files = [Path(f).resolve() for f in args.files]
    else:
        examples = sorted((REPO / "assets" / "examples").glob("*.csv"))
        if not examples:
            print("error: no example spectra in assets/examples", file=sys.stderr)
            return 1
        files = (examples * args.repeat)[: args.repeat]
    print(f"# model {env.get('SPECTOK_MODEL', 'shipped')}, index {env.get('SPECTOK_INDEX', 'shipped')}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        process = None
        try:
            for start in range(max(1, args.starts)):
                if process is not None:
                    stop_app(process)
                interactive, ready, process = measure_start(browser, free_port(), env)
                print(f"start {start + 1}: interactive {interactive:.2f} s, "
                      f"model + index loaded {ready:.2f} s")
            port = int(process.args[process.args.index("--port") + 1])
            shot = Path(args.screenshot) if args.screenshot else None
            times, cpu, refused = measure_query(browser, port, files, shot,
                                                server_pid=process.pid, settle=args.settle)
            if refused:
                print(f"refused (not timed): {', '.join(refused)}")
            if not times:
                print("error: the app refused every file", file=sys.stderr)
                return 1
            print("query (upload -> neighbours drawn"
                  + (", each upload once the app was idle" if args.settle else "") + "): "
                  + ", ".join(f"{t:.2f}" for t in times) + f" s; median {statistics.median(times):.2f} s"
                  f" (first {times[0]:.2f} s, later median {statistics.median(times[1:] or times):.2f} s);"
                  f" worst {max(times):.2f} s over {len(times)} files;"
                  f" CPU per query median {statistics.median(cpu):.2f} s")
            print(f"RESULT start_interactive_s={interactive:.2f} start_ready_s={ready:.2f} "
                  f"query_median_s={statistics.median(times):.2f} query_worst_s={max(times):.2f} "
                  f"query_cpu_median_s={statistics.median(cpu):.2f} "
                  f"load_average={os.getloadavg()[0]:.1f}")
        finally:
            if process is not None:
                stop_app(process)
                if process.stdout and process.returncode not in (0, -signal.SIGTERM, None):
                    print(process.stdout.read()[-2000:], file=sys.stderr)
            browser.close()
    return 0


if __name__ == "__main__":
    if shutil.which("spectok") is None and not Path(sys.executable).with_name("spectok").exists():
        print("note: no spectok console script found; using python -m spectok_core.cli",
              file=sys.stderr)
    sys.exit(main())
