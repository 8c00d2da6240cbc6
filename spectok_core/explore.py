"""The explorer's library layer: everything the Streamlit pages compute, none of the layout.

The app (``app/``) only arranges widgets; what it shows comes from here, so
every number on a page can be tested without a browser: neighbour estimates
(a class vote and the median and spread of z, Teff, logg and [Fe/H] among the
neighbours — estimates from neighbours, not fits), rest-frame wavelengths,
line markers from :mod:`spectok_core.lines`, residuals in units of σ, the
"render this spectrum on another instrument's grid" step, and the plotly
figures. Plotly is imported lazily, so importing this module stays cheap.

Paths: the model and index come from ``SPECTOK_MODEL`` / ``SPECTOK_INDEX``
when set (tests point them at tiny ones), else the shipped defaults.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import lines as line_table
from . import surveys
from .spectrum import Spectrum, SpectrumError

if TYPE_CHECKING:  # heavy imports only for type checkers
    from .index import SpectrumIndex
    from .model.tokenizer import Tokenizer, TokenSet

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
SHIPPED_MODEL = REPO_ROOT / "assets" / "models" / "spectok-small"
MODEL_ENV, INDEX_ENV = "SPECTOK_MODEL", "SPECTOK_INDEX"

#: Metadata columns whose neighbour values make an estimate, with display names.
LABELS = {"z": "redshift z", "teff": "Teff [K]", "logg": "log g", "feh": "[Fe/H]"}
#: Map colourings offered by the atlas: categorical first, then continuous.
CATEGORICAL = ("survey", "class", "origin", "split")
CONTINUOUS = ("z", "teff", "logg", "feh")
#: Line families marked for each class (the metadata's upper-case class names).
CLASS_OBJECTS = {"STAR": "star", "GALAXY": "galaxy", "QSO": "qso"}
#: Strong features kept first when a range holds more lines than fit on a plot.
STRONG_LINES = (
    "Lya", "CIV_1549", "CIII]_1909", "MgII_2799", "OII_3727", "CaII_K", "CaII_H", "Hdelta",
    "Gband", "Hgamma", "Hbeta", "OIII_4960", "OIII_5008", "MgI_b2", "NaI_D2", "Halpha",
    "NII_6585", "SII_6718", "CaII_8544", "Paalpha", "Pabeta", "Brgamma", "Br11", "Br13",
    "HeI_10833", "TiO_7055", "KI_7701",
)

_SURVEY_COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39",
)


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
    from .model.tokenizer import Tokenizer

    folder = Path(path) if path is not None else model_path()
    try:
        return Tokenizer.from_pretrained(folder)
    except SpectrumError as err:
        raise SpectrumError(
            f"{err}. The app reads the model from ${MODEL_ENV} (default {SHIPPED_MODEL})."
        ) from None


def load_index(tokenizer: Tokenizer | None, path: str | os.PathLike | None = None) -> SpectrumIndex:
    """The index the app searches; it refuses one built with other weights."""
    from .index import SpectrumIndex

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


# -- reading what the user gives us --------------------------------------------------------


def upload_limit_bytes() -> int:
    """The size limit on one upload (SPECTOK_MAX_UPLOAD_MB, default 200 MB)."""
    from .io.source import Limits

    return Limits.from_env().max_bytes


def read_upload(data: bytes, name: str, *, isolated: bool = True, **options):
    """Spectra from uploaded bytes; too large or empty files raise SpectrumError.

    ``isolated``: parse in a worker process with memory and CPU-time limits
    (:func:`spectok_core.io.sandbox.read_isolated`), so that a crafted file that
    crashes or floods a parser costs that worker, not the server.
    """
    from .io import read_spectra
    from .io.sandbox import read_isolated

    limit = upload_limit_bytes()
    if len(data) > limit:
        raise SpectrumError(
            f"{name} is {len(data) / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB upload limit; "
            "upload one spectrum, or cut the file down"
        )
    if not data:
        raise SpectrumError(f"{name} is empty (0 bytes); upload a spectrum file")
    if isolated:
        return read_isolated(bytes(data), name, **options)
    return read_spectra(bytes(data), name=name, **options)


#: What a DESI coadd and its redshift catalogue share in their names (coadd-X.fits, redrock-X.fits).
_DESI_PREFIXES = ("coadd-", "spectra-", "redrock-", "zbest-", "zcatalog-", "zpix-", "ztile-")


def _desi_stem(name: str) -> str:
    stem = Path(name).name.lower()
    for suffix in (".gz", ".fits", ".fit"):
        stem = stem.removesuffix(suffix)
    for prefix in _DESI_PREFIXES:
        if stem.startswith(prefix):
            return stem[len(prefix):]
    return stem


def read_uploads(files: Sequence[tuple[bytes, str]]):
    """Spectra of several files uploaded together; DESI redshift catalogues are paired.

    A ``redrock-*.fits`` / zcatalog among the files is not a spectrum: it is joined to
    the DESI coadd it belongs to (the one with the same name after ``coadd-`` /
    ``redrock-``, else any coadd whose TARGETIDs it holds), so that the coadd's
    spectra carry Z, ZWARN and SPECTYPE. What could not be paired is listed in
    ``problems``; a catalogue uploaded alone raises SpectrumError saying what to add.
    """
    from .io import SpectrumList

    files = [(bytes(data), str(name)) for data, name in files]
    if not files:
        raise SpectrumError("no file was uploaded")
    many = len(files) > 1
    result, used = SpectrumList(), set()
    catalogs: list[tuple[bytes, str]] = []
    read: list[tuple[bytes, str, Any]] = []
    failed: list[SpectrumError] = []
    for data, name in files:
        try:
            read.append((data, name, read_upload(data, name)))
        except SpectrumError as err:
            # The DESI reader recognises a redshift catalogue and refuses it as a spectrum.
            if "a DESI redshift catalogue" in str(err):
                catalogs.append((data, name))
            elif not many:
                raise
            else:  # one bad file of several: say so, show the others
                failed.append(err)
                result.problems.append(split_error(err)[0])
    if not read and catalogs and not failed:
        names = ", ".join(n for _, n in catalogs)
        raise SpectrumError(
            f"{names}: DESI redshift catalogue{'s' if len(catalogs) > 1 else ''}, not spectra. "
            "Upload the coadd-*.fits it belongs to together with it (select both files)")
    for data, name, spectra in read:
        if catalogs and spectra and spectra[0].meta.get("format") == "desi_coadd":
            stem = _desi_stem(name)
            for cat_data, cat_name in sorted(catalogs, key=lambda c: _desi_stem(c[1]) != stem):
                try:
                    joined = read_upload(data, name, redshift_catalog=cat_data)
                except SpectrumError as err:
                    if "none of its targets is in the redshift catalogue" in str(err):
                        continue
                    raise
                for spectrum in joined:
                    spectrum.meta["redshift_catalog"] = cat_name
                spectra = joined
                used.add(cat_name)
                break
            else:
                result.problems.append(f"{name}: none of the uploaded redshift catalogues "
                                       "holds its targets; shown without redshifts")
        result.extend(spectra)
        result.problems.extend(f"{name}: {p}" if many else p for p in spectra.problems)
    for _, cat_name in catalogs:
        if cat_name not in used:
            result.problems.append(f"{cat_name}: a redshift catalogue that matches none of the "
                                   "uploaded DESI coadds; not used")
    if not result and failed:
        raise failed[0]
    return result


def formats_help() -> str:
    """Which formats the readers take (for error messages)."""
    from .io import describe_formats

    return describe_formats()


def formats_table() -> pd.DataFrame:
    """Every readable format: its name, container and what it is (for the app's help)."""
    from .io import FORMATS

    rows = sorted(FORMATS.values(), key=lambda f: (f.kind, f.priority, f.name))
    return pd.DataFrame({"format": [f.name for f in rows], "container": [f.kind for f in rows],
                         "what it reads": [f.description for f in rows]})


def split_error(err: Exception | str) -> tuple[str, str]:
    """A reader's message as (what was wrong, the list of formats it appended, if any).

    Readers end some messages with the whole format list (one indented line per
    format); a page shows the sentence prominently and the list folded away.
    """
    lines = str(err).splitlines()
    listed = [line for line in lines[1:] if line.startswith("  ")]
    said = [lines[0]] + [line for line in lines[1:] if not line.startswith("  ")] if lines else [""]
    text = " ".join(part.strip() for part in said if part.strip())
    if listed:
        text = text.replace("spectok reads:", "").replace("  ", " ").strip()
        text = text.rstrip(" .:") + ". See the formats spectok reads below."
    return text, "\n".join(listed)


def spectrum_label(spectrum: Spectrum) -> str:
    """One short line naming a spectrum: survey, id, class, z or stellar labels."""
    meta = spectrum.meta
    parts = [spectrum.survey, str(meta.get("object_id", "?"))]
    if meta.get("class"):
        parts.append(str(meta["class"]))
    z = as_float(meta.get("z"))
    if z is not None:
        parts.append(f"z={z:.4f}")
    teff = as_float(meta.get("teff"))
    if teff is not None:
        parts.append(f"Teff={teff:.0f} K")
    if meta.get("spectral_type"):
        parts.append(str(meta["spectral_type"]))
    return "  ".join(parts)


def spectrum_facts(spectrum: Spectrum) -> dict[str, Any]:
    """What the page says about an input: pixels, range, S/N, and the file's own labels."""
    lo, hi = spectrum.wave_range
    facts: dict[str, Any] = {
        "survey": spectrum.survey,
        "object": str(spectrum.meta.get("object_id", "?")),
        "pixels": len(spectrum),
        "masked pixels": int(spectrum.mask.sum()),
        "range (vacuum Å)": f"{lo:,.1f} – {hi:,.1f}",
        "median S/N per pixel": round(spectrum.median_snr, 1),
    }
    formats = {"z": "{:.5f}", "teff": "{:.0f} K", "logg": "{:.2f}", "feh": "{:+.2f}"}
    for key in ("class", "z", "teff", "logg", "feh", "spectral_type", "origin"):
        value = spectrum.meta.get(key)
        if key in formats:
            number = as_float(value)
            if number is not None:
                facts[key] = formats[key].format(number)
        elif value is not None and value != "":
            facts[key] = value
    for warning in spectrum.meta.get("spectok_warnings", []):
        facts.setdefault("warnings", []).append(warning)
    return facts


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


def write_csv(spectrum: Spectrum, path: str | os.PathLike | None = None, title: str = "",
              credit: str = "") -> bytes:
    """A spectrum as a readable CSV that ``read_spectra`` reads back with its labels.

    The header comments carry the survey and labels as ``# KEY: value`` lines,
    the generic table reader's keyword convention; columns are vacuum
    wavelength (Å), flux, error (σ; 0 for bad pixels) and mask (1 = bad).
    Returns the bytes; with ``path`` also writes them atomically.
    """
    meta = spectrum.meta
    head = [f"# title: {title or spectrum_label(spectrum)}"]
    if credit:
        head.append(f"# credit: {credit}")
    head.append("# wavelengths: vacuum Angstrom")
    head.append(f"# SURVEY: {spectrum.survey}")
    for key, name in (("object_id", "OBJECT_ID"), ("class", "CLASS"), ("z", "Z"), ("teff", "TEFF"),
                      ("logg", "LOGG"), ("feh", "FEH"), ("spectral_type", "SPECTRAL_TYPE")):
        value = meta.get(key)
        if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
            continue
        head.append(f"# {name}: {value}")
    with np.errstate(divide="ignore"):
        sigma = np.where(spectrum.good, 1.0 / np.sqrt(np.maximum(spectrum.ivar, 1e-30)), 0.0)
    body = io.StringIO()
    body.write("wave,flux,error,mask\n")
    for w, f, s, m in zip(spectrum.wave, spectrum.flux, sigma, spectrum.mask):
        body.write(f"{w:.4f},{f:.6g},{s:.4g},{int(m)}\n")
    data = ("\n".join(head) + "\n" + body.getvalue()).encode("utf-8")
    if path is not None:
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return data


# -- search and neighbour estimates ---------------------------------------------------------


def where_filter(surveys_: Sequence[str] = (), classes: Sequence[str] = (),
                 origin: str | None = None) -> dict | None:
    """The index's ``where`` dict from the page's filters (empty choices mean no filter)."""
    where: dict[str, Any] = {}
    if surveys_:
        where["survey"] = list(surveys_)
    if classes:
        where["class"] = list(classes)
    if origin in ("real", "simulated"):
        where["origin"] = origin
    return where or None


def neighbours(index: SpectrumIndex, vector: np.ndarray, k: int = 10, where: dict | None = None,
               exclude_row: int | None = None) -> pd.DataFrame:
    """The top-k hits, best first; an indexed query does not find itself."""
    extra = 1 if exclude_row is not None else 0
    hits = index.search(np.asarray(vector, np.float32), k=k + extra, where=where)
    if exclude_row is not None and "row" in hits:
        hits = hits[hits["row"] != exclude_row]
    hits = hits.head(k).reset_index(drop=True)
    hits["rank"] = np.arange(1, len(hits) + 1)
    return hits


def as_float(value: Any) -> float | None:
    """A finite float from any value, or None (missing, NaN, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
        classes = hits["class"].dropna().astype(str)
        classes = classes[(classes != "") & (classes != "None")]
        if len(classes):
            counts = classes.value_counts()
            # Ties go to the class of the best-ranked neighbour among the tied.
            tied = set(counts[counts == counts.iloc[0]].index)
            winner = next(c for c in classes if c in tied)
            share = counts[winner] / len(classes)
            note = ", ".join(f"{c}: {n}" for c, n in counts.items())
            out["class"] = Estimate("class", winner, float(share), int(len(classes)), note)
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
        classes = close["class"].dropna().astype(str)
        classes = classes[(classes != "") & (classes != "None")]
        if len(classes):
            counts = classes.value_counts()
            tied = set(counts[counts == counts.iloc[0]].index)
            winner = next(c for c in classes if c in tied)
            share = counts[winner] / len(classes)
            note = ", ".join(f"{c}: {n}" for c, n in counts.items())
            reason = snr_reason
            if not reason and counts[winner] < MIN_AGREEING:
                reason = f"only {counts[winner]} close neighbours are {winner}"
            elif not reason and share < MIN_CLASS_SHARE:
                reason = f"the close neighbours disagree ({share:.0%} {winner})"
            class_ok = not reason
            out["class"] = Estimate("class", winner, float(share), int(len(classes)), note,
                                    class_ok, reason)
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
            reason = f"only {agreeing.size} close neighbours agree"
        if not reason and math.isfinite(spread) and spread > MAX_SPREAD[key] * scale:
            reason = "the neighbours' values are too spread"
        value = float(np.median(agreeing)) if agreeing.size else centre
        note = f"from the {winner} neighbours" if winner is not None else ""
        out[key] = Estimate(key, value, spread, int(agreeing.size), note, not reason, reason)
    return out


def estimates_table(estimates: dict[str, Estimate]) -> pd.DataFrame:
    """The estimates as a small table for display, values rounded sensibly.

    An estimate that failed its gates shows :data:`NO_ESTIMATE` and the reason.
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
        digits = {"z": 4, "teff": 0, "logg": 2, "feh": 2}[key]
        spread = "–" if not math.isfinite(est.spread) else f"± {est.spread:.{digits}f}"
        rows.append({"quantity": LABELS[key], "neighbour estimate": f"{est.value:.{digits}f}",
                     "spread": spread, "neighbours used": est.n, "note": est.note})
    return pd.DataFrame(rows, columns=["quantity", "neighbour estimate", "spread",
                                       "neighbours used", "note"])


#: Columns of the neighbours table, in the order shown (those present).
HIT_COLUMNS = ("rank", "similarity", "survey", "object_id", "class", "z", "teff", "logg", "feh",
               "spectral_type", "origin", "split", "row")


def hits_table(hits: pd.DataFrame) -> pd.DataFrame:
    """The neighbours table as shown and downloaded: known columns first, numbers rounded."""
    columns = [c for c in HIT_COLUMNS if c in hits] + [
        c for c in hits if c not in HIT_COLUMNS and c not in ("shard", "shard_row", "flux_unit")
    ]
    table = hits[columns].copy()
    for key, digits in (("z", 5), ("teff", 0), ("logg", 2), ("feh", 2)):
        if key in table:
            table[key] = pd.to_numeric(table[key], errors="coerce").round(digits)
    if "similarity" in table:
        table["similarity"] = table["similarity"].astype(float).round(4)
    return table


def neighbours_csv(hits: pd.DataFrame) -> bytes:
    """The neighbours table as CSV bytes, for the download button."""
    return hits_table(hits).to_csv(index=False).encode("utf-8")


# -- wavelengths and lines --------------------------------------------------------------------


def rest_frame(wave: np.ndarray, z: float) -> np.ndarray:
    """Rest-frame wavelengths λ / (1 + z); z must be > -1."""
    z = float(z)
    if not z > -1.0:
        raise SpectrumError(f"redshift z={z} is not > -1; there is no rest frame for it")
    return np.asarray(wave, np.float64) / (1.0 + z)


def line_markers(wave_min: float, wave_max: float, z: float = 0.0, object_class: str | None = None,
                 max_lines: int = 40) -> list[line_table.Line]:
    """Lines to mark on an OBSERVED range at redshift z, for a class (None: every class).

    When more than ``max_lines`` fall in range (the H band is dense), strong
    features and hydrogen lines are kept first, then the rest in wavelength order.
    """
    objects = CLASS_OBJECTS.get(str(object_class).upper()) if object_class else None
    # Quasars show emission lines, stars absorption; galaxies (and the unknown) both.
    kind = {"qso": "emission", "star": "absorption"}.get(objects or "")
    found = line_table.select(objects=objects, kind=kind, wave_min=wave_min, wave_max=wave_max,
                              z=z or 0.0)
    if len(found) <= max_lines:
        return found

    def priority(line: line_table.Line) -> tuple[int, float]:
        if line.name in STRONG_LINES:
            return (0, line.wave_vac)
        if line.species == "H I":
            return (1, line.wave_vac)
        return (2, line.wave_vac)

    kept = sorted(found, key=priority)[:max_lines]
    return sorted(kept, key=lambda line: line.wave_vac)


def median_normalised(spectrum: Spectrum) -> np.ndarray:
    """Flux divided by the median of its usable pixels (bad pixels NaN), for overlays."""
    good = spectrum.good
    level = float(np.median(spectrum.flux[good])) if good.any() else 1.0
    if not level > 0:
        level = float(np.median(np.abs(spectrum.flux[good]))) or 1.0
    return np.where(good, spectrum.flux / level, np.nan)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of consecutive True values."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def _y_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return float(lo - pad), float(hi + pad)


def _thin(wave: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points for small plots: min and max of each bin, so lines survive.

    Bins holding only NaN (masked pixels) keep one NaN, so gaps stay gaps.
    """
    n = wave.size
    if n <= max_points:
        return wave, values
    bins = max(1, max_points // 2)
    width = -(-n // bins)
    padded = np.full(bins * width, np.nan)
    padded[:n] = values
    blocks = padded.reshape(bins, width)
    empty = np.all(np.isnan(blocks), axis=1)
    filled = np.where(np.isnan(blocks), 0.0, blocks)
    low = np.where(np.isnan(blocks), np.inf, filled).argmin(axis=1)
    high = np.where(np.isnan(blocks), -np.inf, filled).argmax(axis=1)
    first, second = np.minimum(low, high), np.maximum(low, high)
    base = np.arange(bins) * width
    index = np.stack([base + first, base + second], axis=1)
    index[empty] = base[empty, None]
    index = np.minimum(index, n - 1).ravel()
    out_v = values[index].astype(np.float64)
    out_v[np.repeat(empty, 2)] = np.nan
    return wave[index], out_v


def _mask_trace(wave: np.ndarray, mask: np.ndarray, y0: float, y1: float):
    """Shaded bands over masked pixels, as ONE filled trace (cheap with thousands of runs)."""
    import plotly.graph_objects as go

    xs: list[float | None] = []
    ys: list[float | None] = []
    for a, b in _runs(mask):
        left = wave[a] - 0.5 * (wave[a + 1] - wave[a]) if a + 1 < wave.size else wave[a]
        right = wave[b - 1] + 0.5 * (wave[b - 1] - wave[b - 2]) if b >= 2 else wave[b - 1]
        xs += [left, right, right, left, left, None]
        ys += [y0, y0, y1, y1, y0, None]
    return go.Scatter(x=xs, y=ys, fill="toself", mode="none", fillcolor="rgba(214,39,40,0.15)",
                      name="masked pixels", hoverinfo="skip")


def _line_traces(found: list[line_table.Line], z: float, shift: float, y0: float, y1: float,
                 span: float):
    """Marked lines: dashed verticals with hover text, plus their labels along the top."""
    import plotly.graph_objects as go

    xs: list[float | None] = []
    ys: list[float | None] = []
    text: list[str | None] = []
    for line in found:
        x = line.wave_vac * (1.0 + z) / shift
        label = f"{line.label} ({line.kind}, rest {line.wave_vac:.2f} Å)"
        xs += [x, x, None]
        ys += [y0, y1, None]
        text += [label, label, None]
    markers = go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(90,90,90,0.45)", width=1,
                         dash="dot"), name="lines", hovertext=text, hoverinfo="text")
    # Labels closer than ~2 % of the range to the last one shown are left to the hover text.
    label_x, label_text = [], []
    for line in found:
        x = line.wave_vac * (1.0 + z) / shift
        if label_x and x - label_x[-1] < 0.02 * span:
            continue
        label_x.append(x)
        label_text.append(line.label)
    labels = go.Scatter(
        x=label_x, y=[y1] * len(label_x),
        mode="text", text=label_text, textposition="top center",
        textfont=dict(size=9, color="#555"), showlegend=False, hoverinfo="skip",
    )
    return markers, labels


def spectrum_figure(spectrum: Spectrum, z: float | None = None, rest: bool = False,
                    show_lines: bool = True, object_class: str | None = None,
                    title: str | None = None, height: int = 380):
    """The interactive spectrum plot: flux, masked pixels shaded, lines marked.

    ``rest`` plots rest-frame wavelengths (needs ``z``); lines are marked at
    their wavelengths redshifted by ``z`` (0 when unknown).
    """
    import plotly.graph_objects as go

    z_used = float(z) if z is not None and math.isfinite(float(z)) else 0.0
    shift = 1.0 + z_used if rest else 1.0
    wave = rest_frame(spectrum.wave, z_used) if rest else spectrum.wave
    flux = np.where(spectrum.good, spectrum.flux.astype(np.float64), np.nan)
    y0, y1 = _y_range(flux)
    fig = go.Figure()
    if spectrum.mask.any():
        fig.add_trace(_mask_trace(wave, spectrum.mask, y0, y1))
    fig.add_trace(go.Scatter(x=wave, y=flux, mode="lines", line=dict(color="black", width=1),
                             name="flux", connectgaps=False))
    if show_lines:
        found = line_markers(spectrum.wave[0], spectrum.wave[-1], z_used,
                             object_class or spectrum.meta.get("class"))
        if found:
            for trace in _line_traces(found, z_used, shift, y0, y1, wave[-1] - wave[0]):
                fig.add_trace(trace)
    unit = spectrum.meta.get("flux_unit") or "flux"
    frame = f"rest-frame wavelength (z = {z_used:.4f}) [Å, vacuum]" if rest else \
        "observed wavelength [Å, vacuum]"
    fig.update_layout(
        title=title or spectrum_label(spectrum), height=height, margin=dict(l=60, r=20, t=50, b=45),
        xaxis_title=frame, yaxis_title=str(unit), yaxis_range=[y0, y1 + 0.08 * (y1 - y0)],
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"),
        hovermode="closest",
    )
    return fig


def _unit_span(values: np.ndarray) -> np.ndarray:
    """Values scaled so their 1st–99th percentiles span 0–1 (extremes clipped a little beyond)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    lo, hi = np.percentile(finite, [1, 99])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((values - lo) / scale, -0.25, 1.35)


def neighbours_figure(query: Spectrum | None, spectra: Sequence[Spectrum], labels: Sequence[str],
                      max_points: int = 700, step: float = 1.3):
    """The query on top and each neighbour below it, stacked on one wavelength axis.

    Each spectrum is scaled to its own 1–99 % flux range (shapes compare, not
    fluxes) and shifted down by ``step``; one plot, so it draws fast.
    """
    import plotly.graph_objects as go

    rows: list[tuple[Spectrum, str, str]] = []
    if query is not None:
        rows.append((query, "your spectrum", "black"))
    rows += [(s, label, "#1f77b4") for s, label in zip(spectra, labels)]
    fig = go.Figure()
    label_x, label_y, label_text = [], [], []
    for i, (spectrum, label, colour) in enumerate(rows):
        offset = -i * step
        w, f = _thin(spectrum.wave, median_normalised(spectrum), max_points)
        fig.add_trace(go.Scatter(x=w, y=_unit_span(f) + offset, mode="lines", name=label,
                                 line=dict(color=colour, width=1), showlegend=False,
                                 hovertemplate=f"{label}<br>%{{x:.1f}} Å<extra></extra>"))
        label_x.append(float(spectrum.wave[0]))
        label_y.append(offset + 1.1)
        label_text.append(label)
    fig.add_trace(go.Scatter(x=label_x, y=label_y, mode="text", text=label_text,
                             textposition="middle right", textfont=dict(size=11),
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(height=80 + 95 * len(rows),
                      margin=dict(l=20, r=20, t=20, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]",
                      yaxis=dict(showticklabels=False, zeroline=False, showgrid=False,
                                 title="flux, each scaled to its own range"))
    return fig


def overlay_figure(query: Spectrum | None, spectra: Sequence[Spectrum], labels: Sequence[str],
                   max_points: int = 1500):
    """Query and neighbours overlaid (median-normalised, observed wavelengths)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for spectrum, label, colour in zip(spectra, labels, _cycle(_SURVEY_COLOURS)):
        w, f = _thin(spectrum.wave, median_normalised(spectrum), max_points)
        fig.add_trace(go.Scatter(x=w, y=f, mode="lines", name=label, opacity=0.7,
                                   line=dict(width=1, color=colour)))
    if query is not None:
        w, f = _thin(query.wave, median_normalised(query), max_points)
        fig.add_trace(go.Scatter(x=w, y=f, mode="lines", name="query",
                                   line=dict(color="black", width=1.5)))
    fig.update_layout(height=420, margin=dict(l=50, r=10, t=30, b=40),
                      xaxis_title="observed wavelength [Å, vacuum]",
                      yaxis_title="flux / median")
    return fig


def _cycle(items: Sequence[str]):
    while True:
        yield from items


def index_contents(metadata: pd.DataFrame) -> pd.DataFrame:
    """Spectra per survey, split by class and by real/simulated (for the landing page)."""
    frame = pd.DataFrame({
        "survey": metadata["survey"].astype(str),
        "class": metadata["class"].astype(object).where(metadata["class"].notna(), "unknown")
        if "class" in metadata else "unknown",
        "origin": metadata["origin"].astype(object).where(metadata["origin"].notna(), "unknown")
        if "origin" in metadata else "unknown",
    })
    table = pd.crosstab(frame["survey"], frame["class"].astype(str))
    table["real"] = (frame["origin"] == "real").groupby(frame["survey"]).sum()
    table["simulated"] = (frame["origin"] == "simulated").groupby(frame["survey"]).sum()
    table["total"] = frame.groupby("survey").size()
    return table.sort_values("total", ascending=False).reset_index()


def coverage_figure(keys: Sequence[str] | None = None):
    """The instruments the model reads: each one's wavelength coverage, coloured by resolution."""
    import plotly.graph_objects as go

    chosen = [surveys.get(k) for k in keys] if keys else \
        [s for s in surveys.SURVEYS.values() if s.key != "unknown"]
    chosen = sorted(chosen, key=lambda s: (s.wave_min, s.wave_max), reverse=True)
    fig = go.Figure()
    for survey in chosen:
        r = survey.resolving_power
        fig.add_trace(go.Scatter(
            x=[survey.wave_min, survey.wave_max], y=[survey.name, survey.name], mode="lines",
            line=dict(width=12, color=_resolution_colour(r)), showlegend=False,
            hovertemplate=f"{survey.name}<br>{survey.wave_min:,.0f}–{survey.wave_max:,.0f} Å"
                          f"<br>R ≈ {r:,.0f}<extra></extra>"))
    fig.update_layout(
        height=40 + 26 * len(chosen), margin=dict(l=10, r=10, t=30, b=40),
        xaxis=dict(type="log", title="vacuum wavelength [Å] (colour: resolving power, darker = higher)"),
        yaxis=dict(automargin=True),
    )
    return fig


def _resolution_colour(r: float) -> str:
    """Darker blue for higher resolving power (R ~ 50 to 30,000, on a log scale)."""
    if not math.isfinite(r):
        return "rgb(150,150,150)"
    t = float(np.clip((math.log10(r) - 1.7) / (4.5 - 1.7), 0.0, 1.0))
    return f"rgb({int(200 - 180 * t)},{int(220 - 160 * t)},{int(255 - 90 * t)})"


# -- the atlas -------------------------------------------------------------------------------


def map_frame(metadata: pd.DataFrame, coords: np.ndarray) -> pd.DataFrame:
    """Metadata plus map coordinates x, y and the index row, one row per indexed spectrum."""
    frame = metadata.reset_index(drop=True).copy()
    coords = np.asarray(coords, np.float64)
    if coords.shape != (len(frame), 2):
        raise SpectrumError(f"map coordinates have shape {coords.shape}, expected ({len(frame)}, 2)")
    frame["x"], frame["y"] = coords[:, 0], coords[:, 1]
    if "row" not in frame:
        frame["row"] = np.arange(len(frame))
    for key in CONTINUOUS:
        if key in frame:
            frame[key] = pd.to_numeric(frame[key], errors="coerce")
    return frame


def _hover(frame: pd.DataFrame) -> list[str]:
    """Hover text per point (vectorised: an index may hold a million points)."""
    def text(column: str) -> pd.Series:
        if column not in frame:
            return pd.Series("", index=frame.index)
        return frame[column].astype(object).where(frame[column].notna(), "").astype(str)

    out = text("survey") + " " + text("object_id") + "<br>" + text("class")
    for key, fmt in (("z", " z={:.3f}"), ("teff", " Teff={:.0f}")):
        if key in frame:
            values = pd.to_numeric(frame[key], errors="coerce")
            out = out + values.map(lambda v, f=fmt: "" if pd.isna(v) else f.format(v))
    return out.tolist()


def map_figure(frame: pd.DataFrame, colour: str = "survey", query_xy: tuple[float, float] | None = None,
               highlight_row: int | None = None, height: int = 620, method: str = "UMAP"):
    """The UMAP atlas (WebGL): one trace per category, or a colour scale; customdata = row."""
    import plotly.graph_objects as go

    fig = go.Figure()
    marker_size = 4 if len(frame) > 20000 else 6
    if colour in frame and colour in CONTINUOUS:
        values = pd.to_numeric(frame[colour], errors="coerce")
        known = values.notna()
        if (~known).any():
            rest = frame[~known]
            fig.add_trace(go.Scattergl(
                x=rest["x"], y=rest["y"], mode="markers", name=f"no {colour}",
                marker=dict(size=marker_size - 1, color="rgba(180,180,180,0.5)"),
                customdata=rest["row"], hovertext=_hover(rest), hoverinfo="text"))
        part = frame[known]
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=colour,
            marker=dict(size=marker_size, color=values[known], colorscale="Viridis", showscale=True,
                        colorbar=dict(title=LABELS.get(colour, colour))),
            customdata=part["row"], hovertext=_hover(part), hoverinfo="text"))
    else:
        key = colour if colour in frame else "survey"
        groups = frame[key].fillna("unknown").astype(str)
        for name, colour_code in zip(sorted(groups.unique()), _cycle(_SURVEY_COLOURS)):
            part = frame[groups == name]
            fig.add_trace(go.Scattergl(
                x=part["x"], y=part["y"], mode="markers", name=f"{name} ({len(part)})",
                marker=dict(size=marker_size, color=colour_code, opacity=0.75),
                customdata=part["row"], hovertext=_hover(part), hoverinfo="text"))
    if highlight_row is not None and (frame["row"] == highlight_row).any():
        r = frame[frame["row"] == highlight_row].iloc[0]
        fig.add_trace(go.Scattergl(x=[r["x"]], y=[r["y"]], mode="markers", name="selected",
                                   marker=dict(size=16, color="rgba(0,0,0,0)",
                                               line=dict(color="black", width=2))))
    if query_xy is not None:
        fig.add_trace(go.Scattergl(x=[query_xy[0]], y=[query_xy[1]], mode="markers",
                                   name="your spectrum",
                                   marker=dict(size=18, symbol="star", color="red",
                                               line=dict(color="black", width=1))))
    fig.update_layout(height=height, margin=dict(l=20, r=20, t=30, b=20),
                      xaxis=dict(showticklabels=False, title=f"{method} 1"),
                      yaxis=dict(showticklabels=False, title=f"{method} 2"),
                      legend=dict(itemsizing="constant"), dragmode="pan")
    return fig


def selected_row(event: Any) -> int | None:
    """The index row of the first point selected on the map (Streamlit's on_select event)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    if not points:
        return None
    data = points[0].get("customdata")
    if isinstance(data, (list, tuple)):
        data = data[0] if data else None
    value = as_float(data)
    return int(value) if value is not None else None


# -- reconstruction and other instruments ---------------------------------------------------


def residuals_sigma(spectrum: Spectrum, model: Spectrum) -> np.ndarray:
    """(data − model) / σ_data per pixel on the data's grid; NaN on masked pixels."""
    if len(model) != len(spectrum) or not np.allclose(model.wave, spectrum.wave):
        raise SpectrumError("the model spectrum is not on the data's grid; reconstruct with wave=None")
    sigma = np.where(spectrum.good, 1.0 / np.sqrt(np.maximum(spectrum.ivar, 1e-30)), np.nan)
    return (spectrum.flux.astype(np.float64) - model.flux.astype(np.float64)) / sigma


def residual_summary(residuals: np.ndarray) -> dict[str, float]:
    """χ² per usable pixel, the median |residual| and the share beyond 3σ."""
    good = residuals[np.isfinite(residuals)]
    if good.size == 0:
        return {"chi2_per_pixel": float("nan"), "median_abs": float("nan"), "beyond_3sigma": float("nan")}
    return {
        "chi2_per_pixel": float(np.mean(good**2)),
        "median_abs": float(np.median(np.abs(good))),
        "beyond_3sigma": float(np.mean(np.abs(good) > 3.0)),
    }


def reconstruction_figure(spectrum: Spectrum, model: Spectrum, residuals: np.ndarray):
    """Input and reconstruction on top, residuals in σ below, sharing the wavelength axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.04)
    flux = np.where(spectrum.good, spectrum.flux, np.nan)
    y0, y1 = _y_range(flux.astype(np.float64))
    if spectrum.mask.any():
        fig.add_trace(_mask_trace(spectrum.wave, spectrum.mask, y0, y1), row=1, col=1)
    fig.add_trace(go.Scatter(x=spectrum.wave, y=flux, mode="lines", name="input",
                             line=dict(color="black", width=1)), row=1, col=1)
    fig.add_trace(go.Scatter(x=model.wave, y=model.flux, mode="lines", name="reconstruction",
                             line=dict(color="#d62728", width=1.2)), row=1, col=1)
    fig.add_trace(go.Scatter(x=spectrum.wave, y=residuals, mode="lines", name="residual / σ",
                             line=dict(color="#1f77b4", width=0.8)), row=2, col=1)
    for level in (-3, 3):
        fig.add_hline(y=level, line=dict(color="grey", dash="dot", width=1), row=2, col=1)
    r = residuals[np.isfinite(residuals)]
    limit = float(np.clip(np.percentile(np.abs(r), 99) * 1.2, 4.0, 50.0)) if r.size else 5.0
    fig.update_yaxes(range=[y0, y1], title_text=str(spectrum.meta.get("flux_unit") or "flux"),
                     row=1, col=1)
    fig.update_yaxes(range=[-limit, limit], title_text="(data − model) / σ", row=2, col=1)
    fig.update_xaxes(title_text="observed wavelength [Å, vacuum]", row=2, col=1)
    fig.update_layout(height=560, margin=dict(l=60, r=20, t=30, b=45),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig


def rendering_instruments() -> list[str]:
    """Instruments whose native grid the registry can draw (the simulated ones)."""
    from .data.instruments import SIMULATED_SURVEYS

    return list(SIMULATED_SURVEYS)


def overlap(spectrum: Spectrum, key: str) -> tuple[float, float] | None:
    """The wavelength range an input and instrument ``key`` share, or None."""
    from .data.instruments import native_wave

    grid = native_wave(key)
    lo = max(spectrum.wave[0], grid[0])
    hi = min(spectrum.wave[-1], grid[-1])
    return (float(lo), float(hi)) if hi > lo else None


def render_on(tokenizer: Tokenizer, spectrum: Spectrum, key: str, min_pixels: int = 16) -> Spectrum:
    """The model's rendering of ``spectrum`` on instrument ``key``'s native grid, over the overlap.

    Raises SpectrumError when the two share no wavelengths (or fewer than
    ``min_pixels`` of the target's pixels): the model decodes only what it read.
    """
    from .data.instruments import native_wave

    if key not in rendering_instruments():
        raise SpectrumError(f"no native grid known for {key!r}; choose one of "
                            f"{', '.join(rendering_instruments())}")
    grid = native_wave(key)
    lo, hi = spectrum.wave_range
    inside = grid[(grid >= lo) & (grid <= hi)]
    name = surveys.get(key).name
    if inside.size < min_pixels:
        raise SpectrumError(
            f"{name} covers {grid[0]:,.0f}–{grid[-1]:,.0f} Å and this spectrum "
            f"{lo:,.0f}–{hi:,.0f} Å: they share {'no' if inside.size == 0 else 'too few'} "
            "wavelengths, so there is nothing the model can draw on that grid"
        )
    rendered = tokenizer.reconstruct(spectrum, wave=inside, survey=key)
    rendered.meta["rendered_on"] = key
    rendered.meta["coverage"] = float(inside.size / grid.size)
    return rendered


def rendering_figure(spectrum: Spectrum, rendered: Spectrum, key: str):
    """The input (median-normalised) and its rendering on another grid, overlaid."""
    import plotly.graph_objects as go

    fig = go.Figure()
    level = np.nanmedian(np.where(spectrum.good, spectrum.flux, np.nan))
    level = level if np.isfinite(level) and level != 0 else 1.0
    fig.add_trace(go.Scatter(x=spectrum.wave, y=np.where(spectrum.good, spectrum.flux / level, np.nan),
                             mode="lines", name=f"input ({spectrum.survey}, {len(spectrum)} px)",
                             line=dict(color="rgba(0,0,0,0.55)", width=1)))
    fig.add_trace(go.Scatter(x=rendered.wave, y=rendered.flux / level, mode="lines+markers"
                             if len(rendered) < 600 else "lines",
                             marker=dict(size=4), name=f"as {key} would see it ({len(rendered)} px)",
                             line=dict(color="#d62728", width=1.5)))
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]", yaxis_title="flux / input median",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig


# -- teaching: from pixels to neighbours ------------------------------------------------------


def patches_figure(spectrum: Spectrum, config, max_patches: int = 400):
    """The spectrum cut into patches: alternating bands, excluded patches in red."""
    import plotly.graph_objects as go

    from .model.batch import prepare

    item = prepare(spectrum, config)
    p = config.patch_size
    flux = np.where(spectrum.good, spectrum.flux.astype(np.float64), np.nan)
    y0, y1 = _y_range(flux)
    fig = go.Figure()
    xs_even: list[float | None] = []
    xs_bad: list[float | None] = []
    for k in range(min(item.valid.size, max_patches)):
        a, b = k * p, min((k + 1) * p, len(spectrum)) - 1
        box = [spectrum.wave[a], spectrum.wave[b], spectrum.wave[b], spectrum.wave[a],
               spectrum.wave[a], None]
        if not item.valid[k]:
            xs_bad += box
        elif k % 2 == 0:
            xs_even += box
    ys = [y0, y0, y1, y1, y0, None]
    for xs, colour, name in ((xs_even, "rgba(31,119,180,0.12)", "patch (alternate bands)"),
                             (xs_bad, "rgba(214,39,40,0.25)", "excluded patch (mostly bad pixels)")):
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys * (len(xs) // 6), fill="toself", mode="none",
                                     fillcolor=colour, name=name, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=spectrum.wave, y=flux, mode="lines", name="flux",
                             line=dict(color="black", width=1)))
    fig.update_layout(height=340, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]",
                      yaxis_title=str(spectrum.meta.get("flux_unit") or "flux"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig, item


def patch_pixels_figure(item, patch: int):
    """One patch's inputs: normalised flux, log σ and the good flag per pixel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    patch = int(np.clip(patch, 0, item.valid.size - 1))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("flux / median", "log10 σ (normalised)",
                                                        "good pixel (1) or bad (0)"))
    wave = item.wave[patch]
    for col in range(3):
        fig.add_trace(go.Scatter(x=wave, y=item.pixels[patch, :, col], mode="lines+markers",
                                 marker=dict(size=4), showlegend=False), row=1, col=col + 1)
    fig.update_layout(height=250, margin=dict(l=40, r=10, t=40, b=30))
    return fig


def encoding_figure(spectrum: Spectrum, config, max_pixels: int = 600):
    """The sinusoidal wavelength code of each pixel: rows = frequencies, columns = pixels."""
    import plotly.graph_objects as go
    import torch

    from .model.network import encode_wavelength, wavelength_frequencies

    step = max(1, len(spectrum) // max_pixels)
    wave = spectrum.wave[::step]
    freqs = wavelength_frequencies(config)
    code = encode_wavelength(torch.from_numpy(wave), freqs).numpy()  # (n, 2F)
    periods = 2.0 * np.pi / freqs.numpy()
    n_freq = periods.size
    names = [f"sin, period {pp:,.0f} Å" for pp in periods] + [f"cos, period {pp:,.0f} Å" for pp in periods]
    fig = go.Figure(go.Heatmap(z=code.T, x=wave, y=list(range(2 * n_freq)), colorscale="RdBu",
                               zmin=-1, zmax=1, customdata=np.array(names)[:, None].repeat(wave.size, 1),
                               hovertemplate="λ=%{x:.1f} Å<br>%{customdata}<br>value %{z:.2f}<extra></extra>"))
    fig.update_layout(height=360, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="wavelength [Å, vacuum]",
                      yaxis_title="code component (short periods at the bottom)")
    return fig


def tokens_figure(tokens: TokenSet):
    """Token vectors as a heat map: one column per patch, at its wavelength span."""
    import plotly.graph_objects as go

    centre = 0.5 * (tokens.wave_min + tokens.wave_max)
    values = np.where(tokens.valid[:, None], tokens.tokens, np.nan)
    fig = go.Figure(go.Heatmap(z=values.T, x=centre, colorscale="RdBu_r", zmid=0.0,
                               hovertemplate="patch at %{x:.0f} Å<br>dim %{y}<br>%{z:.2f}<extra></extra>"))
    fig.update_layout(height=320, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="patch centre [Å, vacuum]", yaxis_title="token dimension")
    return fig


def embedding_figure(vector: np.ndarray):
    """The embedding as bars: one number per dimension, unit length overall."""
    import plotly.graph_objects as go

    vector = np.asarray(vector, np.float64).ravel()
    fig = go.Figure(go.Bar(x=np.arange(vector.size), y=vector, marker_color="#1f77b4"))
    fig.update_layout(height=260, margin=dict(l=50, r=20, t=30, b=40),
                      xaxis_title="embedding dimension", yaxis_title="value")
    return fig


# -- credits and the model card ----------------------------------------------------------------


def credits() -> dict[str, list[tuple[str, str]]]:
    """Acknowledgements: every survey in the registry, and every PyPI data package."""
    from .data.fetch import PACKAGES

    survey_credits = [(s.name, s.credit) for s in surveys.SURVEYS.values() if s.credit]
    package_credits = [(f"{p.requirement} — {p.what}", p.credit) for p in PACKAGES]
    return {"surveys": survey_credits, "packages": package_credits}


def model_card(folder: str | os.PathLike | None = None) -> str | None:
    """The model's MODEL_CARD.md text, or None when the folder has none."""
    folder = Path(folder) if folder is not None else (model_path() or SHIPPED_MODEL)
    card = folder / "MODEL_CARD.md"
    return card.read_text(encoding="utf-8") if card.is_file() else None
