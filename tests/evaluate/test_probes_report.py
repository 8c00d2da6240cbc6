"""Probes (our kNN against sklearn's, clipping, tuning) and report rendering."""

import numpy as np
import pytest

from spectok_core.evaluate import probes
from spectok_core.evaluate.report import (
    Headline,
    Section,
    Table,
    publish,
    render,
    staging_folder,
    tally,
)


def test_knn_matches_sklearn_distance_weighted():
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(1)  # sklearn's OpenMP search crawls next to torch's pool

    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(300, 6)).astype(np.float32), rng.normal(size=(500, 6)).astype(np.float32)
    y = rng.normal(size=(300, 2))
    ours = probes.KNN(40, classify=False).fit(x, y).predict_ks(x_test, (5, 40))
    for k in (5, 40):
        theirs = KNeighborsRegressor(n_neighbors=k, weights="distance").fit(x, y).predict(x_test)
        np.testing.assert_allclose(ours[k], theirs, atol=1e-5)
    labels = np.array(["STAR", "GALAXY", "QSO"])[rng.integers(0, 3, 300)]
    ours = probes.KNN(10, classify=True).fit(x, labels).predict(x_test)
    theirs = KNeighborsClassifier(n_neighbors=10, weights="distance").fit(x, labels).predict(x_test)
    limit.restore_original_limits()
    assert np.mean(ours == theirs) > 0.99  # exact ties may break differently


def test_regress_learns_a_linear_label_and_clips_to_the_training_range():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0])
    pred = probes.regress("ridge", x[:300], y[:300], x[300:], x[:50], y[:50])
    assert np.median(np.abs(pred[:, 0] - y[300:])) < 0.05
    far = probes.regress("ridge", x[:300], y[:300], 100.0 * x[300:])
    assert far.min() >= y[:300].min() and far.max() <= y[:300].max()
    knn = probes.regress("knn", x[:300], y[:300], x[300:], x[:50], y[:50])
    assert np.median(np.abs(knn[:, 0] - y[300:])) < 1.0


def test_classify_separable_classes_and_single_class():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.array(["A", "B"]), 100)
    x = rng.normal(size=(200, 3)) + (labels == "B")[:, None] * 6.0
    for kind in ("knn", "logistic", "mlp"):
        pred = probes.classify(kind, x[::2], labels[::2], x[1::2], mlp_iter=30)
        assert np.mean(pred == labels[1::2]) > 0.95, kind
    assert set(probes.classify("knn", x[:10], labels[:10], x[10:20])) == {"A"}


def test_headline_verdicts():
    assert Headline("t", "MAE", "real", 1.0, 2.0, "PCA", 3.0).verdict() == "**beats baselines**; **beats the MLP**"
    assert Headline("t", "MAE", "real", 2.0, 1.0, "PCA", 2.01).verdict() == "loses to baselines; ties the MLP"
    assert Headline("t", "acc", "simulated", 0.9, 0.8, "PCA", lower_is_better=False).verdict() == "**beats baselines**"
    assert Headline("t", "R@10", "simulated", 0.5, None).verdict() == "only spectok can (no common grid)"


def test_table_and_report_rendering(tmp_path):
    table = Table(["method", "data", "MAE", "N"], formats={"MAE": "{:.2f}"})
    table.add(method="a|b", data="real", MAE=1.234, N=1200)
    table.add(method="c", data="simulated", MAE=float("nan"))
    text = table.markdown()
    assert "| a/b | real | 1.23 | 1,200 |" in text and "| c | simulated | — | — |" in text
    section = Section("x", "1. X", text=["para"], tables=[table],
                      headlines=[Headline("x", "MAE", "real", 1.0, 2.0, "PCA", 0.5),
                                 Headline("x", "R@10", "simulated", 0.4, None, lower_is_better=False)])
    summary_line = tally([section])
    assert "Of 1 metrics" in summary_line and "beats the best baseline on 1" in summary_line
    assert "loses 1 of 1" in summary_line and "1 metric(s) only spectok" in summary_line
    staging = staging_folder(tmp_path)
    (staging / "figures" / "a.png").write_bytes(b"png")
    path = publish(tmp_path, staging, render(["# title"], [section], ["footer"]))
    report = path.read_text()
    assert report.index("## Summary") < report.index("## 1. X")
    assert (tmp_path / "figures" / "a.png").is_file() and not staging.exists()


@pytest.mark.parametrize("kind", ["knn", "ridge", "mlp"])
def test_regress_without_validation_rows(kind):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4))
    pred = probes.regress(kind, x[:50], x[:50, :2], x[50:], mlp_iter=10, max_rows=40)
    assert pred.shape == (10, 2) and np.isfinite(pred).all()
