"""The universal spectral tokenizer network, top to bottom in one file.

    native pixels ─ patches ─┬─ patch embedding ─┐
    vacuum wavelengths ──────┼─ sinusoidal encoding (per pixel, pooled per patch)
    sampling & resolution ───┴─ info embedding ──┴─ + ─ transformer encoder ─ tokens
                                                                  │
                  learned latent queries ─ cross-attend the tokens ─ latents (the object)
                                                                  │
                                    summary head ─ embedding (calibrated, L2-normalised)
                                                                  │
    any target grid ─ queries (wavelength + resolution) ─ decoder (cross-attends latents)
                                                                  │
                                      per-pixel head ─ normalised flux on the target grid

The decoder reads the latents alone, never the per-patch tokens, so whatever
it renders on any grid must pass through a few vectors that describe the
object rather than the instrument's pixels; the search embedding is made from
those latents by the summary head (linear, or a small MLP trained by ``spectok align``
on same-object pairs with the rest frozen). Flux amplitude stays out of them: the input is divided by its
median and that scale is kept aside (``Batch.log_scale``).

Patches with too many bad pixels are left out of attention (never fed in as
zeros), and so are the patches hidden for masked modelling in training. The
model sees wavelengths only through their physical values, so any instrument's
grid, including one it never saw, can be read and written.

``n_latents = 0`` is the earlier design (decoder reads the tokens, embedding
is their mean); it is kept so that older model folders still load.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .batch import N_INFO_FEATURES, N_PIXEL_FEATURES, Batch, TargetGrid
from .config import ModelConfig


def wavelength_frequencies(config: ModelConfig) -> torch.Tensor:
    """Angular frequencies (rad/Å) with periods log-spaced from period_min to period_max."""
    periods = torch.logspace(
        math.log10(config.period_min), math.log10(config.period_max), config.n_freq, dtype=torch.float64
    )
    return 2.0 * math.pi / periods


def encode_patch_wavelengths(wave: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """The per-pixel encoding averaged over each patch: (..., P) -> (..., 2 * n_freq).

    Computed in closed form: within a patch the grid is (to ~1e-6 relative)
    evenly spaced, so the mean of sin(ω λ_j) over P pixels spaced δ around the
    centre λ_c is sin(ω λ_c) · D with the Dirichlet kernel
    D = sin(P ω δ / 2) / (P sin(ω δ / 2)). Periods much shorter than the patch
    average away (D → 0) exactly as the pixel mean would.
    """
    wave = wave.to(torch.float64)
    p = wave.shape[-1]
    centre = 0.5 * (wave[..., 0] + wave[..., -1])
    step = (wave[..., -1] - wave[..., 0]) / max(p - 1, 1)
    half = 0.5 * step[..., None] * frequencies
    denominator = p * torch.sin(half)
    kernel = torch.where(
        denominator.abs() > 1e-12, torch.sin(p * half) / denominator, torch.ones_like(half)
    )
    phase = centre[..., None] * frequencies
    return torch.cat([torch.sin(phase) * kernel, torch.cos(phase) * kernel], dim=-1).to(torch.float32)


def encode_wavelength(wave: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Sinusoidal encoding of vacuum wavelengths (Å): (..., ) -> (..., 2 * n_freq).

    Computed in float64 (phases reach ~1e5 rad) and returned as float32.
    """
    phase = wave.to(torch.float64)[..., None] * frequencies
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1).to(torch.float32)


class Summary(NamedTuple):
    """What the encoder hands on: the decoder's memory and the vector the embedding is made from."""

    memory: torch.Tensor  # (B, K, d): the latents (or the tokens when n_latents = 0)
    memory_valid: torch.Tensor  # (B, K) bool
    vector: torch.Tensor  # (B, d_model), before the embedding's calibration


class MLP(nn.Module):
    def __init__(self, d: int, ratio: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d, ratio * d)
        self.proj = nn.Linear(ratio * d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x, memory, memory_valid):
        """x (B, N, d) attends to memory (B, M, d); memory_valid (B, M) bool."""
        b, n, d = x.shape
        m = memory.shape[1]
        h = self.n_heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(memory).view(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        # Without excluded patches the unmasked kernel is used (faster on CPU).
        mask = None if bool(memory_valid.all()) else memory_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model)
        self.attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.mlp = MLP(c.d_model, c.mlp_ratio, c.dropout)

    def forward(self, x, valid):
        y = self.ln1(x)
        x = x + self.attn(y, y, valid)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model)
        self.self_attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.ln2 = nn.LayerNorm(c.d_model)
        self.cross_attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.ln3 = nn.LayerNorm(c.d_model)
        self.mlp = MLP(c.d_model, c.mlp_ratio, c.dropout)

    def forward(self, q, q_valid, memory, memory_valid):
        y = self.ln1(q)
        q = q + self.self_attn(y, y, q_valid)
        q = q + self.cross_attn(self.ln2(q), memory, memory_valid)
        return q + self.mlp(self.ln3(q))


def summary_head(d_in: int, d_out: int, hidden: int) -> nn.Module:
    """Latents (flattened) -> summary vector: linear, or an MLP with one hidden layer."""
    if not hidden:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class SpecTok(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.register_buffer("frequencies", wavelength_frequencies(c), persistent=False)
        n_enc = 2 * c.n_freq
        self.patch_embed = nn.Linear(c.patch_size * N_PIXEL_FEATURES, d)
        self.wave_embed = nn.Linear(n_enc, d)
        self.info_embed = nn.Linear(N_INFO_FEATURES, d)
        self.encoder = nn.ModuleList(EncoderBlock(c) for _ in range(c.n_enc_layers))
        self.enc_norm = nn.LayerNorm(d)
        if c.n_latents:
            # The bottleneck: learned queries cross-attend to the tokens (and to each other).
            self.latent_queries = nn.Parameter(torch.zeros(1, c.n_latents, d))
            self.latent_blocks = nn.ModuleList(DecoderBlock(c) for _ in range(c.n_latent_layers))
            self.summary_head = summary_head(c.n_latents * d, d, c.summary_hidden)
        # The summary vector (the summary head's map of the latents, or the mean token when
        # there are none) is centred and whitened by a fixed linear map fitted on
        # training spectra after training (calibrate_pooling).
        if c.d_embed > d:
            raise ValueError(f"d_embed ({c.d_embed}) cannot exceed d_model ({d})")
        self.register_buffer("embed_mean", torch.zeros(d))
        self.register_buffer("embed_proj", torch.eye(d)[:, : c.d_embed].clone())
        # Decoder: queries from the target grid's wavelengths and resolution.
        self.memory_proj = nn.Linear(d, d)
        self.query_wave = nn.Linear(n_enc, d)
        self.query_info = nn.Linear(N_INFO_FEATURES, d)
        self.query_bias = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder = nn.ModuleList(DecoderBlock(c) for _ in range(c.n_dec_layers))
        self.dec_norm = nn.LayerNorm(d)
        # Per-pixel head: the query patch state plus the pixel's own wavelength.
        self.pixel_wave = nn.Linear(n_enc, d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.apply(self._init)
        if c.n_latents:
            # The latents must depend on the input from the first step: with the usual
            # small init their cross-attention added ~1e-4 of input-dependent signal, the
            # decoder learned to ignore the latents and they collapsed to one constant
            # (measured on a toy problem). Variance-preserving value and output maps, and
            # no normalisation that would squash the variation, avoid that.
            nn.init.normal_(self.latent_queries, std=0.02)
            for block in self.latent_blocks:
                nn.init.normal_(block.cross_attn.kv.weight, std=2 * d**-0.5)
                nn.init.normal_(block.cross_attn.proj.weight, std=2 * d**-0.5)

    @staticmethod
    def _init(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    # -- encoder -----------------------------------------------------------------

    def encode(self, batch: Batch, attend: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, N, d) and the mask of patches attended to (B, N).

        ``attend`` (training) hides some valid patches: they are excluded from
        attention exactly like bad patches.
        """
        attend = batch.valid if attend is None else attend & batch.valid
        b, n, p, f = batch.pixels.shape
        wave_code = encode_patch_wavelengths(batch.wave, self.frequencies)
        x = self.patch_embed(batch.pixels.reshape(b, n, p * f))
        x = x + self.wave_embed(wave_code) + self.info_embed(batch.info)
        # Excluded patches carry no information forward, whatever their flux.
        x = x * attend[..., None]
        for block in self.encoder:
            x = block(x, attend)
        return self.enc_norm(x), attend

    def mean_tokens(self, tokens: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """The mean of each spectrum's attended tokens: (B, d_model)."""
        weight = attend.to(tokens.dtype)[..., None]
        return (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)

    def summarise(self, tokens: torch.Tensor, attend: torch.Tensor) -> Summary:
        """What the decoder reads (latents, or the tokens themselves) and the summary vector."""
        if not self.config.n_latents:
            return Summary(tokens, attend, self.mean_tokens(tokens, attend))
        # Each latent starts from the spectrum's mean token (plus its own learned offset),
        # so from the first step the latents differ between inputs; starting from the
        # queries alone, the tokens' small initial contribution was normalised away and
        # the decoder learned to ignore the latents.
        latents = self.latent_queries + self.mean_tokens(tokens, attend)[:, None, :]
        every = torch.ones(latents.shape[:2], dtype=torch.bool, device=tokens.device)
        for block in self.latent_blocks:
            latents = block(latents, every, tokens, attend)
        return Summary(latents, every, self.summary_head(latents.flatten(1)))

    def pool(self, summary: torch.Tensor) -> torch.Tensor:
        """One L2-normalised embedding per spectrum from its summary vector (B, d_model)."""
        centred = summary - self.embed_mean
        return F.normalize(centred @ self.embed_proj, dim=-1)

    @torch.no_grad()
    def calibrate_pooling(self, pooled: torch.Tensor, shrink: float = 0.01) -> None:
        """Fit the centring and whitening of the embedding on mean tokens of training spectra.

        PCA whitening keeps the ``d_embed`` leading directions and scales each to unit
        variance (eigenvalues shrunk by ``shrink`` x their mean so noise directions are
        not blown up), so that cosine similarity compares what varies between spectra
        rather than what all spectra share. A large ``shrink`` (say 100) scales all
        directions alike: centring and rotation only, which keeps the geometry a
        contrastive term trained (whitening re-weights it).
        """
        pooled = pooled.to(torch.float64)
        mean = pooled.mean(dim=0)
        covariance = torch.cov((pooled - mean).T)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = torch.argsort(eigenvalues, descending=True)[: self.config.d_embed]
        scale = (eigenvalues[order] + shrink * eigenvalues.mean()).clamp(min=1e-12).rsqrt()
        self.embed_mean.copy_(mean.to(self.embed_mean.dtype))
        self.embed_proj.copy_((eigenvectors[:, order] * scale).to(self.embed_proj.dtype))

    # -- decoder -----------------------------------------------------------------

    def decode(self, summary: Summary, target: TargetGrid) -> torch.Tensor:
        """Normalised flux on the target grid: (B, M, P)."""
        memory, attend = self.memory_proj(summary.memory), summary.memory_valid
        pixel_code = encode_wavelength(target.wave, self.frequencies)  # (B, M, P, 2F)
        patch_code = encode_patch_wavelengths(target.wave, self.frequencies)
        q = self.query_wave(patch_code) + self.query_info(target.info) + self.query_bias
        q_valid = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
        for block in self.decoder:
            q = block(q, q_valid, memory, attend)
        q = self.dec_norm(q)
        hidden = q[:, :, None, :] + self.pixel_wave(pixel_code)
        return self.head(hidden).squeeze(-1)

    def forward(self, batch: Batch, attend: torch.Tensor | None = None):
        """The rendering on the input's own grid and the summary vector."""
        summary = self.summarise(*self.encode(batch, attend))
        target = TargetGrid(batch.wave, batch.info, [])
        return self.decode(summary, target), summary.vector


def chi2_loss(prediction: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-spectrum mean χ² over usable pixels (inverse-variance weighted, with the floor).

    ``batch.weight`` is 1 / (σ² + floor²) in normalised units and zero on bad
    pixels, so masked pixels never count. Returns (B,).
    """
    weight = batch.weight * batch.good
    chi2 = (weight * (prediction - batch.target) ** 2).flatten(1).sum(dim=1)
    n_good = batch.good.flatten(1).sum(dim=1).clamp(min=1)
    return chi2 / n_good


def random_hide(valid: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep-mask hiding ``ratio`` of each spectrum's valid patches (at least one kept)."""
    score = torch.rand(valid.shape, generator=generator, device=valid.device)
    score = torch.where(valid, score, torch.full_like(score, 2.0))
    n_valid = valid.sum(dim=1, keepdim=True)
    n_keep = torch.clamp((n_valid.float() * (1.0 - ratio)).ceil().long(), min=1)
    rank = score.argsort(dim=1).argsort(dim=1)
    return (rank < n_keep) & valid
