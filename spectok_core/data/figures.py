"""Figures that show what the simulator does, for the corpus notes and the README.

1. one simulated source seen by three instruments (same object, three grids);
2. real survey spectra beside simulated ones of the same class and redshift.

    spectok corpus figures --out reports/corpus
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import lines, surveys
from ..spectrum import Spectrum


def _plot_setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smooth_for_display(spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    flux = np.where(spectrum.mask, np.nan, spectrum.flux.astype(float))
    scale = np.nanmedian(flux)
    return spectrum.wave, flux / (scale if scale and np.isfinite(scale) else 1.0)


def _mark_lines(ax, z: float, wave_min: float, wave_max: float, objects: str) -> None:
    for line in lines.select(objects=objects, kind="emission", wave_min=wave_min, wave_max=wave_max, z=z):
        if line.name in {"Halpha", "Hbeta", "OIII_5008", "OII_3727", "MgII_2799", "CIV_1549", "CIII]_1909", "Lyalpha", "Lya"}:
            observed = line.wave_vac * (1 + z)
            ax.axvline(observed, color="tab:blue", lw=0.6, alpha=0.5)
            ax.text(observed, 0.97, line.label, transform=ax.get_xaxis_transform(), fontsize=7,
                    rotation=90, va="top", ha="right", color="tab:blue")


def save_png(fig, out: Path) -> Path:
    """Write a matplotlib figure as PNG atomically (never a half-written file) and close it."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out


def one_source_three_instruments(out: Path, cache: Path | None = None, seed: int = 3) -> Path:
    """A quasar at z = 1.2 observed by SDSS, DESI and Gaia XP (simulated)."""
    from . import astro, instruments

    plt = _plot_setup()
    rng = np.random.default_rng(seed)
    source = astro.quasar(rng, 1.2, object_id="sim-qso-figure")
    keys = ("sdss", "desi", "gaia_xp")
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 7.5), sharex=True)
    for ax, key in zip(axes, keys):
        observed = instruments.simulate(source, key, rng)
        wave, flux = _smooth_for_display(observed.spectrum)
        model = observed.model_flux / np.nanmedian(np.where(observed.spectrum.mask, np.nan, observed.spectrum.flux))
        ax.plot(wave, flux, lw=0.5, color="0.3", label="simulated observation")
        ax.plot(wave, model, lw=0.8, color="tab:orange", label="noiseless")
        _mark_lines(ax, source.z, wave[0], wave[-1], "qso")
        s = observed.spectrum
        ax.set_title(f"{surveys.get(key).name}: {len(s)} px, R≈{surveys.get(key).resolving_power:.0f}, "
                     f"S/N {s.median_snr:.1f}", fontsize=9)
        ax.set_ylabel("flux / median")
        top = np.nanpercentile(flux, 99.5)
        ax.set_ylim(-0.2, max(top, 1.5) * 1.15)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("observed vacuum wavelength [Å]")
    fig.suptitle(f"One simulated quasar (z = {source.z:.2f}) seen by three instruments — simulated data",
                 fontsize=10)
    fig.tight_layout()
    path = save_png(fig, Path(out) / "one_source_three_instruments.png")
    return path


def real_vs_simulated(out: Path, shared: Path, cache: Path | None = None, seed: int = 5) -> Path | None:
    """Real SDSS/BOSS galaxy and quasar spectra beside simulated ones at the same z and S/N."""
    from ..io import read_spectra
    from . import astro, instruments
    from .fetch import cache_dir

    cases = [("spec-0266-51602-0013.fits", "galaxy"), ("rm017_epochs/spec-7339-57544-0733.fits", "qso")]
    paths = [Path(shared) / "sdss" / name for name, _ in cases]
    if not all(p.is_file() for p in paths):
        return None
    plt = _plot_setup()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(cases), 1, figsize=(10, 6.5))
    for ax, path, (_, kind) in zip(axes, paths, cases):
        real = read_spectra(path)[0]
        z = float(real.meta["z"])
        if kind == "galaxy":
            # This real galaxy has a red, absorption-line spectrum: compare like with like.
            source = astro.galaxy(rng, z, cache=cache or cache_dir(), kind="quiescent")
        else:
            source = astro.quasar(rng, z)
        sim = instruments.observe(source, real.survey, rng, snr=real.median_snr)
        name = real.survey.upper()
        for spectrum, colour, label in ((real, "k", f"real {name}"), (sim, "tab:red", f"simulated {name}")):
            wave, flux = _smooth_for_display(spectrum)
            ax.plot(wave / (1 + z), flux, lw=0.5, color=colour, alpha=0.8, label=label)
        _mark_lines(ax, 0.0, real.wave[0] / (1 + z), real.wave[-1] / (1 + z), kind)
        ax.set_title(f"{real.meta.get('class')} {real.meta.get('subclass') or ''} z={z:.3f} "
                     f"({path.name}, S/N {real.median_snr:.1f}) vs simulated {kind} at the same z and S/N",
                     fontsize=9)
        ax.set_ylabel("flux / median")
        ax.set_ylim(-0.3, np.nanpercentile(_smooth_for_display(real)[1], 99.7) * 1.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("rest-frame vacuum wavelength [Å]")
    fig.tight_layout()
    result = save_png(fig, Path(out) / "real_vs_simulated.png")
    return result
