"""The box-mixture field and ``interval_stats`` give the results of the frozen pre-speed-up code
(tests/simulate/_box_reference.py) to a relative 1e-13, in every regime (docs/theory.md §3.5, §3.6)."""

from __future__ import annotations

import pytest
import torch

from simulate import BoxMixture
from simulate.fields.truncnorm import NARROW_THRESHOLD, TAIL_CF_THRESHOLD, interval_stats
import _box_reference as ref  # noqa: E402  (tests/simulate is on sys.path, as for analytic_fields)

F64 = torch.float64
REL = 1e-13


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_rel(got: torch.Tensor, want: torch.Tensor, what: str, scale: torch.Tensor | float = 0.0) -> None:
    """``|got - want| <= REL (|want| + scale)`` elementwise (same infinities allowed)."""
    same = got == want
    err = torch.where(same, 0.0, (got - want).abs())
    bound = REL * (want.abs() + scale)
    bad = ~(same | (err <= bound))
    assert not bad.any(), f"{what}: {int(bad.sum())} elements differ, max |diff| {float(err[bad].max())!r}"


def _intervals(k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` random ``(c, h)`` of each kind: narrow, straddling, tail with b < 4, a < 4 <= b, a >= 4
    (up to 1e3 deviations out), huge |c| (to 1e103, tail or narrow), h = 0; random signs."""

    def u() -> torch.Tensor:
        return torch.rand(k, generator=g, dtype=F64)

    def kind(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "narrow":  # h (|c| + h) <= 0.13
            h = 0.1 * u()
            return 1.2 * u(), h
        if name == "straddling":
            h = 0.6 + 6 * u()
            return h * u(), h
        if name == "tail, b < 4":
            h = 0.5 + 1.4 * u()
            return h + (4 - 2 * h) * u(), h
        if name == "tail, a < 4 <= b":
            h = 0.3 + 6 * u()
            lo = torch.maximum(h, 4 - h)
            return lo + (4 + h - lo) * u(), h
        if name == "tail, a >= 4":
            h = 10 ** (3 * u() - 1)
            return TAIL_CF_THRESHOLD + h + 10 ** (3 * u()), h
        if name == "huge |c|":
            return 10 ** (3 + 100 * u()), 10 ** (8 * u() - 4)
        return 30 * u() - 15, torch.zeros(k, dtype=F64)  # points, h = 0

    names = ("narrow", "straddling", "tail, b < 4", "tail, a < 4 <= b", "tail, a >= 4", "huge |c|", "points")
    parts = [kind(name) for name in names]
    c = torch.cat([pc for pc, _ in parts])
    sign = torch.where(torch.rand(c.shape, generator=g) < 0.5, -1.0, 1.0).to(F64)
    return c * sign, torch.cat([ph for _, ph in parts])


@pytest.mark.parametrize("moments", [0, 1, 2])
@pytest.mark.parametrize("k", [3, 500])
def test_interval_stats_equals_reference(moments: int, k: int) -> None:
    g = _gen(100 * k + moments)
    c, h = _intervals(k, g)
    ca = c.abs()
    narrow = h * (ca + h) <= NARROW_THRESHOLD / 2
    tail = ~narrow & (ca >= h)
    assert narrow.any() and (~narrow & (ca < h)).any() and (tail & (ca + h < 4)).any()
    assert (tail & (ca - h < 4) & (ca + h >= 4)).any() and (tail & (ca - h >= 4)).any()
    for shape in [(c.shape[0],), (7, k, 1, 1)]:
        perm = torch.randperm(c.shape[0], generator=g)  # mixed order, any shape
        cs, hs = c[perm].reshape(shape), h[perm].reshape(shape)
        got = interval_stats(cs, hs, moments=moments)
        want = ref.interval_stats(cs, hs, moments=moments)
        for j, name in enumerate(("log_mean_density", "rel_mean", "rel_var")):
            if j > moments:
                assert got[j] is None
                continue
            assert got[j].shape == cs.shape
            _assert_rel(got[j], want[j], name, scale=1.0 if j else 0.0)  # rel_mean, rel_var: |.| <= 1


def _random_field(m: int, n: int, sigma: float, g: torch.Generator) -> BoxMixture:
    lower = 2 * torch.rand(m, n, generator=g, dtype=F64) - 1
    width = torch.rand(m, n, generator=g, dtype=F64) * torch.tensor([0.01, 0.3, 1.5], dtype=F64)[
        torch.randint(3, (m, n), generator=g)
    ]
    width[torch.rand(m, n, generator=g) < 0.1] = 0.0  # zero-width coordinates
    weights = torch.rand(m, generator=g, dtype=F64) + 0.1
    return BoxMixture(lower, lower + width, weights / weights.sum(), sigma)


def _points(field: BoxMixture, rows: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of p_g, uniform points of [-2, 2]^n and far points (up to 1e4 out); t in [0, 1] with the ends."""
    k = rows // 3
    x = torch.cat([
        field.sample(k, generator=g),
        4 * torch.rand(k, field.n, generator=g, dtype=F64) - 2,
        (10 ** (4 * torch.rand(rows - 2 * k, 1, generator=g, dtype=F64))) * torch.randn(rows - 2 * k, field.n, generator=g, dtype=F64),
    ])
    t = torch.rand(rows, generator=g, dtype=F64)
    t[:4] = torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-9], dtype=F64)
    return x, t


@pytest.mark.parametrize("m, n, sigma", [(1, 1, 0.3), (2, 3, 0.05), (3, 64, 0.02), (4, 512, 0.3), (4, 17, 2.0)])
def test_box_field_equals_reference(m: int, n: int, sigma: float) -> None:
    g = _gen(1000 * m + n)
    field = _random_field(m, n, sigma, g)
    x, t = _points(field, 24, g)
    got = field.evaluate_unchecked(x, t, velocity=True, score=True, log_prob=True, divergence=True)
    want = ref.box_field_values(field, x, t)
    names = ("velocity", "score", "log_prob", "divergence")
    for name in names:
        _check_value(getattr(got, name), want[name], name)
        # each value alone (the velocity or score alone take the moments = 1 path, log_prob alone moments = 0)
        flags = {k: k == name for k in names}
        _check_value(getattr(field.evaluate_unchecked(x, t, **flags), name), ref.box_field_values(field, x, t, **flags)[name], f"{name} alone")


def _check_value(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    # vectors: relative to the row's largest entry (a coordinate of a velocity can cancel to ~0)
    _assert_rel(got, want, what, want.abs().amax(dim=1, keepdim=True) if want.ndim == 2 else 0.0)


@pytest.mark.parametrize("moments", [0, 1, 2])
def test_interval_stats_one_group_broadcast_and_empty(moments: int) -> None:
    """Inputs in one group (no sorting), in the three tail groups only, broadcast shapes, an empty input."""
    g = _gen(7 + moments)
    c, h = _intervals(40, g)
    cases = [(c[40 * j : 40 * (j + 1)], h[40 * j : 40 * (j + 1)]) for j in range(7)]
    cases.append((c[80:200], h[80:200]))  # one tail, all three of its groups
    cases.append((c[:30].reshape(5, 6), h[200:206].reshape(1, 6)))  # broadcast
    cases.append((c[:0], h[:0]))
    for cs, hs in cases:
        got = interval_stats(cs, hs, moments=moments)
        want = ref.interval_stats(cs, hs, moments=moments)
        for j in range(moments + 1):
            assert got[j].shape == want[j].shape
            _assert_rel(got[j], want[j], f"statistic {j}", scale=1.0 if j else 0.0)
