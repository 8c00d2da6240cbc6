"""How many simulated observations per second each instrument gives on this machine (one core).

Two sources, both made here (no data needed):
  fine   - one source for every instrument: 2000-27000 Å at Δlnλ = 8e-6 (R_sampling 125,000,
           ~325,000 pixels), fine enough for APOGEE; the costliest realistic case.
  match  - a source sampled just for the instrument: Δlnλ = 1/(5 R_max) over its range
           (e.g. an SSP template for SDSS, a synthetic H-band spectrum for APOGEE).

Usage: python benchmarks/simulate_speed.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spectok_core.data import instruments
from spectok_core.data.simulate import SimSource


def _source(lo: float, hi: float, dlnl: float, name: str) -> SimSource:
    wave = np.exp(np.arange(np.log(lo), np.log(hi), dlnl))
    flux = (wave / 5000.0) ** -1.5 * (1.0 + 0.2 * np.sin(wave / 7.0))
    for centre in (3728.5, 4862.7, 5008.2, 6564.6, 15500.0):  # a few lines
        flux += 5.0 * np.exp(-0.5 * ((wave - centre) / (0.5 * centre * dlnl * 4)) ** 2)
    return SimSource(name, wave, flux, fwhm_rest=2.0 * float(np.median(wave)) * dlnl, z=0.0)


def _rate(source: SimSource, key: str, repeats: int) -> float:
    rng = np.random.default_rng(0)
    instruments.observe(source, key, rng)  # warm the grid cache
    start = time.perf_counter()
    for _ in range(repeats):
        instruments.observe(source, key, rng)
    return repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    fine = _source(2000.0, 27000.0, 8e-6, "fine")
    print(f"{'survey':<11} {'pixels':>7} {'fine src/s':>11} {'match src/s':>12}")
    rates = []
    for key in instruments.SIMULATED_SURVEYS:
        wave = instruments.native_wave(key)
        r_max = float(np.max(instruments.resolving_power(key, wave)))
        match = _source(0.95 * wave[0], 1.05 * wave[-1], 1.0 / (5.0 * r_max), "match")
        rate_fine, rate_match = _rate(fine, key, args.repeats), _rate(match, key, args.repeats)
        rates.append(rate_fine)
        print(f"{key:<11} {wave.size:>7} {rate_fine:>11.1f} {rate_match:>12.1f}")
    hours = 1e5 / (2.0 * float(np.mean(rates))) / 3600.0
    print(f"1e5 observations with the fine source on 2 cores: about {hours:.2f} h")


if __name__ == "__main__":
    main()
