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


def plot_loss_curve(log: Path, out: Path, smooth: int = 15) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_loss_log(log)
    fig, ax = plt.subplots(figsize=(9, 5))
    for survey, (steps, chi2) in sorted(curves.items()):
        if steps.size < 2:
            continue
        k = max(1, min(smooth, steps.size // 3))
        smoothed = np.exp(np.convolve(np.log(chi2), np.ones(k) / k, mode="valid"))
        ax.plot(steps[k - 1 :], smoothed, lw=1.2, label=survey)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("χ² per usable pixel (running median of batches)")
    ax.set_title("spectok-small: training loss per survey (real and simulated spectra)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
