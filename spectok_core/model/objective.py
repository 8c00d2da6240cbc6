"""The training objective: χ² reconstruction of every valid pixel with some patches hidden."""

from __future__ import annotations

import torch

from .batch import Batch
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
