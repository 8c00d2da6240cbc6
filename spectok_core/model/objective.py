"""The training objective: χ² reconstruction of every valid pixel with some patches hidden,
and, on same-object pairs from two instruments, cross-rendering and a contrastive term."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch import Batch, TargetGrid
from .network import SpecTok, chi2_loss, random_hide


def objective(
    model: SpecTok, batch: Batch, mask_ratio: float | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss over the batch and the per-spectrum χ² per pixel (B,).

    A share ``mask_ratio`` of each spectrum's valid patches is hidden from the
    encoder; the decoder reconstructs every pixel, hidden or not, so the loss
    combines plain reconstruction with masked-patch prediction.
    """
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    attend = random_hide(batch.valid, ratio, generator) if ratio > 0 else batch.valid
    prediction, _ = model(batch, attend)
    chi2 = chi2_loss(prediction, batch)
    return chi2.mean(), chi2.detach()


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
    contrastive: float = 0.5  # InfoNCE on the mean tokens
    temperature: float = 0.1


def pair_objective(
    model: SpecTok, batch_a: Batch, batch_b: Batch, weights: PairWeights = PairWeights(),
    mask_ratio: float | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss on index-aligned same-object batches from two instruments.

    Each side is reconstructed on its own grid (as in :func:`objective`) and
    rendered onto the other side's grid; InfoNCE pulls the two mean-token
    embeddings of one object together. Returns the loss and the detached parts:
    per-spectrum χ² of sides a and b, the cross-rendering χ² and InfoNCE.
    """
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    tokens, attends = [], []
    for batch in (batch_a, batch_b):
        attend = random_hide(batch.valid, ratio, generator) if ratio > 0 else batch.valid
        t, a = model.encode(batch, attend)
        tokens.append(t)
        attends.append(a)
    grids = [TargetGrid(b.wave, b.info, []) for b in (batch_a, batch_b)]
    own = [chi2_loss(model.decode(tokens[i], attends[i], grids[i]), b) for i, b in enumerate((batch_a, batch_b))]
    recon = 0.5 * (own[0].mean() + own[1].mean())
    loss = recon
    parts = {"a": own[0].detach(), "b": own[1].detach()}
    if weights.cross > 0:
        cross = 0.5 * (scaled_chi2(model.decode(tokens[0], attends[0], grids[1]), batch_b).mean()
                       + scaled_chi2(model.decode(tokens[1], attends[1], grids[0]), batch_a).mean())
        loss = loss + weights.cross * cross
        parts["cross"] = cross.detach()
    if weights.contrastive > 0:
        nce = info_nce(model.mean_tokens(tokens[0], attends[0]), model.mean_tokens(tokens[1], attends[1]),
                       weights.temperature)
        chance = math.log(batch_a.valid.shape[0])
        loss = loss + weights.contrastive * nce / chance * recon.detach()
        parts["contrastive"] = nce.detach()
    return loss, parts
