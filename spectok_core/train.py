"""Self-supervised training: χ² reconstruction with masked patches, on the corpus shards.

Batches come from one shard at a time (shards are per survey), so spectra in
a batch have similar lengths and little is padding. Checkpoints hold the
weights, the optimizer state (safetensors, never pickles) and the position in
training (JSON), so an interrupted run resumes where it stopped with the same
random stream. Runs on CPU by default, CUDA when present.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import surveys
from .data.pairs import PairIndex, read_rows
from .model import PRESETS, ModelConfig, Tokenizer
from .model.batch import collate, prepare
from .model.objective import PairWeights, ViewWeights, objective, pair_objective
from .spectrum import Spectrum, SpectrumError


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20_000
    batch_size: int = 32  # spectra per batch at the reference length (patch_tokens below)
    patch_tokens: int = 4096  # patches per batch: long spectra come in smaller batches
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 300
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 20
    max_minutes: float | None = None  # stop (and save) when this much wall time has passed
    refresh_every: int = 250  # re-scan the corpus for new shards (a build still running)
    calibration_spectra: int = 4096  # training spectra that fit the embedding's whitening
    calibration_shrink: float = 0.01  # eigenvalue shrinkage of that whitening (large: no whitening)
    # Cross-survey terms on same-object pairs (0: off): every pair_every-th step
    # is a batch of pairs from two instruments instead of one shard's spectra.
    pair_every: int = 0
    pair_batch: int = 32  # pairs per batch at most (fewer for long spectra, see patch_tokens)
    pair_cross: float = 0.5  # weight of rendering each side on the other's grid
    pair_contrastive: float = 0.5  # weight of InfoNCE on the mean tokens
    pair_temperature: float = 0.1
    pair_min: int = 50  # instrument pairs with fewer same-object pairs are not used
    # Instrument pairs that include this survey ("": none) are drawn pair_focus_weight
    # times as often as √count alone would draw them (e.g. apogee, whose pairs are few).
    pair_focus: str = ""
    pair_focus_weight: float = 1.0
    # Cropped views on every shard step (models with latents only; 0: off).
    view_render: float = 0.0  # render the whole spectrum from a cropped view (shape χ²)
    view_contrastive: float = 0.0  # InfoNCE between the full and the cropped view

    def __post_init__(self) -> None:
        """Refuse settings that cannot work when the config is made, before anything is read."""
        if self.pair_focus:
            try:
                surveys.get(self.pair_focus)
            except KeyError as err:
                raise SpectrumError(f"pair_focus: {err.args[0]}") from None
            if self.pair_every <= 0:
                raise SpectrumError("pair_focus needs pair steps: set pair_every (e.g. 2)")
        if not (self.pair_focus_weight > 0 and np.isfinite(self.pair_focus_weight)):
            raise SpectrumError(f"pair_focus_weight must be a positive number, not {self.pair_focus_weight}")


class ShardRows:
    """Rows of one corpus shard in one split, read a batch at a time.

    The file is opened per read, so thousands of shards never hold thousands
    of open files.
    """

    def __init__(self, path: Path, split: str):
        import h5py

        self.path = path
        with h5py.File(path, "r") as h5:
            n_rows, self.n_pixels = h5["spectrum_flux"].shape
            splits = h5["split"][:].astype(str) if "split" in h5 else np.full(n_rows, "train")
            self.survey = str(h5.attrs.get("survey", "unknown"))
        self.rows = np.flatnonzero(splits == split)

    def read(self, rows: np.ndarray) -> list[Spectrum]:
        return [s for s in read_rows(self.path, rows) if s is not None]


def open_corpus(corpus: Path, split: str) -> list[ShardRows]:
    paths = sorted(Path(corpus).rglob("*.h5"))
    if not paths:
        raise SpectrumError(f"{corpus}: no .h5 shards found; build a corpus with `spectok corpus build`")
    shards = [ShardRows(p, split) for p in paths]
    return [s for s in shards if s.rows.size]


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _save_checkpoint(folder: Path, tok: Tokenizer, optimizer, step: int, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(folder / "model", model_id=state.get("model_id", "spectok"), step=step)
    flat = {}
    for index, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            flat[f"{index}.{name}"] = value.detach().cpu().reshape(-1) if value.ndim == 0 else value.detach().cpu()
    tmp = folder / "optimizer.safetensors.tmp"
    save_file(flat, str(tmp))
    os.replace(tmp, folder / "optimizer.safetensors")
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps({**state, "step": step}, indent=1))
    os.replace(tmp, folder / "state.json")


def _load_checkpoint(folder: Path, model, optimizer) -> dict:
    tok = Tokenizer.from_pretrained(folder / "model")
    model.load_state_dict(tok.model.state_dict())
    flat = load_file(str(folder / "optimizer.safetensors"))
    state = optimizer.state_dict()
    by_index: dict[int, dict] = defaultdict(dict)
    for key, value in flat.items():
        index, name = key.split(".", 1)
        by_index[int(index)][name] = value.reshape(()) if name == "step" else value
    state["state"] = dict(by_index)
    optimizer.load_state_dict(state)
    return json.loads((folder / "state.json").read_text())


def train(
    corpus: Path,
    out: Path,
    model_config: ModelConfig | str = "small",
    cfg: TrainConfig = TrainConfig(),
    device: str | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    init: Path | None = None,
    warm_start: Path | None = None,
) -> Tokenizer:
    """Train (or resume) a model on ``corpus``; checkpoints and the loss log go to ``out``.

    ``init`` starts a new run from the weights of a saved model (its config
    replaces ``model_config``) with a fresh optimizer: continued training or
    fine-tuning. ``warm_start`` builds a model of ``model_config`` and copies into
    it every weight of a saved model whose name and shape match (a new
    architecture that keeps the old encoder). A run that already has a
    checkpoint resumes from it instead.
    """
    out = Path(out)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(model_config, str):
        model_config = PRESETS[model_config]
    torch.manual_seed(cfg.seed)
    if init is not None:
        tok = Tokenizer.from_pretrained(init)
        model_config = tok.config
    else:
        tok = Tokenizer.from_config(model_config, seed=cfg.seed)
        if warm_start is not None:
            copied = copy_matching_weights(tok.model, Tokenizer.from_pretrained(warm_start).model)
            print(f"warm start: {copied} of {len(tok.model.state_dict())} tensors copied from {warm_start}")
    model = tok.model.to(device).train()
    tok.device = torch.device(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    checkpoint = out / "checkpoint"
    step = 0
    if (checkpoint / "state.json").is_file():
        state = _load_checkpoint(checkpoint, model, optimizer)
        step = state["step"]
        print(f"resuming from step {step} ({checkpoint})")
    shards = open_corpus(corpus, "train")
    weights, longest = _shard_stats(shards)
    pairs = pair_weights = None
    if cfg.pair_every > 0:
        pairs = PairIndex.build(corpus, "train", min_pairs=cfg.pair_min)
        if not pairs.pairs:
            raise SpectrumError(
                f"{corpus}: no instrument pair has {cfg.pair_min} same-object pairs in the training split "
                "(spectra of one object_id from two surveys); train without pairs (pair_every=0, "
                "the default) or lower pair_min")
        pair_weights = PairWeights(cfg.pair_cross, cfg.pair_contrastive, cfg.pair_temperature)
        print(f"cross-survey pairs: {len(pairs)} in {len(pairs.pairs)} instrument pairs, every "
              f"{cfg.pair_every} steps")
        if cfg.pair_focus:
            if not any(cfg.pair_focus in key for key in pairs.pairs):
                raise SpectrumError(
                    f"{corpus}: no instrument pair with {cfg.pair_min} same-object pairs includes "
                    f"{cfg.pair_focus!r} (pairs: {', '.join('-'.join(k) for k in pairs.pairs)}); "
                    "choose one of those surveys for pair_focus or leave it empty")
            share = sum(w for k, w in pairs.draw_weights(_focus(cfg)).items() if cfg.pair_focus in k)
            print(f"pairs with {cfg.pair_focus}: {share:.0%} of pair batches "
                  f"(x{cfg.pair_focus_weight:g})")
    views = None
    if cfg.view_render > 0 or cfg.view_contrastive > 0:
        views = ViewWeights(cfg.view_render, cfg.view_contrastive)
    log_path = out / "loss.csv"
    out.mkdir(parents=True, exist_ok=True)
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "survey", "chi2", "lr", "seconds"])
    running: dict[str, float] = {}
    start = time.time()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    try:
        while step < cfg.steps:
            if cfg.max_minutes is not None and time.time() - start > 60 * cfg.max_minutes:
                print(f"time budget of {cfg.max_minutes} min reached at step {step}")
                break
            if step % cfg.refresh_every == 0 and step > 0:
                fresh = open_corpus(corpus, "train")
                if len(fresh) != len(shards):
                    shards = fresh
                    weights, longest = _shard_stats(shards)
            # Randomness is seeded per step, so a resumed run continues the same stream.
            rng = np.random.default_rng([cfg.seed, step])
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            optimizer.zero_grad(set_to_none=True)
            if pairs is not None and step % cfg.pair_every == cfg.pair_every - 1:
                values = _pair_step(model, pairs, pair_weights, longest, rng, generator, cfg, model_config,
                                    device)
            else:
                values = _shard_step(model, shards, weights, rng, generator, cfg, model_config, device, views)
            if values is None:
                step += 1
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            for name, value in values.items():
                running[name] = value if name not in running else 0.95 * running[name] + 0.05 * value
            if step % cfg.log_every == 0:
                # One row per survey seen so far: its running (EMA) χ² per pixel.
                for name, ema in sorted(running.items()):
                    writer.writerow([step, name, f"{ema:.5g}", f"{lr_at(step, cfg):.3g}", f"{time.time() - start:.1f}"])
                log.flush()
                bar.set_postfix({k[:8]: f"{v:.2f}" for k, v in sorted(running.items())})
            bar.update(1)
            if step % cfg.checkpoint_every == 0:
                _save_checkpoint(checkpoint, tok, optimizer, step, {"train_config": asdict(cfg)})
            if on_step:
                on_step(step, running)
    finally:
        bar.close()
        log.close()
    _save_checkpoint(checkpoint, tok, optimizer, step, {"train_config": asdict(cfg)})
    model.eval()
    tok.calibrate(calibration_sample(shards, cfg.calibration_spectra, cfg.seed), shrink=cfg.calibration_shrink)
    tok.save(out / "final", model_id=f"spectok-{out.name}", step=step,
             running_chi2=running, train_config=asdict(cfg))
    return tok


def _focus(cfg: TrainConfig) -> dict[str, float] | None:
    return {cfg.pair_focus: cfg.pair_focus_weight} if cfg.pair_focus else None


def copy_matching_weights(model: torch.nn.Module, source: torch.nn.Module) -> int:
    """Copy every tensor of ``source`` whose name and shape ``model`` shares; returns how many."""
    own = model.state_dict()
    matching = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return len(matching)


def _shard_step(model, shards, weights, rng, generator, cfg: TrainConfig, config: ModelConfig, device,
                views: ViewWeights | None = None):
    """Backward pass on a batch from one shard; returns the logged values or None."""
    shard = shards[rng.choice(len(shards), p=weights)]
    n_patches = -(-shard.n_pixels // config.patch_size)
    size = int(np.clip(cfg.patch_tokens // n_patches, 4, cfg.batch_size))
    rows = rng.choice(shard.rows, size=min(size, shard.rows.size), replace=False)
    spectra = shard.read(rows)
    if not spectra:
        return None
    batch = collate([prepare(s, config) for s in spectra]).to(device)
    loss, chi2, parts = objective(model, batch, generator=generator, views=views)
    loss.backward()
    return {shard.survey: float(chi2.mean()), **{k: float(v) for k, v in parts.items()}}


def _shard_stats(shards: list[ShardRows]) -> tuple[np.ndarray, dict[str, int]]:
    """Sampling weight of each shard (its share of rows) and the longest spectrum per survey."""
    weights = np.array([s.rows.size for s in shards], float)
    longest: dict[str, int] = defaultdict(int)
    for shard in shards:
        longest[shard.survey] = max(longest[shard.survey], shard.n_pixels)
    return weights / weights.sum(), longest


def _pair_step(model, pairs: PairIndex, weights: PairWeights, longest: dict[str, int], rng, generator,
               cfg: TrainConfig, config: ModelConfig, device):
    """Backward pass on same-object pairs from two instruments; returns the logged values."""

    def size_for(a: str, b: str) -> int:
        n_patches = -(-max(longest[a], longest[b], 1) // config.patch_size)
        return int(np.clip(cfg.patch_tokens // n_patches, 4, cfg.pair_batch))

    a, b, side_a, side_b = pairs.sample(rng, size_for, _focus(cfg))
    if len(side_a) < 2:  # InfoNCE needs a negative
        return None
    batch_a = collate([prepare(s, config) for s in side_a]).to(device)
    batch_b = collate([prepare(s, config) for s in side_b]).to(device)
    loss, parts = pair_objective(model, batch_a, batch_b, weights, generator=generator)
    loss.backward()
    values = {a: float(parts["a"].mean()), b: float(parts["b"].mean())}
    if "cross" in parts:
        values["pairs: cross χ²"] = float(parts["cross"])
    if "contrastive" in parts:
        values["pairs: InfoNCE"] = float(parts["contrastive"])
    return values


def calibration_sample(shards: list[ShardRows], n: int, seed: int = 0) -> list[Spectrum]:
    """About ``n`` training spectra drawn across shards in proportion to their size."""
    rng = np.random.default_rng([seed, 7])
    total = sum(s.rows.size for s in shards)
    spectra: list[Spectrum] = []
    for shard in shards:
        take = max(1, round(n * shard.rows.size / total))
        rows = rng.choice(shard.rows, size=min(take, shard.rows.size), replace=False)
        spectra.extend(shard.read(rows))
    return spectra
