"""Summaries of a training run: the loss curve per survey and the final loss table."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_loss_log(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``loss.csv`` as {survey: (steps, chi2)}, keeping the last entry for a repeated step
    (a resumed run logs the steps after its checkpoint again)."""
    rows: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["survey"]][int(row["step"])] = float(row["chi2"])
    return {
        survey: (np.array(sorted(values)), np.array([values[k] for k in sorted(values)]))
        for survey, values in rows.items()
    }


def final_losses(curves: dict[str, tuple[np.ndarray, np.ndarray]], last: int = 300) -> dict[str, float]:
    """Median χ² per pixel per survey over the last ``last`` steps (robust to single batches)."""
    out = {}
    for survey, (steps, chi2) in curves.items():
        keep = steps > steps.max() - last
        out[survey] = float(np.median(chi2[keep])) if keep.any() else float("nan")
    return out


PAIR_PREFIX = "pairs: "  # the cross-survey terms in loss.csv (not per-survey χ²)
VIEW_PREFIX = "crop: "  # the cropped-view terms


def plot_loss_curve(log: Path, out: Path, smooth: int = 15, title: str = "spectok-small",
                    phases: dict[int, str] | None = None) -> Path:
    """The running χ² per survey against step (log scale); the cross-survey pair terms, when
    the run had them, in a second panel. ``phases`` marks steps where training changed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.figures import save_png

    curves = read_loss_log(log)
    pair_curves = {k: v for k, v in curves.items() if k.startswith((PAIR_PREFIX, VIEW_PREFIX))}
    survey_curves = {k: v for k, v in curves.items() if not k.startswith((PAIR_PREFIX, VIEW_PREFIX))}
    panels = 2 if pair_curves else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 5 + 2.5 * (panels - 1)), squeeze=False, sharex=True)
    for ax, group in zip(axes[:, 0], (survey_curves, pair_curves)):
        for name, (steps, values) in sorted(group.items()):
            if steps.size < 2:
                continue
            k = max(1, min(smooth, steps.size // 3))
            smoothed = np.exp(np.convolve(np.log(np.maximum(values, 1e-12)), np.ones(k) / k, mode="valid"))
            ax.plot(steps[k - 1 :], smoothed, lw=1.2, label=name.removeprefix(PAIR_PREFIX))
        ax.set_yscale("log")
        ax.legend(fontsize=8, ncol=3)
        for step, label in (phases or {}).items():
            ax.axvline(step, color="0.5", ls="--", lw=0.8)
            ax.text(step, 1.0, " " + label, transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")
    axes[0, 0].set_ylabel("χ² per usable pixel (running average)")
    axes[0, 0].set_title(f"{title}: training loss per survey (real and simulated spectra)")
    if pair_curves:
        axes[1, 0].set_ylabel("pair and cropped-view terms")
    axes[-1, 0].set_xlabel("training step")
    fig.tight_layout()
    return save_png(fig, out)
