"""Searching the index from the page's filters, and the neighbours table as shown and downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from ..index_format import missing_text
from .common import as_float

if TYPE_CHECKING:  # heavy imports only for type checkers
    from ..index import SpectrumIndex


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


#: Columns of the neighbours table, in the order shown (those present).
HIT_COLUMNS = ("rank", "similarity", "survey", "object_id", "class", "z", "teff", "logg", "feh",
               "spectral_type", "ra", "dec", "origin", "split", "survey_page", "simbad", "row")
#: Columns the CSV download starts with: where it is on the sky, and how alike.
CSV_FIRST = ("ra", "dec", "similarity")
#: Surveys whose own archive shows an object by position (SDSS SkyServer also serves BOSS,
#: MaNGA, MaStar and APOGEE); DESI targets are shown in the Legacy Surveys viewer.
SKYSERVER_SURVEYS = ("sdss", "boss", "manga", "mastar", "apogee")
SKYSERVER = "https://skyserver.sdss.org/dr18/VisualTools/explore/summary?ra={ra:.6f}&dec={dec:.6f}"
LEGACY_VIEWER = ("https://www.legacysurvey.org/viewer?ra={ra:.6f}&dec={dec:.6f}&layer=ls-dr10"
                 "&zoom=16&mark={ra:.6f},{dec:.6f}")
GAIA_ARCHIVE = "https://gea.esac.esa.int/tap-server/tap/sync"
SIMBAD = "https://simbad.cds.unistra.fr/simbad/sim-coo"


def _gaia_url(where: str) -> str:
    query = f"SELECT * FROM gaiadr3.gaia_source WHERE {where}"
    return GAIA_ARCHIVE + "?" + urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "csv",
                                           "QUERY": query})


def _simbad_url(ra: float, dec: float) -> str:
    return SIMBAD + "?" + urlencode({"Coord": f"{ra:.6f} {dec:+.6f}", "CooFrame": "ICRS",
                                     "CooEpoch": "2000", "Radius": "5", "Radius.unit": "arcsec",
                                     "submit": "submit query"})


def survey_links(survey: str, object_id: Any = None, ra: Any = None, dec: Any = None) -> dict[str, str]:
    """Links to the object in its survey's own archive and in SIMBAD, where it can be found.

    By position (ICRS degrees): SDSS SkyServer for SDSS/BOSS/MaNGA/MaStar/APOGEE, the
    Legacy Surveys viewer for DESI, the Gaia archive (a cone of 2″) for Gaia XP, and SIMBAD
    (5″) for all. A Gaia source id alone is enough for the Gaia archive. A simulated
    spectrum has no sky position and gets no links.
    """
    links: dict[str, str] = {}
    ra, dec = as_float(ra), as_float(dec)
    has_position = ra is not None and dec is not None and 0 <= ra < 360 and abs(dec) <= 90
    survey = str(survey or "")
    if survey == "gaia_xp":
        source = str(object_id or "").strip()
        if source.isdigit() and len(source) <= 20:
            links["survey_page"] = _gaia_url(f"source_id = {source}")
        elif has_position:
            links["survey_page"] = _gaia_url(
                f"1 = CONTAINS(POINT(ra, dec), CIRCLE({ra:.6f}, {dec:.6f}, 0.000556))")
    elif has_position and survey in SKYSERVER_SURVEYS:
        links["survey_page"] = SKYSERVER.format(ra=ra, dec=dec)
    elif has_position and survey == "desi":
        links["survey_page"] = LEGACY_VIEWER.format(ra=ra, dec=dec)
    if has_position:
        links["simbad"] = _simbad_url(ra, dec)
    return links


def neighbour_label(hit: Any) -> str:
    """A neighbour's line on a plot: rank, survey, class, z (or Teff) and similarity."""
    get = hit.get if hasattr(hit, "get") else (lambda key, default=None: getattr(hit, key, default))
    parts = [f"#{get('rank', '?')}", str(get("survey", "?"))]
    cls = get("class")
    if not missing_text(cls):
        parts.append(str(cls))
    z, teff = as_float(get("z")), as_float(get("teff"))
    if z is not None and str(cls).upper() != "STAR":
        parts.append(f"z={z:.3f}")
    elif teff is not None:
        parts.append(f"Teff={teff:.0f} K")
    if str(get("origin", "")) == "simulated":
        parts.append("(sim)")
    similarity = as_float(get("similarity"))
    return " ".join(parts) + (f" · {similarity:.3f}" if similarity is not None else "")


def hits_table(hits: pd.DataFrame, links: bool = True) -> pd.DataFrame:
    """The neighbours table as shown: known columns first, numbers rounded, archive links."""
    hits = hits.copy()
    if links and len(hits):
        found = [survey_links(*values) for values in zip(
            hits["survey"] if "survey" in hits else [""] * len(hits),
            hits["object_id"] if "object_id" in hits else [None] * len(hits),
            hits["ra"] if "ra" in hits else [None] * len(hits),
            hits["dec"] if "dec" in hits else [None] * len(hits))]
        for column in ("survey_page", "simbad"):
            values = [f.get(column) for f in found]
            if any(values):  # no empty link columns for neighbours without a sky position
                hits[column] = values
    columns = [c for c in HIT_COLUMNS if c in hits] + [
        c for c in hits if c not in HIT_COLUMNS and c not in ("shard", "shard_row", "flux_unit")
    ]
    table = hits[columns].copy()
    for key, digits in (("z", 5), ("teff", 0), ("logg", 2), ("feh", 2), ("ra", 6), ("dec", 6)):
        if key in table:
            table[key] = pd.to_numeric(table[key], errors="coerce").round(digits)
    if "similarity" in table:
        table["similarity"] = table["similarity"].astype(float).round(4)
    # A missing text value shows blank, not "None" (link columns keep None: no link).
    for column in table.select_dtypes(include=["object", "string"]).columns.difference(["survey_page", "simbad"]):
        table[column] = ["" if missing_text(v) else v for v in table[column]]
    return table


def neighbours_csv(hits: pd.DataFrame) -> bytes:
    """The neighbours as CSV bytes for the download: ra, dec and similarity first.

    ra and dec are ICRS degrees, empty for spectra without a sky position (simulated ones).
    """
    table = hits_table(hits)
    for column in ("ra", "dec"):
        if column not in table:
            table[column] = np.nan
    first = [c for c in CSV_FIRST if c in table]
    table = table[first + [c for c in table if c not in first]]
    return table.to_csv(index=False).encode("utf-8")
