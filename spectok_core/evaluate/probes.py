"""Light probes fitted on frozen features: kNN, ridge / logistic, and the MLP specialist.

The same functions serve the embeddings and the baselines, so a difference in
the report is a difference in the features, not in the probe. Hyperparameters
(k, the ridge / logistic strength) are chosen on the validation rows when a
task has them, then the probe is refitted on train + val; without validation
rows (k-fold tasks) fixed defaults are used. Regression targets are
standardised on the training rows so one multi-output probe treats every label
alike, and predictions are clipped to the training labels' range (a ridge
probe fed out-of-distribution features would otherwise predict absurd values).

sklearn runs with one thread (threadpoolctl): its OpenMP loss loops, numpy's
and scipy's OpenBLAS pools and torch's OpenMP pool otherwise spin against
each other on two cores — L-BFGS fits ran 7x and MLP epochs 3x slower so.
"""

from __future__ import annotations

import warnings

import numpy as np
from threadpoolctl import threadpool_limits

K_GRID = (5, 10, 20, 40)
ALPHA_GRID = tuple(10.0 ** np.arange(-3, 4))
C_GRID = (0.01, 0.1, 1.0, 10.0)  # logistic strength; 300 L-BFGS steps at most
DEFAULT_K = 10
MLP_MIN_EARLY_STOP = 100  # fewer rows: no held-out tenth worth stopping on

REGRESSORS = ("knn", "ridge")
CLASSIFIERS = ("knn", "logistic")
DISPLAY = {"knn": "kNN", "ridge": "ridge", "logistic": "logistic", "mlp": "MLP"}


class KNN:
    """Brute-force k nearest neighbours (Euclidean), inverse-distance weighted, in numpy.

    Ours rather than sklearn's because sklearn's OpenMP neighbour search and
    torch's OpenMP pool fight over the two cores (tens of ms per call on tiny
    inputs); a chunked matrix product is as fast and has no thread pool.
    """

    def __init__(self, k: int, classify: bool, chunk: int = 1024):
        self.k, self.classify, self.chunk = k, classify, chunk

    def fit(self, x, y):
        self.x = np.asarray(x, np.float32)
        self.norm2 = np.einsum("ij,ij->i", self.x, self.x)
        y = np.asarray(y)
        if self.classify:
            self.classes, self.codes = np.unique(y, return_inverse=True)
        else:
            self.y = y.astype(np.float64).reshape(len(y), -1)
        return self

    def predict(self, x):
        return self.predict_ks(x, (self.k,))[self.k]

    def predict_ks(self, x, ks) -> dict[int, np.ndarray]:
        """Predictions for several k from one neighbour search (for tuning k)."""
        x = np.asarray(x, np.float32)
        ks = [min(k, len(self.x)) for k in ks]
        k_max = max(ks)
        out: dict[int, list] = {k: [] for k in ks}
        for start in range(0, len(x), self.chunk):
            block = x[start : start + self.chunk]
            d2 = self.norm2[None, :] - 2.0 * block @ self.x.T + np.einsum("ij,ij->i", block, block)[:, None]
            near = np.argpartition(d2, k_max - 1, axis=1)[:, :k_max]
            d2_near = np.take_along_axis(d2, near, axis=1)
            order = np.argsort(d2_near, axis=1)
            near, d2_near = np.take_along_axis(near, order, axis=1), np.take_along_axis(d2_near, order, axis=1)
            weight_all = 1.0 / np.maximum(np.sqrt(np.maximum(d2_near, 0.0)), 1e-6)
            for k in ks:
                weight, index = weight_all[:, :k], near[:, :k]
                if self.classify:
                    votes = np.zeros((len(block), len(self.classes)))
                    rows = np.repeat(np.arange(len(block)), k)
                    np.add.at(votes, (rows, self.codes[index].ravel()), weight.ravel())
                    out[k].append(self.classes[np.argmax(votes, axis=1)])
                else:
                    out[k].append(np.einsum("ij,ijl->il", weight, self.y[index]) / weight.sum(axis=1, keepdims=True))
        return {k: np.concatenate(parts) for k, parts in out.items()}


def _standardise(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = y.mean(axis=0), y.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _regressor(kind: str, param, n_train: int, seed: int):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "knn":
        return KNN(min(param, n_train), classify=False)
    if kind == "ridge":
        return make_pipeline(StandardScaler(), Ridge(alpha=param))
    if kind == "mlp":
        from sklearn.neural_network import MLPRegressor

        return make_pipeline(StandardScaler(), MLPRegressor(
            hidden_layer_sizes=(128, 64), early_stopping=n_train >= MLP_MIN_EARLY_STOP, max_iter=param,
            batch_size=256, n_iter_no_change=8, random_state=seed))
    raise ValueError(f"unknown regressor {kind!r}")


def _classifier(kind: str, param, n_train: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "knn":
        return KNN(min(param, n_train), classify=True)
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=param, max_iter=300))
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(128, 64), early_stopping=n_train >= MLP_MIN_EARLY_STOP, max_iter=param,
            batch_size=256, n_iter_no_change=8, random_state=seed))
    raise ValueError(f"unknown classifier {kind!r}")


def _grid(kind: str, classify: bool, mlp_iter: int):
    if kind == "knn":
        return K_GRID, DEFAULT_K
    if kind == "ridge":
        return ALPHA_GRID, 1.0
    if kind == "logistic":
        return C_GRID, 1.0
    return (mlp_iter,), mlp_iter  # the MLP tunes itself with early stopping


def _cap(x, y, max_rows: int | None, seed: int):
    if max_rows is None or len(x) <= max_rows:
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=max_rows, replace=False))
    return x[keep], y[keep]


def _fit(model, x, y):
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # convergence chatter from sklearn; scores tell the truth
        return model.fit(x, y)


def _predict(model, x) -> np.ndarray:
    with threadpool_limits(1):
        return model.predict(x)


def regress(kind: str, x_train, y_train, x_test, x_val=None, y_val=None,
            mlp_iter: int = 200, seed: int = 0, max_rows: int | None = None) -> np.ndarray:
    """Predictions (n_test, n_labels) of a ``kind`` probe ('knn', 'ridge', 'mlp').

    ``max_rows`` caps the rows of the final fit (drawn at random): the MLP's
    cost grows with them (sklearn trains it on the CPU, one minibatch at a time).
    """
    y_train = np.asarray(y_train, np.float64).reshape(len(x_train), -1)
    grid, default = _grid(kind, False, mlp_iter)
    param = default
    if x_val is not None and len(x_val) >= 5 and len(grid) > 1:
        y_val = np.asarray(y_val, np.float64).reshape(len(x_val), -1)
        mean, std = _standardise(y_train)
        scaled = (y_train - mean) / std
        if kind == "knn":  # one neighbour search serves every k
            preds = KNN(max(grid), classify=False).fit(x_train, scaled).predict_ks(x_val, grid)
            preds = [preds[min(k, len(x_train))] for k in grid]
        else:
            preds = [_predict(_fit(_regressor(kind, value, len(x_train), seed), x_train, scaled), x_val)
                     for value in grid]
        scores = [np.median(np.abs(p.reshape(len(x_val), -1) - (y_val - mean) / std)) for p in preds]
        param = grid[int(np.argmin(scores))]
    if x_val is not None and len(x_val):
        x_train = np.concatenate([x_train, x_val])
        y_train = np.concatenate([y_train, np.asarray(y_val, np.float64).reshape(len(x_val), -1)])
    x_train, y_train = _cap(x_train, y_train, max_rows, seed)
    mean, std = _standardise(y_train)
    model = _fit(_regressor(kind, param, len(x_train), seed), x_train, (y_train - mean) / std)
    pred = _predict(model, x_test).reshape(len(x_test), -1) * std + mean
    # A linear probe far outside its training data extrapolates without bound;
    # every method is held to the training labels' range alike.
    return np.clip(pred, y_train.min(axis=0), y_train.max(axis=0))


def classify(kind: str, x_train, y_train, x_test, x_val=None, y_val=None,
             mlp_iter: int = 200, seed: int = 0, max_rows: int | None = None) -> np.ndarray:
    """Predicted labels for ``x_test`` from a ``kind`` probe ('knn', 'logistic', 'mlp')."""
    y_train = np.asarray(y_train)
    if np.unique(y_train).size < 2:
        return np.full(len(x_test), y_train[0] if len(y_train) else None)
    grid, default = _grid(kind, True, mlp_iter)
    param = default
    if x_val is not None and len(x_val) >= 5 and len(grid) > 1:
        if kind == "knn":
            preds = KNN(max(grid), classify=True).fit(x_train, y_train).predict_ks(x_val, grid)
            preds = [preds[min(k, len(x_train))] for k in grid]
        else:
            preds = [_predict(_fit(_classifier(kind, value, len(x_train), seed), x_train, y_train), x_val)
                     for value in grid]
        scores = [np.mean(p == np.asarray(y_val)) for p in preds]
        param = grid[int(np.argmax(scores))]
    if x_val is not None and len(x_val):
        x_train = np.concatenate([x_train, x_val])
        y_train = np.concatenate([y_train, np.asarray(y_val)])
    x_train, y_train = _cap(x_train, y_train, max_rows, seed)
    model = _fit(_classifier(kind, param, len(x_train), seed), x_train, y_train)
    return _predict(model, x_test)


def pca(x_train: np.ndarray, *others: np.ndarray, n_components: int = 32, seed: int = 0):
    """PCA fitted on ``x_train``; returns the projections of x_train and each of ``others``."""
    from sklearn.decomposition import PCA

    n = int(min(n_components, x_train.shape[0] - 1, x_train.shape[1]))
    with threadpool_limits(1):
        model = PCA(n_components=max(n, 1), random_state=seed, svd_solver="auto").fit(x_train)
        return [model.transform(x).astype(np.float32) for x in (x_train, *others)]
