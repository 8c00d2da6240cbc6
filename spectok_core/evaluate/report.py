"""The evaluation report: tables, a summary of wins and losses, figures, one markdown file.

Sections hand over plain tables (rows of cells) and headline comparisons; this
module only renders them. Everything is written into a staging folder first;
figures are then moved into ``OUT/figures/`` and ``OUT/eval.md`` is replaced
last, so a reader never sees a half-written report.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Table:
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    caption: str = ""
    formats: dict[str, str] = field(default_factory=dict)  # column -> "{:.3f}" etc.

    def add(self, **cells) -> None:
        self.rows.append(cells)

    def markdown(self) -> str:
        lines = []
        if self.caption:
            lines += [self.caption, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(self._cell(c, row.get(c)) for c in self.columns) + " |")
        return "\n".join(lines)

    def _cell(self, column: str, value) -> str:
        if value is None:
            return "—"
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value):
                return "—"
            return self.formats.get(column, "{:.3g}").format(float(value))
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return f"{int(value):,}"
        return str(value).replace("|", "/")


@dataclass
class Headline:
    """One line of the summary: the model's best probe against the baselines on one metric."""

    task: str
    metric: str
    data: str  # "real", "simulated" or "real + simulated"
    spectok: float
    baseline: float | None = None  # best common-grid baseline (PCA / flux); None: cannot run
    baseline_name: str = ""
    specialist: float | None = None  # the supervised MLP on resampled flux
    lower_is_better: bool = True
    note: str = ""

    def verdict(self) -> str:
        if not _ok(self.spectok):
            return "no result"
        if not _ok(self.baseline):
            return "only spectok can (no common grid)" if self.baseline is None else "—"
        parts = [_compare(self.spectok, self.baseline, self.lower_is_better, "baselines")]
        if _ok(self.specialist):
            parts.append(_compare(self.spectok, self.specialist, self.lower_is_better, "the MLP"))
        return "; ".join(parts)


def _ok(value) -> bool:
    return value is not None and isinstance(value, (int, float, np.floating)) and math.isfinite(value)


def _compare(ours: float, theirs: float, lower_is_better: bool, name: str) -> str:
    scale = max(abs(ours), abs(theirs), 1e-12)
    if abs(ours - theirs) <= 0.02 * scale:
        return f"ties {name}"
    better = ours < theirs if lower_is_better else ours > theirs
    return f"**beats {name}**" if better else f"loses to {name}"


@dataclass
class Section:
    key: str
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs (markdown)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    headlines: list[Headline] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        for paragraph in self.text:
            parts += [paragraph, ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        for name, caption in self.figures:
            parts += [f"![{caption}](figures/{name})", f"*{caption}*", ""]
        parts.append(f"<sub>section time: {self.seconds:.0f} s</sub>")
        return "\n".join(parts) + "\n"


class FigureSink:
    """Saves matplotlib figures into the staging folder and remembers their names."""

    def __init__(self, folder: Path, dpi: int = 90):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dpi = dpi

    def save(self, figure, name: str) -> str:
        import matplotlib.pyplot as plt

        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        if not safe.endswith(".png"):
            safe += ".png"
        figure.savefig(self.folder / safe, dpi=self.dpi, bbox_inches="tight")
        plt.close(figure)
        return safe


def summary(sections: list[Section]) -> Table:
    table = Table(
        ["task", "metric", "data", "spectok (best probe)", "best baseline", "MLP specialist", "verdict"],
        caption="Where the universal model wins and loses. *spectok*: frozen embeddings + the "
        "better of its light probes; *best baseline*: the better of PCA + probe and kNN on "
        "resampled flux on the task's common grid; *MLP specialist*: a supervised network trained "
        "on that grid for this task alone. A tie is within 2 %.",
    )
    for section in sections:
        for h in section.headlines:
            baseline = "N/A" if h.baseline is None else h.baseline
            table.add(**{
                "task": h.task, "metric": h.metric, "data": h.data,
                "spectok (best probe)": h.spectok, "MLP specialist": h.specialist,
                "best baseline": baseline if baseline == "N/A" or not h.baseline_name
                else f"{_fmt(h.baseline)} ({h.baseline_name})",
                "verdict": h.verdict() + (f" — {h.note}" if h.note else ""),
            })
    table.formats = {"spectok (best probe)": "{:.4g}", "MLP specialist": "{:.4g}"}
    return table


def _fmt(value) -> str:
    return "—" if not _ok(value) else f"{float(value):.4g}"


def tally(sections: list[Section]) -> str:
    """One sentence: how often the model beats, ties or loses to the baselines and the MLP."""
    headlines = [h for s in sections for h in s.headlines if _ok(h.spectok)]
    only = sum(h.baseline is None for h in headlines)
    compared = [h for h in headlines if _ok(h.baseline)]
    verdicts = [_compare(h.spectok, h.baseline, h.lower_is_better, "") for h in compared]
    mlp = [_compare(h.spectok, h.specialist, h.lower_is_better, "") for h in compared if _ok(h.specialist)]

    def count(items, word):
        return sum(v.strip("* ").startswith(word) for v in items)

    return (f"Of {len(compared)} metrics with a common-grid baseline, spectok beats the best baseline "
            f"on {count(verdicts, 'beats')}, ties on {count(verdicts, 'ties')} and loses on "
            f"{count(verdicts, 'loses')}; against the supervised MLP it wins {count(mlp, 'beats')}, "
            f"ties {count(mlp, 'ties')} and loses {count(mlp, 'loses')} of {len(mlp)}. "
            f"{only} metric(s) only spectok can measure (no common wavelength range).")


def render(header: list[str], sections: list[Section], footer: list[str]) -> str:
    parts = ["\n".join(header), "", "## Summary", "", tally(sections), "",
             summary(sections).markdown(), ""]
    parts += [section.markdown() for section in sections]
    parts += ["\n".join(footer), ""]
    return "\n".join(parts)


def staging_folder(out: Path) -> Path:
    staging = Path(out) / f".eval-staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "figures").mkdir(parents=True)
    return staging


def publish(out: Path, staging: Path, markdown: str) -> Path:
    """Move staged figures into OUT/figures and write OUT/eval.md last (atomic replace)."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for path in sorted((staging / "figures").glob("*.png")):
        os.replace(path, figures / path.name)
    tmp = staging / "eval.md"
    tmp.write_text(markdown, encoding="utf-8")
    os.replace(tmp, out / "eval.md")
    shutil.rmtree(staging, ignore_errors=True)
    return out / "eval.md"
