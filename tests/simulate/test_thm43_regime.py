"""Theorem 4.3's regimes, measured (issue 13): separated modes make G unstable while the paper's route
(p2 -> 0) fails; a single box never is; the classifier never calls a rising trend a failure; and
Lambda_G at z = F(x) must come from the inversion pass, not from regenerating G(z)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulate.experiments.thm43 import experiment as thm43
from simulate.experiments.thm43.geometry import Cell, diagonal_boxes
from simulate.experiments.thm43.sequential import summarize
from simulate.experiments.thm43.trend import Driver, classify_trend
from simulate.fields import BoxMixture
from simulate.instability import log_Lambda_G, log_Lambda_G_at_inverse


def _sweep(cell: Cell, ns: tuple[int, ...], points: int) -> list[dict]:
    opts = thm43.make_options(num_points=points, num_points_p1=64, taus=(1.0,))
    return [summarize(cell, n, opts, [thm43.compute_unit(cell, n, opts, seed=0)]) for n in ns]


def test_two_separated_modes_are_unstable_while_p2_goes_to_one() -> None:
    """Diagonal pair of boxes, per-coordinate gap g = 8 sigma: P_inst(1) >= 0.9 by n = 64, p2 -> 1."""
    recs = _sweep(Cell("diagonal", 0.1, 2, 8.0), (2, 8, 32, 64), points=16)
    p_inst = [r["taus"]["1"]["p_inst"]["estimate"] for r in recs]
    p2 = [r["p2"]["estimate"] for r in recs]
    assert p_inst[-1] >= 0.9, p_inst
    assert p2[-1] == 1.0 and p2[-2] == 1.0, p2
    # the paper's route: Theorem 4.1's bound 1 - p1 - p2 is vacuous although P_inst -> 1
    assert 1.0 - recs[-1]["taus"]["1"]["p1"]["estimate"] - p2[-1] <= 0.0
    assert all(r["taus"]["1"]["theorem41_holds"] and r["taus"]["1"]["lemma_d2_violations"] == 0 for r in recs)


def test_single_box_is_never_unstable() -> None:
    """The control: one box (m = 1, sigma = 0.1) has P_inst(1) = 0 at every n, classified as fails."""
    recs = _sweep(Cell("single", 0.1, 1), (2, 8, 32, 128), points=8)
    props = [r["taus"]["1"]["p_inst"] for r in recs]
    assert [p["estimate"] for p in props] == [0.0] * 4
    lam = [r["log_Lambda"] for r in recs]
    driver = Driver([r["n"] for r in recs], [v["mean"] for v in lam], [v["se"] for v in lam], 0.0, want="above")
    cls = classify_trend([p["estimate"] for p in props], [p["lower"] for p in props], [p["upper"] for p in props],
                         target="one", driver=driver)
    assert cls == "fails"


def test_rising_sequence_not_crossed_is_undetermined() -> None:
    """P_inst rising 0 -> 0.5 (not crossed) and mean log Lambda rising toward 0: never 'fails'."""
    est = np.array([0.0, 0.1, 0.3, 0.5])
    lo, hi = np.clip(est - 0.05, 0, 1), np.clip(est + 0.05, 0, 1)
    assert classify_trend(est, lo, hi, target="one") == "undetermined"
    # flat proportions, but the driver still climbs significantly toward log tau = 0
    flat = np.array([0.2, 0.2, 0.2, 0.2])
    rising = Driver([8, 32, 128, 512], [-3.0, -2.0, -1.2, -0.6], [0.05] * 4, 0.0, want="above")
    assert classify_trend(flat, flat - 0.1, flat + 0.1, target="one", driver=rising) == "undetermined"
    settled = Driver([8, 32, 128, 512], [-0.6, -0.6, -0.6, -0.6], [0.05] * 4, 0.0, want="above")
    assert classify_trend(flat, flat - 0.1, flat + 0.1, target="one", driver=settled) == "fails"


def test_lambda_from_the_inversion_pass_not_from_regeneration() -> None:
    """m = 2, sigma = 0.02, n = 64: regenerating G(F(x)) is far off; the divergence integral along the
    inversion agrees with Lemma D.1's density ratio at x."""
    n, sigma = 64, 0.02
    boxes = diagonal_boxes(n, 2, 0.1, 8 * sigma)
    field = BoxMixture(boxes.lower, boxes.upper, [0.5, 0.5], sigma, dtype=torch.float64)
    x = torch.from_numpy(np.random.default_rng(0).random((4, n)))
    kw = {"rtol": 1e-6, "atol": 1e-8}
    ratio = log_Lambda_G_at_inverse(field, x, method="density_ratio", **kw)
    div = log_Lambda_G_at_inverse(field, x, method="divergence", **kw)
    assert torch.allclose(ratio.z, div.z, atol=1e-6)
    assert float((ratio.log_Lambda - div.log_Lambda).abs().max()) < 1e-3
    assert int((ratio.log_Lambda > 0).sum()) >= 2  # unstable points at x
    regen = log_Lambda_G(field, ratio.z, **kw)
    assert float((regen - ratio.log_Lambda).abs().max()) > 5.0
    assert int((regen > 0).sum()) == 0  # the regenerate path flags none of them


def test_lambda_at_inverse_rejects_bad_arguments() -> None:
    field = BoxMixture([[0.0, 0.0]], [[0.1, 0.1]], [1.0], 0.5, dtype=torch.float64)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="method"):
        log_Lambda_G_at_inverse(field, x, method="slogdet")
    with pytest.raises(ValueError, match="logdet"):
        log_Lambda_G_at_inverse(field, x, logdet=True)
