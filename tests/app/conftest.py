"""A tiny model and a tiny index, built once per test session, for the app's tests.

The app reads its model and index from SPECTOK_MODEL / SPECTOK_INDEX; these
fixtures point both at folders in a temporary directory, so no test needs the
shipped model, the demo index or any corpus on disk.
"""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import MIX, synthetic_spectrum


@pytest.fixture(scope="session")
def app_data(tmp_path_factory):
    """(model folder, index folder, spectra) of a tiny model and a 27-spectrum index."""
    from spectok_core.index import SpectrumIndex
    from spectok_core.io.mmu import write_mmu_shard
    from spectok_core.model import Tokenizer

    root = tmp_path_factory.mktemp("app")
    rng = np.random.default_rng(3)
    spectra = []
    for survey, kinds in MIX.items():
        group = [synthetic_spectrum(survey, kind, i, rng) for i, kind in enumerate(kinds)]
        write_mmu_shard(root / "corpus" / survey / f"{survey}-0.h5", group)
        spectra += group
    model = Tokenizer.from_config("tiny", seed=0).save(root / "model", model_id="tiny-test")
    (model / "MODEL_CARD.md").write_text(
        "# Tiny test model\n\nNot for science.\n\n## Architecture\n\n| layers | width |\n"
        "|---|---|\n| 1 | 16 |\n\n## What it is not good at\n\nAnything.\n")
    tok = Tokenizer.from_pretrained(model)
    SpectrumIndex.build(root / "corpus", root / "index", tok, umap=False, progress=False)
    return model, root / "index", spectra


@pytest.fixture
def app_env(app_data, monkeypatch):
    """SPECTOK_MODEL / SPECTOK_INDEX pointing at the tiny ones for this test."""
    model, index, _ = app_data
    monkeypatch.setenv("SPECTOK_MODEL", str(model))
    monkeypatch.setenv("SPECTOK_INDEX", str(index))
    return model, index
