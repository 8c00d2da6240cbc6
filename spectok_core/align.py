"""Align the search embedding across instruments: stage 2 of training (``spectok align``).

Stage 1 (``spectok train``) teaches the encoder and its latents to describe the
object well enough to render it on any grid. Stage 2 freezes all of that and
trains only the summary head that maps the latents to the search embedding,
with InfoNCE on same-object pairs from two instruments (the corpus's
``object_id``s seen by two surveys, training split only). With the encoder frozen,
the latents of every paired spectrum are computed once, so each step is a
small matrix product and a batch can hold hundreds of pairs: hundreds of
negatives, where the joint training affords a few dozen. The decoder reads the
latents, not the head, so reconstruction is unchanged to the last bit.

The idea is CLIP's and AstroCLIP's (a contrastive head on pretrained
encoders); the head is an MLP (``--hidden``) or linear (``--hidden 0``).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .data.pairs import PairIndex, read_locations
from .model import Tokenizer
from .model.batch import collate, prepare
from .model.objective import info_nce
from .spectrum import SpectrumError
from .train import calibration_sample, copy_matching_weights, open_corpus


@dataclass(frozen=True)
class AlignConfig:
    hidden: int = 1024  # width of the head's hidden layer (0: a linear head)
    steps: int = 6000
    batch: int = 256  # same-object pairs per step (all from one instrument pair)
    temperature: float = 0.07
    lr: float = 1e-3  # peak; cosine decay to 0
    weight_decay: float = 0.0  # AdamW's decoupled weight decay on the head
    seed: int = 0
    min_pairs: int = 50  # instrument pairs with fewer training pairs are left out
    calibration_spectra: int = 4096
    calibration_shrink: float = 0.01
    # How often each instrument pair is drawn: "sqrt" (∝ √pairs, the big optical pairs most) or
    # "uniform" (every instrument pair alike, so the few no-overlap pairs, APOGEE's, get as
    # many steps as the many optical ones).
    pair_weighting: str = "sqrt"

    def __post_init__(self) -> None:
        """Refuse settings that cannot train when the config is made, before any latents are computed."""
        if self.steps < 1 or self.batch < 1:
            raise SpectrumError(f"steps and batch must be at least 1, not {self.steps} and {self.batch}")
        if self.hidden < 0 or not self.temperature > 0 or not self.lr > 0:
            raise SpectrumError("hidden must be 0 or more, temperature and lr above 0")
        if self.weight_decay < 0:
            raise SpectrumError(f"weight decay must be 0 or more, not {self.weight_decay}")
        if self.pair_weighting not in ("sqrt", "uniform"):
            raise SpectrumError(f"pair weighting must be 'sqrt' or 'uniform', not {self.pair_weighting!r}")


@dataclass
class PairLatents:
    """Flattened latents of every paired spectrum of one split, and the pairs as row indices."""

    latents: np.ndarray  # (n, n_latents * d_model) float32
    pairs: dict[tuple[str, str], np.ndarray]  # (survey a, survey b) -> (m, 2) rows of ``latents``
    weights_hash: str

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".part.npz")
        np.savez(tmp, latents=self.latents, weights_hash=np.array(self.weights_hash),
                 **{f"pairs/{a}/{b}": rows for (a, b), rows in self.pairs.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PairLatents:
        with np.load(path, allow_pickle=False) as data:
            pairs = {tuple(k.split("/")[1:3]): data[k] for k in data.files if k.startswith("pairs/")}
            return cls(data["latents"], pairs, str(data["weights_hash"]))


@torch.inference_mode()
def pair_latents(tok: Tokenizer, corpus: Path, split: str = "train", min_pairs: int = 50,
                 batch_size: int = 32, progress: bool = True) -> PairLatents:
    """Latents of every spectrum in a same-object pair of ``split`` (read shard by shard)."""
    index = PairIndex.build(Path(corpus), split, min_pairs=min_pairs)
    if not index.pairs:
        raise SpectrumError(
            f"{corpus}: no instrument pair has {min_pairs} same-object pairs in the {split} split "
            "(spectra of one object_id from two surveys); alignment needs them")
    locations = np.unique(np.concatenate([rows.ravel() for rows in index.pairs.values()]))
    width = tok.config.n_latents * tok.config.d_model
    latents = np.zeros((len(locations), width), np.float32)
    readable = np.zeros(len(locations), bool)
    shards = index.shards[locations]
    unique_shards = np.unique(shards)
    start = time.time()
    for n, shard in enumerate(unique_shards):
        members = np.flatnonzero(shards == shard)
        spectra = read_locations(index.corpus, index.shards[locations[members]], index.rows[locations[members]])
        good = [(i, s) for i, s in zip(members, spectra) if s is not None]
        order = sorted(good, key=lambda item: len(item[1]))
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            batch = collate([prepare(s, tok.config) for _, s in chunk]).to(tok.device)
            summary = tok.model.summarise(*tok.model.encode(batch))
            latents[[i for i, _ in chunk]] = summary.memory.flatten(1).float().cpu().numpy()
            readable[[i for i, _ in chunk]] = True
        if progress and (n % 100 == 0 or n == len(unique_shards) - 1):
            print(f"latents: {readable.sum():,} of {len(locations):,} paired spectra "
                  f"({time.time() - start:.0f} s)", flush=True)
    pairs = {}
    for key, rows in index.pairs.items():
        rows = np.searchsorted(locations, rows)
        pairs[key] = rows[readable[rows[:, 0]] & readable[rows[:, 1]]]
    return PairLatents(latents, pairs, tok.weights_hash)


def pair_draw_weights(data: PairLatents, cfg: AlignConfig) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The instrument pairs a step may draw (two readable pairs or more) and their probabilities."""
    keys = sorted(k for k, rows in data.pairs.items() if len(rows) >= 2)
    if not keys:
        raise SpectrumError("no instrument pair has two readable same-object pairs to align")
    counts = np.array([len(data.pairs[k]) for k in keys], float)
    weights = np.sqrt(counts) if cfg.pair_weighting == "sqrt" else np.ones(len(keys))
    return keys, weights / weights.sum()


def train_head(head: torch.nn.Module, data: PairLatents, cfg: AlignConfig,
               log: csv.writer | None = None) -> list[float]:
    """InfoNCE on same-object pairs; each step draws one instrument pair (``cfg.pair_weighting``)."""
    latents = torch.from_numpy(data.latents)
    keys, weights = pair_draw_weights(data, cfg)
    rng = np.random.default_rng([cfg.seed, 11])
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    head.train()
    losses, running = [], None
    for step in range(cfg.steps):
        a, b = keys[rng.choice(len(keys), p=weights)]
        rows = data.pairs[(a, b)]
        chosen = rows[rng.choice(len(rows), size=min(cfg.batch, len(rows)), replace=False)]
        loss = info_nce(head(latents[chosen[:, 0]]), head(latents[chosen[:, 1]]), cfg.temperature)
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        running = losses[-1] if running is None else 0.98 * running + 0.02 * losses[-1]
        if log is not None and (step + 1) % 100 == 0:
            log.writerow([step + 1, f"{running:.4f}", f"{lr:.3g}"])
    head.eval()
    return losses


def align(corpus: Path, model: Path, out: Path, cfg: AlignConfig = AlignConfig(),
          progress: bool = True) -> Tokenizer:
    """A copy of ``model`` whose summary head is trained on same-object pairs; saved to OUT/final.

    The paired spectra's latents are cached in OUT (keyed by the model's weights),
    so a rerun with other head settings starts training at once.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = Tokenizer.from_pretrained(model)
    if not source.config.n_latents:
        raise SpectrumError(f"{model}: alignment trains the head on the latents; this model has none "
                            "(n_latents = 0)")
    source.model.eval()
    cache = out / "latents-train.npz"
    data = PairLatents.load(cache) if cache.is_file() else None
    if data is None or data.weights_hash != source.weights_hash:
        data = pair_latents(source, corpus, "train", cfg.min_pairs, progress=progress)
        data.save(cache)
    if progress:
        print(f"aligning on {sum(len(r) for r in data.pairs.values()):,} pairs in {len(data.pairs)} "
              f"instrument pairs", flush=True)
    torch.manual_seed(cfg.seed)
    tok = Tokenizer.from_config(replace(source.config, summary_hidden=cfg.hidden), seed=cfg.seed)
    copy_matching_weights(tok.model, source.model)  # all but a head of another shape
    for name, parameter in tok.model.named_parameters():
        parameter.requires_grad_(name.startswith("summary_head."))
    with open(out / "align.csv", "w", newline="") as handle:
        log = csv.writer(handle)
        log.writerow(["step", "infonce", "lr"])
        start = time.time()
        losses = train_head(tok.model.summary_head, data, cfg, log)
    if progress:
        print(f"head trained: {cfg.steps} steps in {time.time() - start:.0f} s, InfoNCE "
              f"{np.mean(losses[:100]):.3f} -> {np.mean(losses[-100:]):.3f}", flush=True)
    for parameter in tok.model.parameters():
        parameter.requires_grad_(True)
    tok.model.eval()
    tok.calibrate(calibration_sample(open_corpus(Path(corpus), "train"), cfg.calibration_spectra, cfg.seed),
                  shrink=cfg.calibration_shrink)
    tok.save(out / "final", model_id=f"spectok-{out.name}", aligned_from=source.model_id,
             aligned_from_weights=source.weights_hash, align_config=asdict(cfg))
    return tok
