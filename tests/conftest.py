"""Shared test fixtures.

Real survey files live in ``../shared/data/formats`` beside the repository;
tests that need them use the ``shared_formats`` fixture and skip, with a reason,
when that folder is absent (it is never copied into the repository).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spectok_core.model import Tokenizer
from tests.index_corpus import write_corpus

REPO = Path(__file__).resolve().parents[1]
SHARED_FORMATS = REPO.parent / "shared" / "data" / "formats"


def shared_files(subfolder: str, pattern: str = "*") -> list[Path]:
    """Files under ../shared/data/formats/SUBFOLDER, for parametrising (empty when absent)."""
    folder = SHARED_FORMATS / subfolder
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


@pytest.fixture
def shared_formats() -> Path:
    if not SHARED_FORMATS.is_dir():
        pytest.skip(f"real survey files not present at {SHARED_FORMATS}")
    return SHARED_FORMATS


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real survey file not present: {path}")
    return path


# The tiny untrained model and the tiny mixed corpus the index tests share
# (a test module may define its own fixture of the same name instead).

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return Tokenizer.from_config("tiny", seed=0).save(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def tok(model_dir):
    return Tokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))
