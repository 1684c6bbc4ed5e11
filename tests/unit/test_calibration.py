"""Temperature fitting of the NLI judge's export (training/export_nli_judge.py), on synthetic logits."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "training"))
import export_nli_judge as E  # noqa: E402


def _rows(rng, n, scale, flip):
    """n 3-way rows whose logits say the true label with margin `scale`; a share `flip` of labels disagree."""
    y = rng.integers(0, 3, n)
    logits = rng.normal(0.0, 0.3, (n, 3))
    logits[np.arange(n), y] += scale
    y = np.where(rng.random(n) < flip, (y + 1) % 3, y)
    return logits, y


def test_balanced_fit_gives_a_small_overconfident_source_its_own_say():
    rng = np.random.default_rng(0)
    big_logits, big_y = _rows(rng, 4000, scale=3.0, flip=0.05)   # confident and right: wants T near 1
    small_logits, small_y = _rows(rng, 200, scale=3.0, flip=0.4)  # as confident, often wrong: wants a large T
    logits = np.vstack([big_logits, small_logits])
    y = np.concatenate([big_y, small_y])
    binary = np.zeros(len(y), dtype=bool)
    groups = ["big"] * len(big_y) + ["small"] * len(small_y)

    pooled = E.fit_temperature(logits, y, binary)
    balanced = E.fit_temperature(logits, y, binary, groups)
    alone = {g: E.fit_temperature(logits[m], y[m], binary[m])
             for g, m in (("big", np.arange(len(y)) < 4000), ("small", np.arange(len(y)) >= 4000))}
    assert alone["big"] < pooled < balanced < alone["small"]
    assert pooled == pytest.approx(alone["big"], rel=0.15)  # the big source sets the pooled temperature
    # the balanced objective is the mean of the two sources' NLLs, and the fit is its minimum
    mean_nll = lambda t: np.mean([E.nll(logits[:4000], y[:4000], binary[:4000], t),  # noqa: E731
                                  E.nll(logits[4000:], y[4000:], binary[4000:], t)])
    assert mean_nll(balanced) <= min(mean_nll(balanced * 0.95), mean_nll(balanced * 1.05))


def test_one_group_is_the_pooled_fit():
    rng = np.random.default_rng(1)
    logits, y = _rows(rng, 500, scale=2.0, flip=0.2)
    binary = np.zeros(len(y), dtype=bool)
    assert E.fit_temperature(logits, y, binary, ["only"] * len(y)) == pytest.approx(
        E.fit_temperature(logits, y, binary), rel=1e-6)
