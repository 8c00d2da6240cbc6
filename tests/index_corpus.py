"""A tiny mixed corpus for the index tests: six surveys, every grid kind the display copy
stores, real and simulated, stars, galaxies and quasars, split train/val/test."""

import numpy as np

from spectok_core import Spectrum, surveys
from spectok_core.io.mmu import write_mmu_shard
from spectok_core.spectrum import air_to_vacuum
from tests.fake_spectra import labelled_spectrum

# survey -> (grid, [(class, origin), ...]); grids cover every kind the display copy stores.
GRIDS = {
    "sdss": surveys.get("sdss").native_grid()[:500],  # log-linear
    "desi": surveys.get("desi").native_grid()[:500],  # linear
    "gaia_xp": surveys.get("gaia_xp").native_grid(),  # linear, 343 px
    "miles": air_to_vacuum(np.arange(3540.0, 7410.0, 5.0)),  # linear in air
    "lamost_mrs": np.concatenate([np.linspace(4950, 5350, 300), np.linspace(6300, 6800, 300)]),  # 2 arms
    "spex": 8000 + np.cumsum(20 + 8 * np.sin(np.arange(300) / 15)),  # irregular: stored explicitly
}
MIX = {
    "sdss": [("STAR", "real")] * 4 + [("GALAXY", "simulated")] * 3 + [("QSO", "simulated")] * 3,
    "desi": [("STAR", "simulated")] * 4 + [("GALAXY", "simulated")] * 3 + [("QSO", "simulated")] * 3,
    "gaia_xp": [("STAR", "real")] * 8,
    "miles": [("STAR", "real")] * 6,
    "lamost_mrs": [("STAR", "simulated")] * 6,
    "spex": [("STAR", "real")] * 4,
}
N_SPECTRA = sum(len(v) for v in MIX.values())  # 44
N_STARS = sum(c == "STAR" for v in MIX.values() for c, _ in v)  # 32


def synthetic_spectrum(survey: str, kind: str, origin: str, i: int, rng) -> Spectrum:
    meta = {"object_id": f"{survey}-{kind.lower()}-{i}", "origin": origin,
            "split": ("train", "val", "test")[i % 3]}
    return labelled_spectrum(GRIDS[survey], survey, kind, meta, rng)


def write_corpus(folder):
    rng = np.random.default_rng(1)
    for survey, mix in MIX.items():
        spectra = [synthetic_spectrum(survey, kind, origin, i, rng) for i, (kind, origin) in enumerate(mix)]
        write_mmu_shard(folder / ("real" if mix[0][1] == "real" else "sim") / survey / f"{survey}-0.h5", spectra)
    return folder
