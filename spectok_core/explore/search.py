"""Searching the index from the page's filters, and the neighbours table as shown and downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

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


