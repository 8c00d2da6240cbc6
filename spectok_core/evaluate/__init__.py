"""Measure what the representation knows: downstream probes, cross-survey alignment, baselines.

``run_evaluation(corpus, tok, out)`` (or ``spectok eval``) writes ``OUT/eval.md``
with figures in ``OUT/figures/``; see :mod:`.tasks` for what is measured and
:mod:`.baselines` for what it is measured against.
"""

from .run import run_evaluation
from .tasks import EvalConfig

__all__ = ["EvalConfig", "run_evaluation"]
