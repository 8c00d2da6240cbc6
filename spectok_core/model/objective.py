"""The training objective: χ² reconstruction of every valid pixel with some patches hidden;
views of one object (a cropped range of one spectrum; same-object pairs from two
instruments), each rendered from the other's latents, with a contrastive term on them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch import Batch, TargetGrid
from .network import SpecTok, chi2_loss, random_hide


def objective(
    model: SpecTok, batch: Batch, mask_ratio: float | None = None, generator: torch.Generator | None = None,
    views: ViewWeights | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss over the batch, the per-spectrum χ² per pixel (B,) and the detached view terms.

    A share ``mask_ratio`` of each spectrum's valid patches is hidden from the
    encoder; the decoder reconstructs every pixel, hidden or not, so the loss
    combines plain reconstruction with masked-patch prediction.

    With ``views`` (and a model with latents), a second view of each spectrum
    sees only a contiguous sub-range of its patches (what a narrower instrument
    would cover); the whole spectrum is rendered from that view's latents
    (shape χ²), and InfoNCE pulls the two views' summaries together.
    """
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    attend = random_hide(batch.valid, ratio, generator) if ratio > 0 else batch.valid
    summary = model.summarise(*model.encode(batch, attend))
    grid = TargetGrid(batch.wave, batch.info, [])
    chi2 = chi2_loss(model.decode(summary, grid), batch)
    loss = chi2.mean()
    parts: dict[str, torch.Tensor] = {}
    if views is not None and model.config.n_latents and batch.valid.shape[0] > 1:
        crop = random_crop(batch.valid, views.crop_min, views.crop_max, generator)
        cropped = model.summarise(*model.encode(batch, crop))
        if views.crop_render > 0:
            rendered = scaled_chi2(model.decode(cropped, grid), batch).mean()
            loss = loss + views.crop_render * rendered
            parts["crop: render χ²"] = rendered.detach()
        if views.contrastive > 0:
            nce = info_nce(summary.vector, cropped.vector, views.temperature)
            loss = loss + views.contrastive * nce / math.log(len(chi2)) * chi2.mean().detach()
            parts["crop: InfoNCE"] = nce.detach()
    return loss, chi2.detach(), parts


def random_crop(valid: torch.Tensor, lo: float, hi: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep-mask of one contiguous run of each spectrum's valid patches, a share in [lo, hi] of them."""
    order = valid.cumsum(dim=1) - 1  # rank of each valid patch among the valid ones
    n_valid = valid.sum(dim=1, keepdim=True).float()
    share = lo + (hi - lo) * torch.rand(n_valid.shape, generator=generator, device=valid.device)
    length = (share * n_valid).ceil().clamp(min=1)
    start = ((n_valid - length) * torch.rand(n_valid.shape, generator=generator, device=valid.device)).floor()
    return valid & (order >= start) & (order < start + length)


@dataclass(frozen=True)
class ViewWeights:
    """Weights of the terms on a cropped view of each spectrum (see :func:`objective`)."""

    crop_render: float = 0.5  # render the whole spectrum from the cropped view (shape χ²)
    contrastive: float = 0.5  # InfoNCE between the full and the cropped view's summaries
    temperature: float = 0.1
    crop_min: float = 0.25  # share of the valid patches a cropped view keeps
    crop_max: float = 0.6


def scaled_chi2(prediction: torch.Tensor, batch: Batch, max_ratio: float = 5.0) -> torch.Tensor:
    """Per-spectrum χ² per pixel after the best-fitting free amplitude (B,).

    Two instruments normalise one object over different ranges (and calibrate
    it differently), so a rendering onto the other's grid is judged on its
    shape: the amplitude s = Σwpt / Σwp² that minimises χ² is applied first.
    s carries no gradient (at the optimum ∂χ²/∂s = 0, so the gradient is the
    same) and is kept within [1/max_ratio, max_ratio]: a near-zero rendering,
    as from an untrained decoder, would otherwise get an unbounded s and
    gradients that swamp every other term.
    """
    weight = batch.weight * batch.good
    wp = weight * prediction
    amplitude = (wp * batch.target).flatten(1).sum(1) / (wp * prediction).flatten(1).sum(1).clamp(min=1e-12)
    amplitude = amplitude.detach().clamp(1.0 / max_ratio, max_ratio)
    residual = amplitude[:, None, None] * prediction - batch.target
    n_good = batch.good.flatten(1).sum(dim=1).clamp(min=1)
    return (weight * residual**2).flatten(1).sum(dim=1) / n_good


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``z_a`` and ``z_b`` are one object, the other rows negatives.

    Both sides are centred on their joint mean (the embedding is centred the
    same way at calibration) and L2-normalised.
    """
    centre = torch.cat([z_a, z_b]).mean(dim=0)
    z_a, z_b = F.normalize(z_a - centre, dim=-1), F.normalize(z_b - centre, dim=-1)
    logits = z_a @ z_b.T / temperature
    labels = torch.arange(len(z_a), device=z_a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@dataclass(frozen=True)
class PairWeights:
    """Weights of the cross-survey terms.

    The cross-rendering χ² has the units of the reconstruction χ² and is simply
    weighted. InfoNCE is put in those units: divided by its chance value
    log(batch size) and multiplied by the step's reconstruction loss (without
    gradient), so that at chance it pulls ``contrastive`` x as hard as the
    reconstruction does whether χ² is 5 or 500, and fades as pairs align.
    """

    cross: float = 0.5  # render each side onto the other's grid (shape χ²)
    contrastive: float = 0.5  # InfoNCE on the summary vectors
    temperature: float = 0.1


def pair_objective(
    model: SpecTok, batch_a: Batch, batch_b: Batch, weights: PairWeights = PairWeights(),
    mask_ratio: float | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss on index-aligned same-object batches from two instruments.

    Each side is reconstructed on its own grid (as in :func:`objective`) and
    rendered onto the other side's grid; InfoNCE pulls the two summary
    vectors of one object together. Returns the loss and the detached parts:
    per-spectrum χ² of sides a and b, the cross-rendering χ² and InfoNCE.
    """
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    summaries = []
    for batch in (batch_a, batch_b):
        attend = random_hide(batch.valid, ratio, generator) if ratio > 0 else batch.valid
        summaries.append(model.summarise(*model.encode(batch, attend)))
    grids = [TargetGrid(b.wave, b.info, []) for b in (batch_a, batch_b)]
    own = [chi2_loss(model.decode(summaries[i], grids[i]), b) for i, b in enumerate((batch_a, batch_b))]
    recon = 0.5 * (own[0].mean() + own[1].mean())
    loss = recon
    parts = {"a": own[0].detach(), "b": own[1].detach()}
    if weights.cross > 0:
        cross = 0.5 * (scaled_chi2(model.decode(summaries[0], grids[1]), batch_b).mean()
                       + scaled_chi2(model.decode(summaries[1], grids[0]), batch_a).mean())
        loss = loss + weights.cross * cross
        parts["cross"] = cross.detach()
    if weights.contrastive > 0:
        nce = info_nce(summaries[0].vector, summaries[1].vector, weights.temperature)
        chance = math.log(batch_a.valid.shape[0])
        loss = loss + weights.contrastive * nce / chance * recon.detach()
        parts["contrastive"] = nce.detach()
    return loss, parts
