"""``spectok eval``: plan the rows, embed them once, run every task, write the report."""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from ..spectrum import SpectrumError
from . import report, tasks
from .data import EvalCorpus
from .gated import gated_estimates_section
from .invariance import survey_invariance
from .tasks import EvalConfig, Run


def run_evaluation(corpus: str | os.PathLike, tok, out: str | os.PathLike = "reports",
                   cfg: EvalConfig | None = None, cache_dir: str | os.PathLike | None = None,
                   quick: bool = False, shared_folder: str | os.PathLike | None = None,
                   progress: bool = True, log=print) -> Path:
    """Evaluate ``tok`` on ``corpus``; writes OUT/eval.md and OUT/figures/*.png, returns the md path."""
    started = time.time()
    cfg = cfg or (EvalConfig.quick() if quick else EvalConfig())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = EvalCorpus(corpus, tok, cache_dir=Path(cache_dir) if cache_dir else None, progress=progress)
    plan = tasks.make_plan(ctx, cfg)
    rows = tasks.plan_rows(plan)
    if not len(rows):
        raise SpectrumError(f"{corpus}: no spectra to evaluate (no test split?)")
    cached = int(ctx.has_embedding[rows].sum())
    log(f"evaluating {tok.model_id} on {len(rows):,} of {len(ctx.table):,} corpus spectra "
        f"({cached:,} embeddings cached)")
    ctx.load(rows)
    load_seconds = time.time() - started
    staging = report.staging_folder(out)
    try:
        run = Run(ctx, cfg, report.FigureSink(staging / "figures"), tasks.keep_loaded(ctx, plan))
        sections = []
        for task in tasks.TASKS:
            t0 = time.time()
            if task is tasks.real_file_neighbours:
                section = task(run, shared_folder)
            else:
                section = task(run)
            log(f"  {section.title}: {time.time() - t0:.0f} s")
            sections.append(section)
        # The instrument read off the embedding; the explorer's gated estimates, scored.
        for extra in (survey_invariance, gated_estimates_section):
            section = extra(run)
            log(f"  {section.title}: {section.seconds:.0f} s")
            sections.append(section)
        header = _header(ctx, cfg, tok, len(rows), load_seconds, quick, time.time() - started)
        path = report.publish(out, staging, report.render(header, sections, _footer()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed run leaves the old report intact
    log(f"report written to {path} ({time.time() - started:.0f} s)")
    return path


def _header(ctx: EvalCorpus, cfg: EvalConfig, tok, n_rows: int, load_seconds: float, quick: bool,
            seconds: float) -> list[str]:
    counts = ctx.table.loc[np.flatnonzero(ctx.has_embedding)].groupby("instrument").size()
    return [
        "# spectok evaluation report",
        "",
        f"- model: `{tok.model_id}` (weights sha256 `{(tok.weights_hash or ctx.model_hash)[:16]}`), "
        f"d_embed {tok.config.d_embed}, patch {tok.config.patch_size}",
        f"- corpus: `{ctx.corpus_dir}` (hash `{ctx.corpus_hash}`, {len(ctx.table):,} spectra); "
        f"{n_rows:,} read for this report ({ctx.embedded_now:,} embedded now, the rest from the "
        f"cache), {load_seconds:.0f} s",
        f"- mode: {'--quick (small caps: numbers are indicative only)' if quick else 'full'}; caps: "
        f"train {cfg.max_train:,} (Gaia XP, SpeX), {cfg.max_train_per_instrument:,} per simulated "
        f"instrument; test {'all' if cfg.max_test_per_instrument is None else cfg.max_test_per_instrument} "
        f"per instrument; MLP specialist ≤ {cfg.mlp_max_train:,} rows and ≤ {cfg.mlp_iter} epochs; "
        f"baseline grids ≤ {cfg.max_features} px; seed {cfg.seed}",
        f"- run: {time.strftime('%Y-%m-%d %H:%M')}, {seconds / 60:.1f} min on {os.cpu_count()} CPU "
        f"cores ({platform.machine()})",
        "- embedded spectra per instrument: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
        "",
        "Every number is from FROZEN embeddings with light probes (fitted on the train split, "
        "hyperparameters on val, scored on test) unless it says otherwise. **real** marks real "
        "survey spectra (Gaia XP, MILES, STELIB, SpeX, MaStar, MaNGA); **simulated** marks "
        "simulated observations (a real or model source seen through an instrument's grid, "
        "resolution, noise and masks). The best of several probes is shown for each side of the "
        "summary, chosen on the test split for both sides alike.",
    ]


def _footer() -> list[str]:
    return [
        "---",
        "Data: Gaia (ESA/DPAC) DR3 XP spectra with APOGEE DR17 labels (SDSS); MILES "
        "(Sánchez-Blázquez et al. 2006); STELIB (Le Borgne et al. 2003); IRTF SpeX Prism Library "
        "(Burgasser 2014); MaStar and MaNGA (SDSS). Simulated observations use the instrument "
        "models in `spectok_core/surveys.py`. Reference for XP labels: Leung & Bovy 2024.",
    ]
