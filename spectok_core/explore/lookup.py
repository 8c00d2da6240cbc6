"""Finding an indexed spectrum: by object id, by sky position (degrees or sexagesimal), at random.

Positions are read with astropy's :class:`~astropy.coordinates.SkyCoord` (ICRS): ``150.1 2.2``,
``150.1, +2.2``, ``10:00:24.0 +02:12:00``, ``10h00m24s +2d12m00s`` or ``10 00 24 +02 12 00``
(six numbers: right ascension in hours). An exact object id wins over a position, so an id
that happens to look like numbers is still found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..spectrum import SpectrumError

#: Default match radius for a position lookup, arcseconds (fibres are 1.5-3″ across).
RADIUS_ARCSEC = 5.0
#: "Random bright" draws among this top share of the index by median S/N.
BRIGHT_SHARE = 0.1

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TWO_NUMBERS = re.compile(rf"^\s*({_NUMBER})\s*[,;\s]\s*({_NUMBER})\s*$")
_SIX_NUMBERS = re.compile(rf"^\s*(\d+)\s+(\d+)\s+({_NUMBER})\s*[,;\s]\s*([-+]?\d+)\s+(\d+)\s+({_NUMBER})\s*$")


@dataclass
class Lookup:
    """What a lookup found: index rows (best first), how, and a sentence for the page."""

    rows: list[int] = field(default_factory=list)
    kind: str = ""  # "id", "position" or "" (nothing understood)
    message: str = ""
    separations_arcsec: list[float] = field(default_factory=list)


def parse_position(text: str):
    """A SkyCoord from typed coordinates, or None when the text is not a position.

    Two plain numbers are degrees; anything with ``:`` or ``h m s`` / ``d m s`` letters,
    or six numbers, is sexagesimal with right ascension in hours. Out-of-range values
    raise SpectrumError saying so.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    text = str(text or "").strip()
    if not text or len(text) > 100:
        return None
    two = _TWO_NUMBERS.match(text)
    try:
        if two:
            ra, dec = float(two.group(1)), float(two.group(2))
            if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
                raise SpectrumError(f"{text!r}: RA must be in 0–360° and Dec in −90–+90°")
            return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
        six = _SIX_NUMBERS.match(text)
        if six:
            g = six.groups()
            text = f"{g[0]}:{g[1]}:{g[2]} {g[3]}:{g[4]}:{g[5]}"
        elif not re.search(r"\d\s*[:hHdD°]", text) or re.search(r"[^0-9hHmMsSdD°:'\"+\-.,\s]", text):
            return None
        parts = re.split(r"\s*,\s*|\s+(?=[-+])|\s+(?=\d+\s*[dD°:])", text.replace("′", "'"), maxsplit=1)
        if len(parts) != 2:
            parts = text.split(None, 1)
        if len(parts) != 2:
            return None
        return SkyCoord(parts[0].strip(), parts[1].strip(), unit=(u.hourangle, u.deg), frame="icrs")
    except SpectrumError:
        raise
    except (ValueError, TypeError) as err:
        raise SpectrumError(f"{text!r} looks like coordinates but could not be read ({err}); "
                            "write e.g. '150.1 2.2' (degrees) or '10:00:24 +02:12:00'") from None


def lookup(metadata: pd.DataFrame, text: str, radius_arcsec: float = RADIUS_ARCSEC) -> Lookup:
    """Index rows matching an object id (exact) or, failing that, a sky position.

    A position returns every indexed spectrum with ra/dec within ``radius_arcsec``,
    nearest first; with none inside, the message names the nearest and how far it is.
    Text that is neither gives a message with similar ids.
    """
    wanted = str(text or "").strip()
    if not wanted:
        return Lookup()
    ids = metadata["object_id"].astype(str) if "object_id" in metadata else pd.Series([], dtype=str)
    rows = np.flatnonzero(ids.to_numpy() == wanted)
    if rows.size:
        return Lookup([int(r) for r in rows], "id", f"object id {wanted}")
    position = parse_position(wanted)
    if position is None:
        close = ids[ids.str.contains(wanted, regex=False)].head(8).tolist() if len(ids) else []
        hint = f" Similar ids: {', '.join(close)}." if close else ""
        return Lookup([], "", f"No indexed spectrum has object id {wanted!r}, and it is not a "
                              f"position (e.g. '150.1 2.2' or '10:00:24 +02:12:00').{hint}")
    where = _radec(metadata)
    label = position.to_string("hmsdms", precision=1)
    if where is None:
        return Lookup([], "position", f"No indexed spectrum has a sky position (the simulated "
                                      f"ones have none), so nothing lies near {label}.")
    known_rows, coords = where
    separation = position.separation(coords).arcsec
    order = np.argsort(separation)
    inside = order[separation[order] <= radius_arcsec]
    if inside.size == 0:
        nearest = int(order[0])
        row = int(known_rows[nearest])
        return Lookup([], "position", f"Nothing within {radius_arcsec:g}″ of {label}; the nearest "
                      f"indexed spectrum is {metadata['object_id'].iloc[row]} "
                      f"({metadata['survey'].iloc[row]}), {_distance(separation[nearest])} away.")
    return Lookup([int(known_rows[i]) for i in inside], "position",
                  f"{inside.size} indexed spectr{'um' if inside.size == 1 else 'a'} within "
                  f"{radius_arcsec:g}″ of {label}", [float(separation[i]) for i in inside])


def _radec(metadata: pd.DataFrame):
    """(rows, SkyCoord) of the indexed spectra with a finite ra and dec, or None."""
    from astropy.coordinates import SkyCoord

    if "ra" not in metadata or "dec" not in metadata:
        return None
    ra = pd.to_numeric(metadata["ra"], errors="coerce").to_numpy(np.float64)
    dec = pd.to_numeric(metadata["dec"], errors="coerce").to_numpy(np.float64)
    known = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    if not known.any():
        return None
    return np.flatnonzero(known), SkyCoord(ra[known], dec[known], unit="deg", frame="icrs")


def _distance(arcsec: float) -> str:
    if arcsec < 60:
        return f"{arcsec:.1f}″"
    if arcsec < 3600:
        return f"{arcsec / 60:.1f}′"
    return f"{arcsec / 3600:.2f}°"


def random_row(metadata: pd.DataFrame, rng: np.random.Generator | None = None,
               bright: bool = False) -> int:
    """A random index row; ``bright``: among the top :data:`BRIGHT_SHARE` by median S/N."""
    rng = rng if rng is not None else np.random.default_rng()
    if len(metadata) == 0:
        raise SpectrumError("the index is empty")
    candidates = np.arange(len(metadata))
    if bright and "snr" in metadata:
        snr = pd.to_numeric(metadata["snr"], errors="coerce").to_numpy(np.float64)
        known = np.flatnonzero(np.isfinite(snr))
        if known.size:
            cut = np.quantile(snr[known], 1.0 - BRIGHT_SHARE)
            candidates = known[snr[known] >= cut]
    return int(rng.choice(candidates))


# -- the same on an index whose metadata stays in Parquet (a large one) -------------------------


def lookup_in(index, text: str, radius_arcsec: float = RADIUS_ARCSEC) -> Lookup:
    """:func:`lookup` on a :class:`~spectok_core.index.SpectrumIndex`.

    With its metadata in memory this is :func:`lookup` itself. Otherwise (a large index)
    only the candidate rows are read: those whose object id equals the text (a pushed-down
    Parquet filter), else those in an RA/Dec box around the position, and the exact
    separation is taken on them.
    """
    if index.metadata_loaded:
        return lookup(index.metadata, text, radius_arcsec)
    wanted = str(text or "").strip()
    if not wanted:
        return Lookup()
    rows = index.rows_where_equal("object_id", wanted)
    if rows.size:
        return Lookup([int(r) for r in rows], "id", f"object id {wanted}")
    position = parse_position(wanted)
    if position is None:
        return Lookup([], "", f"No indexed spectrum has object id {wanted!r}, and it is not a "
                              "position (e.g. '150.1 2.2' or '10:00:24 +02:12:00').")
    label = position.to_string("hmsdms", precision=1)
    rows = _rows_near(index, float(position.ra.deg), float(position.dec.deg), radius_arcsec / 3600.0)
    if rows.size == 0:
        return Lookup([], "position", f"Nothing within {radius_arcsec:g}″ of {label}.")
    near = lookup(index.rows_metadata(rows, ["object_id", "survey", "ra", "dec"]).reset_index(drop=True),
                  wanted, radius_arcsec)
    near.rows = [int(rows[r]) for r in near.rows]
    if not near.rows:
        near.message = f"Nothing within {radius_arcsec:g}″ of {label}."
    return near


def _rows_near(index, ra: float, dec: float, radius_deg: float) -> np.ndarray:
    """Rows with ra/dec in a box around (ra, dec) that holds the circle of ``radius_deg``."""
    if "ra" not in index.column_names or "dec" not in index.column_names:
        return np.zeros(0, np.int64)
    box = {"dec": (dec - radius_deg, dec + radius_deg)}
    half = radius_deg / max(np.cos(np.radians(min(abs(dec) + radius_deg, 90.0))), 1e-9)
    if half >= 180.0:  # at a pole every RA is near
        return index.find_rows(box)
    low, high = ra - half, ra + half
    parts = [(max(low, 0.0), min(high, 360.0))]
    if low < 0.0:
        parts.append((low + 360.0, 360.0))
    if high > 360.0:
        parts.append((0.0, high - 360.0))
    return np.unique(np.concatenate([index.find_rows({**box, "ra": part}) for part in parts]))


def random_row_of(index, rng: np.random.Generator | None = None, bright: bool = False) -> int:
    """:func:`random_row` on an index, reading only the S/N column when not loaded."""
    if index.metadata_loaded:
        return random_row(index.metadata, rng, bright)
    if len(index) == 0:
        raise SpectrumError("the index is empty")
    rng = rng if rng is not None else np.random.default_rng()
    if not bright or "snr" not in index.column_names:
        return int(rng.integers(len(index)))
    return random_row(index.columns(["snr"]), rng, bright)
