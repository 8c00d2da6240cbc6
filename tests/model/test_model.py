"""The network: masking, wavelength encoding, loss, save/load, and that it can learn."""

import numpy as np
import pytest
import torch

from spectok_core import Spectrum, SpectrumError, surveys
from spectok_core.model import PRESETS, ModelConfig, Tokenizer
from spectok_core.model.batch import TargetGrid, collate, prepare
from spectok_core.model.network import (
    chi2_loss,
    encode_patch_wavelengths,
    encode_wavelength,
    random_hide,
    wavelength_frequencies,
)
from spectok_core.model.objective import (
    PairWeights,
    ViewWeights,
    info_nce,
    objective,
    pair_objective,
    random_crop,
    scaled_chi2,
)
from spectok_core.train import TrainConfig

TINY = PRESETS["tiny"]


def star(key="sdss", seed=0, n=None, teff=5800.0):
    """A smooth blackbody-like continuum with a few absorption lines, on a survey's grid."""
    rng = np.random.default_rng(seed)
    wave = surveys.get(key).native_grid()
    if n:
        wave = wave[:n]
    x = 1.4388e8 / (wave * teff)
    flux = 1.0 / (wave / 5000.0) ** 5 / np.expm1(x) * 1e3
    for line in (4862.7, 5176.0, 5891.6, 6564.6, 8544.4):
        flux *= 1 - 0.4 * np.exp(-0.5 * ((wave - line) / 3.0) ** 2)
    ivar = np.full(wave.size, 1.0 / (0.02 * np.median(flux)) ** 2)
    flux = flux + rng.standard_normal(wave.size) / np.sqrt(ivar)
    return Spectrum(wave, flux, ivar, survey=key, meta={"object_id": f"s{seed}"})


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_config(TINY, seed=0)


def test_embeddings_are_normalised_and_mix_surveys(tok):
    spectra = [star("sdss"), star("gaia_xp"), star("desi", n=3000), star("apogee", n=2000)]
    emb = tok.embed(spectra)
    assert emb.shape == (4, TINY.d_embed) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # The order of a batch does not change any embedding.
    assert np.allclose(tok.embed(spectra[::-1])[::-1], emb, atol=1e-5)


def test_masked_patch_cannot_influence_output(tok):
    s = star("sdss", n=640)
    p = TINY.patch_size
    mask = s.mask.copy()
    mask[5 * p : 6 * p] = True  # patch 5 entirely bad: excluded
    mask[8 * p : 8 * p + p // 2 + 2] = True  # patch 8 mostly bad: excluded too
    a = Spectrum(s.wave, s.flux, s.ivar, mask, "sdss")
    flux = s.flux.copy()
    flux[5 * p : 6 * p] = 1e6
    flux[8 * p : 9 * p] *= -30.0
    ivar = s.ivar.copy()
    ivar[8 * p : 9 * p] *= 1e-3
    b = Spectrum(s.wave, flux, ivar, mask, "sdss")
    assert np.array_equal(tok.embed([a]), tok.embed([b]))
    ta, tb = tok.tokenize(a), tok.tokenize(b)
    assert not ta[0].valid[5] and not ta[0].valid[8]
    assert np.array_equal(ta[0].tokens[ta[0].valid], tb[0].tokens[tb[0].valid])
    # ...whereas changing a valid patch does change the embedding.
    flux[2 * p : 3 * p] *= 3.0
    c = Spectrum(s.wave, flux, ivar, mask, "sdss")
    assert not np.allclose(tok.embed([a]), tok.embed([c]))


def test_wavelength_encoding_properties():
    config = ModelConfig()
    freq = wavelength_frequencies(config)
    periods = 2 * np.pi / freq.numpy()
    assert periods[0] == pytest.approx(config.period_min) and periods[-1] == pytest.approx(config.period_max)
    assert np.allclose(np.diff(np.log(periods)), np.log(periods[1] / periods[0]))  # log-spaced
    wave = torch.linspace(3000.0, 25000.0, 5000, dtype=torch.float64)
    code = encode_wavelength(wave, freq)
    n = config.n_freq
    assert code.shape == (5000, 2 * n) and float(code.abs().max()) <= 1.0
    assert torch.allclose(code[:, :n] ** 2 + code[:, n:] ** 2, torch.ones(5000, n), atol=1e-5)
    # Distinct wavelengths get distinct codes; nearby ones similar codes.
    d_near = (encode_wavelength(torch.tensor([5000.0]), freq) - encode_wavelength(torch.tensor([5000.01]), freq)).norm()
    d_far = (encode_wavelength(torch.tensor([5000.0]), freq) - encode_wavelength(torch.tensor([6000.0]), freq)).norm()
    assert d_near < 0.1 < d_far
    # The closed-form patch mean equals the mean of the per-pixel codes on even grids.
    grid = torch.from_numpy(surveys.get("desi").native_grid()[: 32 * 20].reshape(20, 32))
    assert torch.allclose(encode_patch_wavelengths(grid, freq), encode_wavelength(grid, freq).mean(dim=1), atol=1e-5)


def test_loss_equals_hand_computed_chi2():
    config = ModelConfig(patch_size=4, error_floor=0.0)
    wave = np.linspace(5000, 5100, 32)
    flux = np.full(32, 2.0)
    ivar = np.full(32, 4.0)  # sigma 0.5 -> normalised sigma 0.25
    mask = np.zeros(32, bool)
    mask[3] = True
    item = prepare(Spectrum(wave, flux, ivar, mask), config)
    batch = collate([item])
    prediction = torch.full((1, 8, 4), 1.5)  # normalised flux is 1: residual 0.5
    expected = (0.5 / 0.25) ** 2  # per usable pixel
    assert float(chi2_loss(prediction, batch)[0]) == pytest.approx(expected)
    # The error floor caps the weight of ultra-high-S/N pixels.
    floored = collate([prepare(Spectrum(wave, flux, ivar * 1e8, mask), ModelConfig(patch_size=4, error_floor=0.1))])
    assert float(chi2_loss(prediction, floored)[0]) == pytest.approx(0.5**2 / 0.1**2, rel=1e-3)


def test_random_hide_keeps_share_and_only_valid():
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[1, 6:] = False
    keep = random_hide(valid, 0.3, torch.Generator().manual_seed(0))
    assert keep.sum(dim=1).tolist() == [7, 5, 7]
    assert not (keep & ~valid).any()


def test_save_load_round_trip_is_exact(tmp_path, tok):
    folder = tok.save(tmp_path / "m", model_id="test-model")
    again = Tokenizer.from_pretrained(folder)
    spectra = [star("sdss", 1), star("gaia_xp", 2)]
    assert np.array_equal(tok.embed(spectra), again.embed(spectra))
    assert again.model_id == "test-model" and len(again.weights_hash) == 64
    assert not list(tmp_path.glob("*.tmp"))
    (folder / "config.json").write_text('{"d_model": "x", "bogus": 1}')
    with pytest.raises(SpectrumError, match="config"):
        Tokenizer.from_pretrained(folder)
    with pytest.raises(SpectrumError, match="lacks"):
        Tokenizer.from_pretrained(tmp_path / "nothing")


def test_reconstruct_any_grid_and_units(tok):
    s = star("sdss", 3)
    own = tok.reconstruct(s)
    assert np.array_equal(own.wave, s.wave) and own.meta["reconstruction"]
    xp_grid = surveys.get("gaia_xp").native_grid()
    other = tok.reconstruct(s, wave=xp_grid, survey="gaia_xp")
    assert len(other) == 343 and other.survey == "gaia_xp"


def test_unknown_instrument_and_span_warned(tok):
    wave = np.linspace(30000, 40000, 500)
    s = Spectrum(wave, np.ones(500), np.ones(500), survey="unknown")
    emb = tok.embed([s])
    assert np.isfinite(emb).all()
    assert any("trained span" in w for w in s.meta["spectok_warnings"])
    assert any("unknown instrument" in w for w in s.meta["spectok_warnings"])


def test_tiny_model_overfits_a_handful():
    torch.manual_seed(0)
    tok = Tokenizer.from_config(TINY, seed=0)
    model = tok.model.train()
    spectra = [star("sdss", seed=i, n=512, teff=4000 + 500 * i) for i in range(4)]
    batch = collate([prepare(s, TINY) for s in spectra])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    first = None
    for _ in range(150):
        loss, _, _ = objective(model, batch, mask_ratio=0.0, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < 0.05 * first


def test_calibrated_embeddings_spread_and_keep_neighbours():
    """Uncalibrated mean tokens all point one way; whitening makes cosine informative."""
    tok = Tokenizer.from_config(TINY, seed=0)
    spectra = [star("sdss", seed=i, n=640, teff=3500 + 150 * i) for i in range(40)]
    before = tok.embed(spectra)
    tok.calibrate(spectra)
    after = tok.embed(spectra)
    off = ~np.eye(len(spectra), dtype=bool)
    assert (before @ before.T)[off].mean() > 0.9  # what an untrained pooling head gives
    assert abs((after @ after.T)[off].mean()) < 0.2
    # Calibration is a fixed linear map of the summary vectors (an untrained model's
    # summaries differ by ~1e-5, so whitening magnifies float32 rounding between batch
    # sizes: the map is checked on one batch, and batch independence on the summaries).
    summary = tok.summaries(spectra[:3])
    mapped = torch.nn.functional.normalize((summary - tok.model.embed_mean) @ tok.model.embed_proj, dim=-1)
    np.testing.assert_allclose(tok.embed(spectra[:3]), mapped.numpy(), rtol=0, atol=1e-5)
    with pytest.raises(SpectrumError, match="more spectra"):
        tok.calibrate(spectra[:5])


def test_scaled_chi2_judges_shape_not_amplitude():
    config = ModelConfig(patch_size=4, error_floor=0.0)
    wave = np.linspace(5000, 5100, 32)
    flux = 2.0 + np.sin(wave / 7.0)
    batch = collate([prepare(Spectrum(wave, flux, np.full(32, 4.0)), config)])
    target = batch.target
    # A rendering with the right shape at any amplitude fits perfectly ...
    assert float(scaled_chi2(3.7 * target, batch)[0]) == pytest.approx(0.0, abs=1e-9)
    # ... a wrong shape does not; with its best amplitude it is never worse than plain χ².
    wrong = torch.ones_like(target)
    assert float(scaled_chi2(wrong, batch)[0]) > 0.1
    assert float(scaled_chi2(wrong, batch)[0]) <= float(chi2_loss(wrong, batch)[0]) + 1e-6
    # Hand case: flat target 1, prediction of shape (1, 3) per half; best amplitude 0.5 → residuals ±0.5.
    flat = collate([prepare(Spectrum(wave, np.full(32, 2.0), np.full(32, 4.0)), config)])
    shape = torch.ones_like(flat.target)
    shape.view(-1)[16:] = 3.0
    w = float(flat.weight.view(-1)[0])  # 1 / σ² in normalised units
    best = (16 * 1 + 16 * 3) / (16 * 1 + 16 * 9)
    expected = w * ((best - 1) ** 2 + (3 * best - 1) ** 2) / 2
    assert float(scaled_chi2(shape, flat)[0]) == pytest.approx(expected, rel=1e-5)


def test_info_nce_rewards_matching_rows():
    z = torch.eye(6) * 5.0
    matched = float(info_nce(z, z, temperature=0.1))
    shuffled = float(info_nce(z, z[torch.tensor([1, 2, 3, 4, 5, 0])], temperature=0.1))
    assert matched < 0.01 < 5.0 < shuffled
    # Uninformative embeddings score log(batch size).
    same = torch.ones(6, 4) + 1e-9 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert float(info_nce(same, same, temperature=1e6)) == pytest.approx(np.log(6), rel=1e-3)


def _train_on_pairs(weights, steps=300):
    """A tiny model trained on six same-star pairs: SDSS-length and Gaia XP spectra."""
    torch.manual_seed(0)
    tok = Tokenizer.from_config(TINY, seed=0)
    model = tok.model.train()
    teffs = [3800, 4600, 5400, 6300, 7500, 9000]
    side_a = [star("sdss", seed=i, n=512, teff=t) for i, t in enumerate(teffs)]
    side_b = [star("gaia_xp", seed=10 + i, teff=t) for i, t in enumerate(teffs)]
    batch_a = collate([prepare(s, TINY) for s in side_a])
    batch_b = collate([prepare(s, TINY) for s in side_b])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, parts = pair_objective(model, batch_a, batch_b, weights, mask_ratio=0.0, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        # Clipped as `spectok train` clips: unclipped, a 1e-6 change of the initial
        # weights (other CPU kernels round differently) decided whether this toy learned.
        torch.nn.utils.clip_grad_norm_(model.parameters(), TrainConfig().grad_clip)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        cross = model.decode(model.summarise(*model.encode(batch_a)), TargetGrid(batch_b.wave, batch_b.info, []))
        cross_chi2 = float(scaled_chi2(cross, batch_b).mean())
    return tok, parts, cross_chi2, side_a, side_b


def test_cross_rendering_term_teaches_rendering_onto_another_grid():
    _, parts, with_term, _, _ = _train_on_pairs(PairWeights(cross=1.0, contrastive=0.0))
    _, plain_parts, without, _, _ = _train_on_pairs(PairWeights(cross=0.0, contrastive=0.0))
    # The SDSS latents render the Gaia XP spectrum of the same star far better with the term
    # (χ² 5-19 against 250-520 over six 1e-6 perturbations of the initial weights).
    assert with_term < 0.2 * without
    assert np.isfinite(float(parts["a"].mean() + parts["b"].mean()))


def _pair_retrieval(tok, side_a, side_b) -> float:
    """R@1 of same-star partners in the space InfoNCE sees: centred, normalised summaries."""
    with torch.no_grad():
        z = [tok.summaries(side) for side in (side_a, side_b)]
    centre = torch.cat(z).mean(dim=0)
    za, zb = (torch.nn.functional.normalize(x - centre, dim=-1) for x in z)
    return float(((za @ zb.T).argmax(dim=1) == torch.arange(len(side_a))).float().mean())


def test_contrastive_term_aligns_same_object_embeddings():
    # (InfoNCE ended at 0.02-0.06 over eight 1e-6 perturbations of the initial weights.)
    tok, parts, _, side_a, side_b = _train_on_pairs(PairWeights(cross=0.0, contrastive=1.0))
    assert float(parts["contrastive"]) < 0.2 * np.log(6)
    assert _pair_retrieval(tok, side_a, side_b) == 1.0
    plain, *_, plain_a, plain_b = _train_on_pairs(PairWeights(cross=0.0, contrastive=0.0))
    assert _pair_retrieval(plain, plain_a, plain_b) <= 0.5


def test_paper_config_builds_and_takes_a_training_step():
    """The GPU-sized preset runs through the same code (here one step on CPU)."""
    config = PRESETS["paper"]
    assert (config.patch_size, config.d_model, config.n_enc_layers, config.n_dec_layers) == (32, 512, 6, 6)
    torch.manual_seed(0)
    tok = Tokenizer.from_config(config)
    n_params = sum(p.numel() for p in tok.model.parameters())
    assert 30e6 < n_params < 60e6
    batch = collate([prepare(star("sdss", seed=i, n=256), config) for i in range(2)])
    model = tok.model.train()
    loss, _, parts = objective(model, batch, generator=torch.Generator().manual_seed(0), views=ViewWeights())
    assert set(parts) == {"crop: render χ²", "crop: InfoNCE"}
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert tok.embed(star("gaia_xp", seed=5)).shape == (1, config.d_embed)


def test_summaries_keep_input_order_across_lengths(tok):
    spectra = [star("sdss", seed=1, n=700), star("gaia_xp", seed=2), star("sdss", seed=3, n=300)]
    together = tok.summaries(spectra, batch_size=2)
    assert together.shape == (3, TINY.d_model)
    for row, spectrum in zip(together, spectra):
        assert torch.allclose(row, tok.summaries([spectrum])[0], atol=1e-5)


def test_random_crop_keeps_one_contiguous_run_of_valid_patches():
    valid = torch.ones(200, 40, dtype=torch.bool)
    valid[:, 30:] = False  # padding
    valid[::2, 5] = False  # a bad patch inside
    keep = random_crop(valid, 0.25, 0.6, torch.Generator().manual_seed(1))
    assert not (keep & ~valid).any()
    n_valid = valid.sum(dim=1)
    share = keep.sum(dim=1) / n_valid
    assert share.min() >= 0.25 - 1e-6 and share.max() <= 0.6 + 1 / 29
    for row in range(200):
        ranks = torch.nonzero(keep[row][valid[row]]).flatten()  # positions among the valid patches
        assert (ranks.diff() == 1).all()  # contiguous
    # The runs start all over the spectrum, not only at its blue end.
    first = torch.tensor([torch.nonzero(k).flatten()[0] for k in keep])
    assert first.min() == 0 and first.max() > 10


def test_decoder_reads_only_the_latents():
    """The bottleneck: two inputs with the same latents render identically on any grid."""
    tok = Tokenizer.from_config(TINY, seed=0)
    model = tok.model
    a = collate([prepare(star("sdss", seed=1, n=512), TINY)])
    b = collate([prepare(star("sdss", seed=2, n=512, teff=4000), TINY)])
    grid = TargetGrid(b.wave, b.info, [])
    with torch.no_grad():
        sa, sb = model.summarise(*model.encode(a)), model.summarise(*model.encode(b))
        assert sa.memory.shape == (1, TINY.n_latents, TINY.d_model) and bool(sa.memory_valid.all())
        assert not torch.allclose(sa.memory, sb.memory)
        # Swap in b's latents with a's tokens nowhere in reach: the rendering is b's.
        assert torch.equal(model.decode(sb, grid), model.decode(sb._replace(vector=sa.vector), grid))
        assert not torch.allclose(model.decode(sa, grid), model.decode(sb, grid))


def test_cropped_view_terms():
    """A crop keeping every patch is the full view: same summary, the render term is the
    own-grid χ² (at best amplitude, so never more); a real crop gives a different summary."""
    tok = Tokenizer.from_config(TINY, seed=0)
    model = tok.model.eval()
    spectra = [star("sdss", seed=i, n=768, teff=4000 + 800 * i) for i in range(5)]
    batch = collate([prepare(s, TINY) for s in spectra])
    with torch.no_grad():
        loss, chi2, parts = objective(model, batch, mask_ratio=0.0, views=ViewWeights(crop_min=1.0, crop_max=1.0))
        assert float(parts["crop: render χ²"]) <= float(chi2.mean()) * (1 + 1e-5)
        expected = chi2.mean() * (1 + 0.5 * float(parts["crop: render χ²"]) / float(chi2.mean())
                                  + 0.5 * float(parts["crop: InfoNCE"]) / np.log(5))
        assert float(loss) == pytest.approx(float(expected), rel=1e-4)
        full = model.summarise(*model.encode(batch)).vector
        crop = random_crop(batch.valid, 0.3, 0.3, torch.Generator().manual_seed(0))
        part = model.summarise(*model.encode(batch, crop)).vector
        assert not torch.allclose(full, part)
    # The terms train: gradients reach the latent queries and the encoder.
    model.train()
    loss, _, _ = objective(model, batch, views=ViewWeights(), generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert model.latent_queries.grad.abs().sum() > 0 and model.patch_embed.weight.grad.abs().sum() > 0
    # Without latents (the earlier design) there are no view terms.
    legacy = Tokenizer.from_config(ModelConfig(**{**TINY.__dict__, "n_latents": 0})).model
    assert objective(legacy, batch, views=ViewWeights())[2] == {}


@pytest.mark.parametrize("field, value, message", [
    ("n_heads", 3, "multiple of n_heads"),
    ("d_model", "128", "'d_model' must be an integer"),
    ("d_model", -32, "'d_model' = -32 is outside"),
    ("d_model", True, "'d_model' must be an integer"),
    ("d_model", 65536, "'d_model' = 65536 is outside"),
    ("n_enc_layers", 40, "M parameters"),
    ("dropout", float("nan"), "finite"),
    ("mask_ratio", None, "must be a number"),
])
def test_model_folder_with_a_bad_config_is_refused_naming_the_field(tmp_path, tok, field, value, message):
    import json
    import resource

    folder = tok.save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    if field == "n_enc_layers":
        config.update(d_model=4096, n_heads=8)
    (folder / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SpectrumError, match=message) as caught:
        Tokenizer.from_pretrained(folder)
    assert "config.json" in str(caught.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing big allocated


def test_model_folder_damage_is_refused(tmp_path, tok):
    from safetensors.torch import load_file, save_file

    folder = tok.save(tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    name = next(k for k in state if k.endswith("weight") and state[k].ndim == 2)
    state[name][0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(SpectrumError, match=f"tensor {name} holds NaN"):
        Tokenizer.from_pretrained(folder)
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(SpectrumError, match="not valid JSON"):
        Tokenizer.from_pretrained(folder)
    good = tok.save(tmp_path / "g")
    (good / "metadata.json").write_text("[1, 2")
    with pytest.raises(SpectrumError, match="metadata.json is not a valid model metadata"):
        Tokenizer.from_pretrained(good)
    # Weights of another shape (a model mixed from two folders).
    other = Tokenizer.from_config(ModelConfig(**{**TINY.__dict__, "d_model": 64}))
    other.save(tmp_path / "o")
    (good / "metadata.json").write_text("{}")
    (tmp_path / "o" / "model.safetensors").replace(good / "model.safetensors")
    with pytest.raises(SpectrumError, match="config.json"):
        Tokenizer.from_pretrained(good)


def test_warm_start_keeps_the_encoder_of_an_earlier_design(tmp_path):
    from spectok_core.train import copy_matching_weights

    legacy = Tokenizer.from_config(ModelConfig(**{**TINY.__dict__, "n_latents": 0}), seed=3)
    folder = legacy.save(tmp_path / "legacy")
    again = Tokenizer.from_pretrained(folder)  # a folder of the earlier design still loads
    spectra = [star("sdss", seed=1), star("gaia_xp", seed=2)]
    assert np.array_equal(again.embed(spectra), legacy.embed(spectra))
    fresh = Tokenizer.from_config(TINY, seed=0)
    copied = copy_matching_weights(fresh.model, again.model)
    assert copied > 10
    assert torch.equal(fresh.model.patch_embed.weight, legacy.model.patch_embed.weight)
    assert torch.equal(fresh.model.encoder[0].mlp.fc.weight, legacy.model.encoder[0].mlp.fc.weight)
