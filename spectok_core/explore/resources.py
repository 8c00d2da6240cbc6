"""Where the model, the index and the bundled examples live; credits and the model card."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import surveys
from ..spectrum import Spectrum, SpectrumError
from .common import EXAMPLES_DIR, INDEX_ENV, MODEL_ENV, SHIPPED_MODEL
from .figures import neighbours_figure, overlay_figure, spectrum_figure

if TYPE_CHECKING:  # heavy imports only for type checkers
    from ..index import SpectrumIndex
    from ..model.tokenizer import Tokenizer


# -- where the model and the index live ---------------------------------------------------


def model_path() -> Path | None:
    """``SPECTOK_MODEL`` if set, else None (the tokenizer's shipped default)."""
    value = os.environ.get(MODEL_ENV, "").strip()
    return Path(value).expanduser() if value else None


def index_path() -> Path | None:
    """``SPECTOK_INDEX`` if set, else None (the index's shipped default)."""
    value = os.environ.get(INDEX_ENV, "").strip()
    return Path(value).expanduser() if value else None


def load_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer the app uses; a missing model raises SpectrumError saying what to do."""
    from ..model.tokenizer import Tokenizer

    folder = Path(path) if path is not None else model_path()
    try:
        return Tokenizer.from_pretrained(folder)
    except SpectrumError as err:
        raise SpectrumError(
            f"{err}. The app reads the model from ${MODEL_ENV} (default {SHIPPED_MODEL})."
        ) from None


def load_index(tokenizer: Tokenizer | None, path: str | os.PathLike | None = None) -> SpectrumIndex:
    """The index the app searches; it refuses one built with other weights."""
    from ..index import SpectrumIndex

    folder = Path(path) if path is not None else index_path()
    try:
        return SpectrumIndex.load(folder, tokenizer=tokenizer)
    except FileNotFoundError as err:
        raise SpectrumError(
            f"no index at {folder or 'the shipped indexes/demo'} ({err}); build one with "
            f"`spectok index build` and point ${INDEX_ENV} at it"
        ) from None


def warm_up(tokenizer: Tokenizer | None = None) -> None:
    """Pay one-off costs (plotly's validators, the model's first pass) before the first query.

    Plotly builds its property validators on first use (~0.5 s on a loaded CPU),
    and torch's first forward pass is slower than the rest; the app calls this
    once while it loads the model, so a user's first upload is as fast as the next.
    """
    wave = np.linspace(4000.0, 9000.0, 1024)
    flux = 1.0 + 0.1 * np.sin(wave / 97.0)
    mask = np.zeros(wave.size, bool)
    mask[100:120] = True
    spectrum = Spectrum(wave, flux, np.full(wave.size, 1e4), mask, "unknown", {"object_id": "warm-up"})
    spectrum_figure(spectrum, z=0.1)
    neighbours_figure(spectrum, [spectrum], ["warm-up"])
    overlay_figure(spectrum, [spectrum], ["warm-up"])
    if tokenizer is not None:
        tokenizer.embed([spectrum])


def examples(folder: Path | None = None) -> list[Path]:
    """The bundled example spectra (assets/examples), sorted by name."""
    folder = EXAMPLES_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".ecsv"))


def example_title(path: Path) -> str:
    """A readable title from the first '# title:' comment line, else the file name."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith("#"):
                    break
                text = line.lstrip("#").strip()
                if text.lower().startswith("title:"):
                    return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return path.stem.replace("_", " ")


# -- credits and the model card ----------------------------------------------------------------


def credits() -> dict[str, list[tuple[str, str]]]:
    """Acknowledgements: every survey in the registry, and every PyPI data package."""
    from ..data.fetch import PACKAGES

    survey_credits = [(s.name, s.credit) for s in surveys.SURVEYS.values() if s.credit]
    package_credits = [(f"{p.requirement} — {p.what}", p.credit) for p in PACKAGES]
    return {"surveys": survey_credits, "packages": package_credits}


def model_card(folder: str | os.PathLike | None = None) -> str | None:
    """The model's MODEL_CARD.md text, or None when the folder has none."""
    folder = Path(folder) if folder is not None else (model_path() or SHIPPED_MODEL)
    card = folder / "MODEL_CARD.md"
    return card.read_text(encoding="utf-8") if card.is_file() else None


def model_card_parts(text: str, top_level: int = 3) -> tuple[str, str]:
    """A model card split for a page: (what a user reads, the developer sections).

    Headings are shifted so the card's title sits at ``top_level`` (``###`` under the page's
    "Model card" header), keeping heading levels in order. Sections (``##`` in the card)
    that hold a table — architecture, training numbers, ablations — are the developer
    part, for an expander; the rest (limits, credits) is shown. Headings inside code
    blocks are left alone.
    """
    shift = max(0, top_level - 1)
    sections: list[list[str]] = [[]]
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        heading = not in_code and line.startswith("#")
        if heading and len(line) - len(line.lstrip("#")) == 2:  # a "## " section starts
            sections.append([])
        if heading:
            level = len(line) - len(line.lstrip("#"))
            line = "#" * min(6, level + shift) + line[level:]
        sections[-1].append(line)
    user, developer = [sections[0]], []
    for section in sections[1:]:
        has_table = any(line.lstrip().startswith("|---") or line.lstrip().startswith("| ---")
                        for line in section)
        (developer if has_table else user).append(section)
    return _join_sections(user), _join_sections(developer)


def _join_sections(sections: list[list[str]]) -> str:
    return "\n\n".join("\n".join(s).strip("\n") for s in sections if any(s)).strip()
