"""The eval section on the explorer's gated estimates: right when answered, abstentions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spectok_core.evaluate.gated import score


def test_score_answers_clusters_and_abstains_on_strays():
    rng = np.random.default_rng(0)
    centres = {"GALAXY": np.eye(8)[0], "STAR": np.eye(8)[1]}
    rows, emb = [], []
    for i in range(40):
        cls = "GALAXY" if i % 2 else "STAR"
        v = centres[cls] + 0.05 * rng.normal(size=8)
        emb.append(v / np.linalg.norm(v))
        rows.append({"class": cls, "z": 0.1 if cls == "GALAXY" else 0.0,
                     "teff": np.nan if cls == "GALAXY" else 5000.0, "logg": np.nan, "feh": np.nan,
                     "origin": "simulated"})
    # a stray test spectrum far from everything: the gates must abstain
    stray = np.eye(8)[5]
    emb.append(stray)
    rows.append({"class": "QSO", "z": 2.0, "teff": np.nan, "logg": np.nan, "feh": np.nan,
                 "origin": "real"})
    table = pd.DataFrame(rows)
    embeddings = np.array(emb, np.float32)
    reference, test = np.arange(0, 30), np.arange(30, 41)
    scored = score(table, embeddings, reference, test)
    sim = scored[scored["origin"] == "simulated"]
    cls = sim[sim["quantity"] == "class"]
    assert len(cls) == 10 and cls["answered"].all() and cls["right"].all()
    assert sim[sim["quantity"] == "z"]["right"].all()
    real = scored[scored["origin"] == "real"]
    assert not real["answered"].any()  # abstains on the stray...
    assert not real[real["quantity"] == "class"]["plain_right"].any()  # ...which the plain vote gets wrong
