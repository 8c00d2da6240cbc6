"""Embedding speed of the shipped model on this machine, against its matrix-multiply peak.

    .venv/bin/python benchmarks/embed_speed.py [--model PATH] [--n 256] [--threads 2]

Prints spectra per second for SDSS-, DESI-, APOGEE- and Gaia XP-length spectra
(simulated flux on each instrument's native grid: speed does not depend on the
values), the achieved GFLOP/s of the encoder, and the share of the measured
float32 matmul peak that this is. Target: >= 200 SDSS-length spectra per second
on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spectok_core import Spectrum
from spectok_core.data.instruments import native_wave
from spectok_core.model import Tokenizer


def matmul_peak(size: int = 1024, repeats: int = 30) -> float:
    """Best float32 GFLOP/s of a square matmul (what the cores can do at best)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def encoder_flops(tok: Tokenizer, n_pixels: int) -> float:
    """Approximate FLOPs to embed one spectrum of n_pixels (matmuls only)."""
    c = tok.config
    n = -(-n_pixels // c.patch_size)
    d = c.d_model
    per_layer = n * (4 * d * d + 2 * c.mlp_ratio * d * d) * 2 + 2 * n * n * d * 2
    embed = n * (c.patch_size * 3 + 2 * c.n_freq + 3) * d * 2
    k = c.n_latents  # latent queries: self-attention, cross-attention to the n tokens, MLP
    latent = (k * (4 * d * d + 2 * c.mlp_ratio * d * d) + k * 2 * d * d + n * 2 * d * d) * 2 + 2 * k * n * d * 2
    summary = k * d * d * 2 if k else 0
    return c.n_enc_layers * per_layer + embed + c.n_latent_layers * latent * (k > 0) + summary + d * d * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: shipped spectok-small)")
    parser.add_argument("--n", type=int, default=256, help="spectra per survey")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok = Tokenizer.from_pretrained(args.model)
    peak = matmul_peak()
    print(f"model {tok.model_id} ({sum(p.numel() for p in tok.model.parameters()) / 1e6:.2f} M parameters), "
          f"{args.threads} threads; float32 matmul peak {peak:.0f} GFLOP/s")
    rng = np.random.default_rng(0)
    print(f"{'survey':<10}{'pixels':>8}{'spectra/s':>12}{'GFLOP/s':>10}{'% of peak':>11}")
    for key in ("sdss", "desi", "apogee", "gaia_xp"):
        wave = native_wave(key)
        spectra = [
            Spectrum(wave, 1.0 + 0.1 * rng.standard_normal(wave.size), np.full(wave.size, 100.0), survey=key)
            for _ in range(args.n)
        ]
        tok.embed(spectra[: args.batch_size], batch_size=args.batch_size)  # warm up
        start = time.perf_counter()
        tok.embed(spectra, batch_size=args.batch_size)
        rate = args.n / (time.perf_counter() - start)
        gflops = rate * encoder_flops(tok, wave.size) / 1e9
        print(f"{key:<10}{wave.size:>8}{rate:>12.0f}{gflops:>10.1f}{100 * gflops / peak:>10.0f}%")
    print("(simulated flux on native grids; the time includes normalisation and patching)")


if __name__ == "__main__":
    main()
