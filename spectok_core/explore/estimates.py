"""Neighbour estimates (class vote, medians and spreads) and the gates that withhold them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..spectrum import Spectrum
from .common import LABELS


def _robust_spread(values: np.ndarray) -> float:
    """1.4826 × median absolute deviation: a standard deviation that ignores outliers."""
    if values.size < 2:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


@dataclass
class Estimate:
    """One neighbour estimate: a value, its spread among the neighbours, and how many voted."""

    name: str
    value: Any
    spread: float
    n: int
    note: str = ""
    reliable: bool = True  # passed the gates of gated_estimates (ungated estimates: True)
    reason: str = ""  # why it is not reliable
    file_value: Any = None  # what the file itself says (its pipeline's class, z, ...): against_file


def _class_vote(labels: pd.Series):
    """(winner, its share, the counts, voters) of the neighbours' classes, or None if nobody voted.

    Ties go to the class of the best-ranked neighbour among the tied.
    """
    classes = labels.dropna().astype(str)
    classes = classes[(classes != "") & (classes != "None")]
    if not len(classes):
        return None
    counts = classes.value_counts()
    tied = set(counts[counts == counts.iloc[0]].index)
    winner = next(c for c in classes if c in tied)
    return winner, float(counts[winner] / len(classes)), counts, int(len(classes))


def _vote_note(counts: pd.Series) -> str:
    return ", ".join(f"{c}: {n}" for c, n in counts.items())


def neighbour_estimates(hits: pd.DataFrame) -> dict[str, Estimate]:
    """Class vote and label medians among the neighbours (NOT a fit to the spectrum).

    * class: the majority among neighbours with a class; ``spread`` is the share
      of them that agree (1.0 = unanimous).
    * z: median and robust spread (1.4826 × MAD) over the neighbours of the
      winning class, when it is GALAXY or QSO (stars' radial-velocity z are not
      redshifts to quote).
    * teff, logg, feh: median and robust spread over the STAR neighbours, when
      the winning class is STAR.

    Without any class information every neighbour with a value counts.

    Unweighted: every neighbour counts the same whatever its similarity.
    Missing columns or values are skipped; an estimate nobody voted for is absent.
    """
    out: dict[str, Estimate] = {}
    if hits is None or len(hits) == 0:
        return out
    winner = None
    if "class" in hits:
        vote = _class_vote(hits["class"])
        if vote is not None:
            winner, share, counts, n = vote
            out["class"] = Estimate("class", winner, share, n, _vote_note(counts))
    for key in LABELS:
        if key not in hits:
            continue
        rows, note = hits, ""
        # A redshift is read from galaxies and quasars, stellar labels from stars: a
        # quasar's one stellar neighbour says nothing about its temperature.
        wanted = ("GALAXY", "QSO") if key == "z" else ("STAR",)
        if winner is not None:
            if winner not in wanted:
                continue
            rows = hits[hits["class"].astype(str) == winner]
            note = f"from the {winner} neighbours"
        values = pd.to_numeric(rows[key], errors="coerce").to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        out[key] = Estimate(key, float(np.median(values)), _robust_spread(values), int(values.size), note)
    return out


# -- estimates that know when they do not know -------------------------------------------------

#: A neighbour counts towards an estimate only when at least this similar (cosine of the
#: embeddings). Indexed spectra have a median 5th-neighbour similarity of 0.92 with the shipped
#: model (10th percentile 0.83); real SDSS galaxies reach 0.85-0.95, an SDSS quasar at z = 1.2
#: only 0.49.
MIN_SIMILARITY = 0.80
#: An estimate needs at least this many counted neighbours that agree with it.
MIN_AGREEING = 3
#: The winning class must hold at least this share of the counted neighbours.
MIN_CLASS_SHARE = 0.7
#: Agreement per label: a neighbour agrees when |value - median| is within this (z: in units
#: of 1 + z; teff: as a fraction of Teff; logg and feh: in dex). z is strict: with a looser
#: 0.05 the shipped model let through SDSS galaxy redshifts off by 0.05-0.09.
AGREE = {"z": 0.02, "teff": 0.05, "logg": 0.3, "feh": 0.25}
#: An estimate whose robust spread (1.4826 MAD of the counted values, same units) is larger
#: than this is withheld.
MAX_SPREAD = {"z": 0.02, "teff": 0.08, "logg": 0.5, "feh": 0.4}
#: Median S/N per pixel below which no estimate is given (noise-only fibres reach S/N ~ 1).
LOW_SNR = 3.0
#: A best neighbour less similar than this means the spectrum lies outside what the model
#: and the index know.
OUT_OF_RANGE_SIMILARITY = 0.70
NO_ESTIMATE = "no reliable estimate"


def _relative(key: str, centre: float) -> float:
    """The scale that AGREE and MAX_SPREAD are in units of, at ``centre``."""
    return 1.0 + centre if key == "z" else abs(centre) if key == "teff" else 1.0


def estimate_warnings(spectrum: Spectrum | None, hits: pd.DataFrame,
                      index_surveys: Sequence[str] | None = None) -> list[str]:
    """Why a user should not trust the neighbours much: low S/N, outside the known range."""
    warnings: list[str] = []
    if spectrum is not None:
        snr = spectrum.median_snr
        if not snr >= LOW_SNR:
            warnings.append(f"low signal-to-noise: median S/N per pixel {snr:.1f} (below {LOW_SNR:g}); "
                            "the neighbours of a noise-dominated spectrum say little, so no "
                            "estimate is given")
        if index_surveys is not None and spectrum.survey not in set(index_surveys):
            warnings.append(f"no {spectrum.survey} spectra are in the index: the neighbours come "
                            "from other instruments only")
    if hits is not None and len(hits) and "similarity" in hits:
        best = float(pd.to_numeric(hits["similarity"], errors="coerce").max())
        if not best >= OUT_OF_RANGE_SIMILARITY:
            warnings.append(f"outside what the model was trained on: the closest indexed spectrum "
                            f"has similarity {best:.2f} (below {OUT_OF_RANGE_SIMILARITY:g})")
    return warnings


def gated_estimates(hits: pd.DataFrame, spectrum: Spectrum | None = None) -> dict[str, Estimate]:
    """Neighbour estimates with gates: each is ``reliable`` only when it can be trusted.

    Only neighbours with similarity >= :data:`MIN_SIMILARITY` count. The class needs
    :data:`MIN_AGREEING` of them voting for it and a share >= :data:`MIN_CLASS_SHARE`;
    z (galaxies, quasars) and Teff, log g, [Fe/H] (stars) need a reliable class, at
    least :data:`MIN_AGREEING` counted neighbours within :data:`AGREE` of their median,
    and a robust spread <= :data:`MAX_SPREAD`. The value is the median of the agreeing
    neighbours; the spread is over all counted ones. A spectrum with S/N below
    :data:`LOW_SNR` gets no estimate. Unreliable estimates keep their value and say why
    in ``reason``; a page shows :data:`NO_ESTIMATE` for them.
    """
    out: dict[str, Estimate] = {}
    if hits is None or len(hits) == 0:
        return out
    similarity = pd.to_numeric(hits.get("similarity", pd.Series(1.0, index=hits.index)),
                               errors="coerce").fillna(0.0)
    close = hits[similarity.to_numpy() >= MIN_SIMILARITY]
    low_snr = spectrum is not None and not spectrum.median_snr >= LOW_SNR
    snr_reason = f"S/N {spectrum.median_snr:.1f} is below {LOW_SNR:g}" if low_snr else ""
    few = f"fewer than {MIN_AGREEING} neighbours with similarity ≥ {MIN_SIMILARITY:g}"
    winner, class_ok = None, False
    if "class" in hits:
        vote = _class_vote(close["class"])
        if vote is not None:
            winner, share, counts, n = vote
            note = _vote_note(counts)
            reason = snr_reason
            if not reason and counts[winner] < MIN_AGREEING:
                reason = f"only {counts[winner]} close neighbours are {winner}"
            elif not reason and share < MIN_CLASS_SHARE:
                reason = f"the close neighbours disagree ({share:.0%} {winner})"
            class_ok = not reason
            out["class"] = Estimate("class", winner, share, n, note, class_ok, reason)
        else:
            out["class"] = Estimate("class", None, float("nan"), 0, "", False, snr_reason or few)
    for key in LABELS:
        if key not in hits:
            continue
        wanted = ("GALAXY", "QSO") if key == "z" else ("STAR",)
        if winner is not None and winner not in wanted:
            continue
        rows = close[close["class"].astype(str) == winner] if winner is not None else close
        values = pd.to_numeric(rows[key], errors="coerce").to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            if winner is not None and class_ok:
                out[key] = Estimate(key, None, float("nan"), 0, "", False, f"no close {winner} "
                                    f"neighbour has a {LABELS[key]}")
            continue
        centre = float(np.median(values))
        scale = _relative(key, centre)
        agreeing = values[np.abs(values - centre) <= AGREE[key] * scale]
        spread = _robust_spread(values)
        reason = snr_reason
        if not reason and winner is not None and not class_ok:
            reason = "the class is not reliable"
        if not reason and agreeing.size < MIN_AGREEING:
            if values.size < MIN_AGREEING:
                reason = (f"only {values.size} close neighbour{'s have' if values.size > 1 else ' has'} "
                          f"a {LABELS[key]}")
            else:
                within = {"z": "× (1 + z)", "teff": "× Teff"}.get(key, "dex")
                reason = (f"only {agreeing.size} of {values.size} close neighbours agree "
                          f"(within {AGREE[key]:g} {within})")
        if not reason and math.isfinite(spread) and spread > MAX_SPREAD[key] * scale:
            reason = "the neighbours' values are too spread"
        value = float(np.median(agreeing)) if agreeing.size else centre
        note = f"from the {winner} neighbours" if winner is not None else ""
        out[key] = Estimate(key, value, spread, int(agreeing.size), note, not reason, reason)
    return out


#: Decimals a label is shown with.
DIGITS = {"z": 4, "teff": 0, "logg": 2, "feh": 2}
#: Labels that only a star has: withheld for a file whose pipeline calls it a galaxy or quasar.
STELLAR_KEYS = ("teff", "logg", "feh")


def _shown(key: str, value) -> str:
    """A class as it is, a label rounded to its :data:`DIGITS`."""
    return str(value) if key == "class" else f"{float(value):.{DIGITS[key]}f}"


def _file_value(spectrum: Spectrum, key: str):
    value = spectrum.meta.get(key)
    if key == "class":
        text = str(value or "").strip().upper()
        return text if text in ("STAR", "GALAXY", "QSO") else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def against_file(estimates: dict[str, Estimate], spectrum: Spectrum | None) -> dict[str, Estimate]:
    """The estimates beside what the file itself says: its pipeline's class, z, Teff, log g, [Fe/H].

    Each estimate gets the file's value in ``file_value``. A reliable estimate that
    disagrees with it (another class; a label further than :data:`AGREE` from it) is
    withheld, and its reason gives both values: the survey's own fit of this very
    spectrum outranks a median over similar ones. For a file that calls the object a galaxy
    or quasar, stellar labels (Teff, log g, [Fe/H]) from star-like neighbours are withheld
    too. Only for display: ``spectok eval`` scores :func:`gated_estimates` alone, whose
    gates never read the truth.
    """
    if spectrum is None:
        return estimates
    out = {}
    file_class = _file_value(spectrum, "class")
    for key, est in estimates.items():
        truth = _file_value(spectrum, key)
        if truth is None:
            if key in STELLAR_KEYS and file_class in ("GALAXY", "QSO") and est.reliable:
                # Star-like neighbours of a galaxy or quasar: their Teff says nothing about it.
                est = replace(est, reliable=False, reason=f"the file says {file_class}: "
                                                          "stellar labels do not apply")
            out[key] = est
            continue
        est = replace(est, file_value=truth)
        if est.reliable and est.value is not None:
            if key == "class":
                differs = str(est.value).upper() != truth
            else:
                differs = abs(float(est.value) - truth) > AGREE[key] * _relative(key, truth)
            if differs:
                est.reliable = False
                est.reason = (f"the neighbours say {_shown(key, est.value)}, "
                              f"the file says {_shown(key, truth)}")
        out[key] = est
    return out


def estimates_table(estimates: dict[str, Estimate]) -> pd.DataFrame:
    """The estimates as a small table for display, values rounded sensibly.

    An estimate that failed its gates shows :data:`NO_ESTIMATE` and the reason. When
    any estimate carries the file's own value (:func:`against_file`), an "in the file"
    column shows it.
    """
    rows = []
    for key, est in estimates.items():
        if not est.reliable:
            rows.append({"quantity": "class (vote)" if key == "class" else LABELS[key],
                         "neighbour estimate": NO_ESTIMATE, "spread": "–",
                         "neighbours used": est.n, "note": est.reason})
            continue
        if key == "class":
            rows.append({"quantity": "class (vote)", "neighbour estimate": str(est.value),
                         "spread": f"{est.spread:.0%} agree", "neighbours used": est.n,
                         "note": est.note})
            continue
        spread = "–" if not math.isfinite(est.spread) else f"± {_shown(key, est.spread)}"
        rows.append({"quantity": LABELS[key], "neighbour estimate": _shown(key, est.value),
                     "spread": spread, "neighbours used": est.n, "note": est.note})
    columns = ["quantity", "neighbour estimate", "spread", "neighbours used", "note"]
    table = pd.DataFrame(rows, columns=columns)
    known = [est.file_value for est in estimates.values()]
    if any(v is not None for v in known):
        table.insert(2, "in the file", ["" if v is None else _shown(key, v)
                                         for key, v in zip(estimates, known)])
    return table


def estimates_lines(estimates: dict[str, Estimate]) -> list[str]:
    """The estimates as lines of text (``spectok search``), saying what the Search page's table says."""
    lines = []
    for row in estimates_table(estimates).to_dict("records"):
        if row["neighbour estimate"] == NO_ESTIMATE:
            text = f"{row['quantity']}: {NO_ESTIMATE} ({row['note']})"
        else:
            text = (f"{row['quantity']}: {row['neighbour estimate']}, {row['spread']} "
                    f"({row['neighbours used']} neighbours)")
        if row.get("in the file"):
            text += f"; the file says {row['in the file']}"
        lines.append(text)
    return lines
