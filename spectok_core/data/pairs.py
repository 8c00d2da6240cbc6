"""Same-object pairs across instruments, for the cross-survey training terms.

The corpus gives every observation of one object the same ``object_id``:
simulated observations of one source by several instruments, and simulated
APOGEE spectra of the stars whose real Gaia XP spectra are in the corpus.
:class:`PairIndex` lists, for each pair of instruments, the (shard, row)
locations of such pairs in one split, and draws batches of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spectrum import Spectrum, SpectrumError


def read_rows(path: Path, rows: np.ndarray) -> list[Spectrum | None]:
    """The spectra at ``rows`` of one shard, in the order given; None where a row is unusable."""
    import h5py

    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    unique, inverse = np.unique(rows[order], return_inverse=True)
    with h5py.File(path, "r") as h5:
        wave = h5["spectrum_lambda"][unique]
        flux = h5["spectrum_flux"][unique]
        ivar = h5["spectrum_ivar"][unique]
        mask = h5["spectrum_mask"][unique]
        surveys = h5["survey"][unique].astype(str)
    read: list[Spectrum | None] = []
    for i in range(len(unique)):
        keep = wave[i] > 0
        try:
            read.append(Spectrum(wave[i, keep], flux[i, keep], ivar[i, keep], mask[i, keep], surveys[i]))
        except SpectrumError:
            read.append(None)  # the corpus builder validated these; a bad row is skipped, not fatal
    out: list[Spectrum | None] = [None] * len(rows)
    for position, k in zip(order, inverse):
        out[position] = read[k]
    return out


def read_locations(corpus: Path, shards: np.ndarray, rows: np.ndarray) -> list[Spectrum | None]:
    """Spectra at (shard, row) locations spread over many shards, in the order given; each
    shard is opened once. None where a row is unusable."""
    out: list[Spectrum | None] = [None] * len(rows)
    shards = np.asarray(shards)
    for shard in np.unique(shards):
        where = np.flatnonzero(shards == shard)
        for i, spectrum in zip(where, read_rows(Path(corpus) / shard, np.asarray(rows)[where])):
            out[i] = spectrum
    return out


@dataclass
class PairIndex:
    """Same-object pairs of one split, grouped by instrument pair (surveys sorted a < b)."""

    corpus: Path
    shards: np.ndarray  # (n_locations,) shard path relative to the corpus
    rows: np.ndarray  # (n_locations,) row in that shard
    pairs: dict[tuple[str, str], np.ndarray]  # (survey a, survey b) -> (n, 2) location indices

    @classmethod
    def build(cls, corpus: Path, split: str = "train", min_pairs: int = 50) -> PairIndex:
        """Every cross-instrument pair of spectra sharing an object id; instrument pairs with
        fewer than ``min_pairs`` pairs are left out."""
        from .corpus import metadata

        table = metadata(Path(corpus), ("object_id", "survey", "split"))
        table = table[(table["split"] == split) & table["object_id"].notna()].reset_index(drop=True)
        table["loc"] = np.arange(len(table))
        counts = table.groupby("object_id")["survey"].transform("nunique")
        multi = table[counts > 1][["object_id", "survey", "loc"]]
        joined = multi.merge(multi, on="object_id", suffixes=("_a", "_b"))
        joined = joined[joined["survey_a"] < joined["survey_b"]]
        pairs = {}
        for (a, b), group in joined.groupby(["survey_a", "survey_b"], sort=True):
            if len(group) >= min_pairs:
                pairs[(str(a), str(b))] = group[["loc_a", "loc_b"]].to_numpy(np.int64)
        return cls(Path(corpus), table["shard"].to_numpy(), table["row"].to_numpy(np.int64), pairs)

    def __len__(self) -> int:
        return sum(len(v) for v in self.pairs.values())

    def draw_weights(self, focus: dict[str, float] | None = None) -> dict[tuple[str, str], float]:
        """How often each instrument pair is drawn: ∝ √count, so rare pairs are seen, times
        ``focus[survey]`` for a pair that includes that survey (the largest factor if both do)."""
        focus = focus or {}
        weights = {}
        for key in sorted(self.pairs):
            factor = max((focus.get(s, 1.0) for s in key), default=1.0)
            weights[key] = float(np.sqrt(len(self.pairs[key]))) * factor
        total = sum(weights.values())
        return {k: w / total for k, w in weights.items()}

    def sample(
        self, rng: np.random.Generator, size_for: Callable[[str, str], int],
        focus: dict[str, float] | None = None,
    ) -> tuple[str, str, list[Spectrum], list[Spectrum]]:
        """One instrument pair (drawn with :meth:`draw_weights`) and ``size_for(a, b)``
        same-object pairs from it: (survey a, survey b, spectra a, spectra b), index-aligned.
        Pairs with an unreadable side are dropped."""
        drawn = self.draw_weights(focus)
        keys = list(drawn)
        a, b = keys[rng.choice(len(keys), p=list(drawn.values()))]
        table = self.pairs[(a, b)]
        size = min(size_for(a, b), len(table))
        chosen = table[rng.choice(len(table), size=size, replace=False)]
        side_a, side_b = self._read(chosen[:, 0]), self._read(chosen[:, 1])
        keep = [i for i in range(size) if side_a[i] is not None and side_b[i] is not None]
        return a, b, [side_a[i] for i in keep], [side_b[i] for i in keep]

    def _read(self, locations: np.ndarray) -> list[Spectrum | None]:
        return read_locations(self.corpus, self.shards[locations], self.rows[locations])
