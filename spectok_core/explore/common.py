"""Names every part of the explorer shares: paths, label names, colours, one-line labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.astro import C_KMS
from ..spectrum import Spectrum

REPO_ROOT = Path(__file__).resolve().parents[2]
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



def as_float(value: Any) -> float | None:
    """A finite float from any value, or None (missing, NaN, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None



def spectrum_label(spectrum: Spectrum) -> str:
    """One short line naming a spectrum: survey, id, class, z or stellar labels."""
    meta = spectrum.meta
    parts = [spectrum.survey, str(meta.get("object_id", "?"))]
    if meta.get("class"):
        parts.append(str(meta["class"]))
    z = as_float(meta.get("z"))
    if z is not None and str(meta.get("class", "")).upper() == "STAR":
        parts.append(f"RV={z * C_KMS:.0f} km/s")  # a star's z is its radial velocity
    elif z is not None:
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



def _cycle(items: Sequence[str]):
    while True:
        yield from items

