"""Metric functions on hand-made cases where the answer is known."""

import numpy as np
import pytest

from spectok_core.evaluate import metrics


def test_robust_scatter_known_values():
    # residuals 1..5: median 3, |r - 3| = 2 1 0 1 2 -> MAD 1
    assert metrics.robust_scatter([1, 2, 3, 4, 5]) == pytest.approx(1.4826)
    # one wild outlier leaves it untouched
    assert metrics.robust_scatter([1, 2, 3, 4, 1e9]) == pytest.approx(1.4826)
    # a Gaussian sample: close to its sigma
    r = np.random.default_rng(0).normal(0.0, 2.0, 200_000)
    assert metrics.robust_scatter(r) == pytest.approx(2.0, rel=0.01)
    assert np.isnan(metrics.robust_scatter([np.nan]))


def test_median_abs_error_and_bias():
    pred, true = np.array([1.0, 2.0, 5.0, np.nan]), np.array([0.0, 2.5, 3.0, 1.0])
    assert metrics.median_abs_error(pred, true) == pytest.approx(1.0)  # |1|, |0.5|, |2|
    assert metrics.bias(pred, true) == pytest.approx(1.0)  # 1, -0.5, 2
    with pytest.raises(ValueError):
        metrics.median_abs_error([1, 2], [1])


def test_sigma_nmad_uses_offset_from_median_and_one_plus_z():
    z_true = np.array([0.0, 1.0, 1.0, 3.0, 0.5])
    # A constant bias of 0.1 has zero scatter.
    assert metrics.sigma_nmad(z_true + 0.1, z_true) == pytest.approx(0.0)
    # dz = 0, +0.2, -0.2, 0, 0 -> |dz - 0| / (1+z) = 0, .1, .1, 0, 0 -> median 0
    dz = np.array([0.0, 0.2, -0.2, 0.0, 0.0])
    assert metrics.sigma_nmad(z_true + dz, z_true) == pytest.approx(0.0)
    # three of five off: |dz|/(1+z) = .1 (z=0), .1, .1, 0, 0 -> median .1
    dz = np.array([0.1, 0.2, -0.2, 0.0, 0.0])
    z_pred = z_true + dz
    # median(dz) = 0: values .1/1, .2/2, .2/2, 0, 0 -> sorted 0 0 .1 .1 .1 -> .1
    assert metrics.sigma_nmad(z_pred, z_true) == pytest.approx(1.4826 * 0.1)


def test_outlier_fraction():
    z_true = np.array([0.0, 1.0, 2.0, 0.5])
    z_pred = np.array([0.2, 1.2, 2.3, 0.5])  # 0.2/1 yes, 0.2/2 no, 0.3/3 no, 0 no
    assert metrics.outlier_fraction(z_pred, z_true) == pytest.approx(0.25)
    assert metrics.outlier_fraction(z_pred, z_true, threshold=0.05) == pytest.approx(0.75)


def test_accuracy():
    assert metrics.accuracy(np.array(["STAR", "QSO", "GALAXY"]), np.array(["STAR", "QSO", "QSO"])) == pytest.approx(2 / 3)


def test_retrieval_ranks_recall_and_median_rank_on_constructed_matrix():
    similarity = np.array([
        [0.9, 0.1, 0.2, 0.3],  # partner 0: rank 1
        [0.5, 0.4, 0.6, 0.1],  # partner 1: two above it -> rank 3
        [0.1, 0.2, 0.3, 0.4],  # partner 2: one above -> rank 2
        [0.9, 0.8, 0.7, 0.1],  # partner 3: last -> rank 4
    ])
    ranks = metrics.retrieval_ranks(similarity, np.arange(4))
    assert ranks.tolist() == [1, 3, 2, 4]
    assert metrics.recall_at_k(ranks, 1) == pytest.approx(0.25)
    assert metrics.recall_at_k(ranks, 2) == pytest.approx(0.5)
    assert metrics.recall_at_k(ranks, 10) == pytest.approx(1.0)
    assert metrics.median_rank(ranks) == pytest.approx(2.5)


def test_retrieval_ties_count_against_the_model_and_best_partner_counts():
    # A collapsed embedding (all equal) ranks every partner last.
    ranks = metrics.retrieval_ranks(np.ones((3, 5)), np.array([0, 2, 4]))
    assert ranks.tolist() == [5, 5, 5]
    # Two partners for the query: the better-placed one counts; the other is not a competitor.
    match = np.array([[True, False, True, False]])
    ranks = metrics.retrieval_ranks(np.array([[0.1, 0.5, 0.9, 0.2]]), match)
    assert ranks.tolist() == [1]
    with pytest.raises(ValueError):
        metrics.retrieval_ranks(np.ones((2, 2)), np.zeros((2, 2), bool))


@pytest.mark.parametrize("text, value", [
    ("M0", 0.0), ("M8", 8.0), ("L4.5", 14.5), ("T2 pec", 22.0), ("sdM7", 7.0), ("d/sdM8", 8.0),
    ("esdM5", 5.0), ("usdM7.5", 7.5), ("L0gamma", 10.0), ("L4 beta", 14.0), ("M9.5 V", 9.5),
    ("L1.0:", 11.0), ("T6p", 26.0), ("T9", 29.0), ("sdL4", 14.0), ("M5 III", 5.0),
])
def test_parse_subtype(text, value):
    assert metrics.parse_subtype(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["M", "mid M", "galaxy", "C", "WD?", "DC 10", "M10+ I", "sd/esdM",
                                  "massive giant", "", None, 7])
def test_parse_subtype_rejects(text):
    assert metrics.parse_subtype(text) is None


def test_format_subtype_round_trips():
    for text in ("M3", "L4.5", "T7"):
        assert metrics.format_subtype(metrics.parse_subtype(text)) == text
