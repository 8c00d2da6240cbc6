"""A tiny synthetic corpus for the evaluation tests: every task has something to chew on.

Real-like collections (Gaia XP with four labels, MILES and STELIB with three,
SpeX with type strings) and simulated SDSS / DESI / APOGEE observations with
classes, redshifts and same-object pairs (SDSS <-> DESI, and APOGEE sharing
object ids with Gaia XP stars). Splits are set explicitly so each has rows.
Spectra are short (a few hundred pixels) to keep the tiny model fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectok_core import Spectrum
from spectok_core.io.mmu import write_mmu_shard

LINES = (3934.8, 4102.9, 4341.7, 4862.7, 5176.7, 5891.6, 6564.6, 8544.4, 10941.1, 12821.6,
         15770.0, 16100.0, 16500.0, 21661.2)
SPLITS = ("train",) * 6 + ("val", "test", "test")


def split(i: int) -> str:
    return SPLITS[i % len(SPLITS)]


def star_flux(wave: np.ndarray, teff: float, feh: float, rng) -> np.ndarray:
    continuum = 1.0 / (wave / 5000.0) ** 5 / np.expm1(1.4388e8 / (wave * teff))
    depth = 0.3 * (1.0 + feh) * (6000.0 / teff)
    lines = sum(depth * np.exp(-0.5 * ((wave - c) / (0.004 * c)) ** 2) for c in LINES)
    flux = continuum / np.median(continuum) * np.clip(1.0 - lines, 0.1, None)
    return flux * (1.0 + 0.01 * rng.standard_normal(wave.size))


def source_flux(wave: np.ndarray, cls: str, z: float, rng) -> np.ndarray:
    rest = wave / (1.0 + z)
    if cls == "STAR":
        return star_flux(wave, 5000.0 + 2000.0 * rng.random(), 0.0, rng)
    if cls == "GALAXY":
        flux = 1.0 - 0.3 * np.exp(-0.5 * ((rest - 4000.0) / 60.0) ** 2) + 0.2 * (rest > 4000)
        flux += 2.0 * np.exp(-0.5 * ((rest - 6564.6) / 3.0) ** 2)
        return flux
    flux = (rest / 3000.0) ** -1.5
    for line in (1549.0, 2799.0, 4862.7, 6564.6):
        flux = flux + 1.5 * np.exp(-0.5 * ((rest - line) / (0.02 * line)) ** 2)
    return flux


def make(wave, flux, survey, meta, snr=30.0, rng=None) -> Spectrum:
    rng = rng or np.random.default_rng(0)
    sigma = np.abs(np.median(flux)) / snr
    noisy = flux + sigma * rng.standard_normal(wave.size)
    return Spectrum(wave, noisy, np.full(wave.size, 1.0 / sigma**2), survey=survey, meta=meta)


def build(folder: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    # Gaia XP (real): 45 stars with APOGEE-like labels.
    wave_xp = np.linspace(3360.0, 10200.0, 343)
    xp, xp_labels = [], []
    for i in range(45):
        teff, logg, feh, alpha = rng.uniform(3800, 7000), rng.uniform(1, 5), rng.uniform(-1, 0.4), rng.uniform(-0.1, 0.3)
        meta = {"object_id": f"xp{i:03d}", "origin": "real", "class": "STAR", "split": split(i),
                "teff": teff, "logg": logg, "feh": feh, "alpha_m": alpha}
        xp.append(make(wave_xp, star_flux(wave_xp, teff, feh, rng), "gaia_xp", meta, 50, rng))
        xp_labels.append((meta["object_id"], teff, logg, feh, alpha, split(i)))
    write_mmu_shard(folder / "real" / "gaia_xp" / "gaia_xp-000.h5", xp)
    # MILES and STELIB (real): one star shared between them (different spellings).
    for key, lo, hi, n in (("miles", 3541.5, 7411.6, 24), ("stelib", 3200.0, 9300.0, 15)):
        wave = np.linspace(lo, hi, 480)
        spectra = []
        for i in range(n):
            teff, logg, feh = rng.uniform(3800, 9000), rng.uniform(1, 5), rng.uniform(-1.5, 0.4)
            name = ("HD 002857" if key == "miles" else "HD2857") if i == 0 else f"{key.upper()} {i}"
            meta = {"object_id": f"{key}-{i:03d}", "origin": "real", "class": "STAR", "split": split(i),
                    "teff": teff, "logg": logg, "feh": feh, "star_name": name}
            spectra.append(make(wave, star_flux(wave, teff, feh, rng), key, meta, 80, rng))
        write_mmu_shard(folder / "real" / key / f"{key}-000.h5", spectra)
    # SpeX (real): M/L/T types as strings, a few unparseable.
    wave_spex = np.geomspace(6500.0, 25000.0, 300)
    types = ["M5", "M8 pec", "sdM7", "L4.5", "L0gamma", "T2", "T6.5", "d/sdM8", "M9.5 V", "L7", "galaxy", "M"]
    spex = []
    for i in range(36):
        label = types[i % len(types)]
        teff = 3000.0 - 80.0 * (i % len(types))
        meta = {"object_id": f"spex-{i:03d}", "origin": "real", "class": "STAR", "split": split(i),
                "spectral_type": label}
        spex.append(make(wave_spex, star_flux(wave_spex, teff, 0.0, rng), "spex", meta, 40, rng))
    write_mmu_shard(folder / "real" / "spex" / "spex-000.h5", spex)
    # Simulated SDSS and DESI: the same 27 sources seen by both (same-object pairs).
    grids = {"sdss": np.geomspace(3800.0, 9200.0, 400), "desi": np.geomspace(3600.0, 9800.0, 460)}
    observed = {key: [] for key in grids}
    for i in range(27):
        cls = ("STAR", "GALAXY", "QSO")[i % 3]
        z = 0.0 if cls == "STAR" else float(rng.uniform(0.05, 0.4) if cls == "GALAXY" else rng.uniform(0.5, 2.0))
        for key, wave in grids.items():
            meta = {"object_id": f"sim-{i:03d}", "origin": "simulated", "class": cls, "z": z,
                    "split": split(i)}
            observed[key].append(make(wave, source_flux(wave, cls, z, rng), key, meta, 20, rng))
    for key, spectra in observed.items():
        write_mmu_shard(folder / "sim" / key / f"{key}-c00000.h5", spectra)
    # Simulated APOGEE twins of Gaia XP stars: real-simulated pairs.
    wave_ap = np.geomspace(15100.0, 17000.0, 320)
    twins = []
    for object_id, teff, logg, feh, alpha, sp in xp_labels[:27]:
        meta = {"object_id": object_id, "origin": "simulated", "class": "STAR", "split": sp,
                "teff": teff, "logg": logg, "feh": feh, "alpha_m": alpha, "pair_of": "gaia_xp real"}
        twins.append(make(wave_ap, star_flux(wave_ap, teff, feh, rng), "apogee", meta, 60, rng))
    write_mmu_shard(folder / "sim" / "apogee" / "apogee-c00000.h5", twins)
    return folder
