r"""Theorem 4.1: ``P_inst(tau) >= 1 - p1(tau, c) - p2(c)`` by Monte Carlo (docs/theory.md §6.3).

``x ~ p_r = U([0, 1]^n)``; ``z = F(x)`` by dopri5 (``rtol``, ``atol``) with the divergence integral
accumulated along the same solve; per sample

* ``log Lambda_G(z)`` by the density ratio (Lemma D.1: ``(log phi(z) - log p_g(x)) / n``, ``p_g`` exact)
  and, independently, by the divergence integral (``-(1/n) int_1^0 div v dt = (1/n) log |det J_G(z)|``),
  on every sample (a superset of the "subset" check); their largest difference is reported with
  the tolerance ``100 * rtol``;
* ``log p_g(x)`` and ``||F(x)||^2``.

:func:`theory.thm41.theorem41_from_samples` then gives ``P_inst(tau)``, ``p1(tau, c)``, ``p2(c)`` with
95% Clopper-Pearson intervals for each ``tau`` in ``taus`` and ``c = (1 + eps) n`` for each ``eps``
in ``eps_values``, and counts Lemma D.2 violations (samples with ``||F(x)||^2 < c`` and ``p_g(x)``
below the threshold but ``Lambda <= tau``); this is done with both ``log Lambda`` estimates.

Fields (box mixtures of Gaussian neighbours, ``sigma = 0.05``, all inside ``[0, 1]^n``):

* ``"cover"``: two boxes ``[0, 0.45] x [0, 1]^{n-1}`` and ``[0.55, 1] x [0, 1]^{n-1}`` (``p_g`` close to
  ``p_r``: ``||F(x)||^2 ~ n``, ``Lambda ~ (2 pi e)^{-1/2}``; the bound is informative for small ``tau``);
* ``"sparse"``: four boxes of side 0.2 (:func:`simulate.experiments.oracles.build_field`; most of
  ``p_r``'s mass is far from ``p_g``'s: large ``Lambda``, large ``||F(x)||``, so ``p2 ~ 1`` and the
  bound is vacuous while ``P_inst`` is large);
* ``"gaussian"``: ``N(0.5 * 1, gaussian_std^2 I)`` (closed form ``Lambda = gaussian_std`` everywhere, so
  ``P_inst(tau)`` is exactly 1 for ``tau < gaussian_std`` and 0 for ``tau > gaussian_std``: the tests' case).

Verdict: ``verified`` when ``P_inst.upper >= lower end of the bound's interval`` in every case
(``holds_within_intervals``) and there are 0 Lemma D.2 violations, for both estimates of ``Lambda``.

Options: :class:`Thm41Options` (keyword overrides of :func:`run`): ``fields``, ``dims``, ``samples``,
``taus``, ``eps_values``, ``rtol``, ``atol``, ``gaussian_std``.

``result.json`` numbers: ``cases`` (list: field, n, tau, eps, c, ``p_inst``/``p1``/``p2`` with
intervals, ``lower_bound``, ``lower_bound_interval``, ``holds_within_intervals``,
``lemma_d2_violations``, and the same from the divergence estimate under ``divergence``),
``units`` (per field and n: ``max_abs_diff_log_Lambda``, quantiles of ``Lambda`` and
``||F(x)||^2 / n``), ``violations_total``, ``informative_cases`` (bound interval above 0).
Figure ``thm41.png`` (:mod:`.thm41_figures`): ``P_inst`` and the bound vs ``tau`` per field and ``n`` with
error bars. Estimates and verdict: :mod:`.thm41_judge`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theory._validate import require_int
from simulate.fields import BoxMixture
from simulate.maps import invert
from theory.thm41 import log_Lambda_density_ratio, log_standard_normal_density

from simulate.experiments.common import ExperimentResult, RecordStore, replace_options, write_result
from simulate.experiments.oracles import DT, build_field, seeded_generator
from simulate.experiments.runner import sweep
from simulate.experiments.thm41.judge import estimates, judge

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "Thm41Options", "FAST", "FULL", "make_options", "run", "make_field",
           "compute_unit", "estimates"]

NAME = "thm41"
DESCRIPTION = "Theorem 4.1: P_inst(tau) >= 1 - p1(tau, c) - p2(c) by Monte Carlo with Clopper-Pearson intervals"
CLAIM_IDS = ["thm41"]
FIELD_KINDS = ("cover", "sparse", "gaussian")


@dataclass(frozen=True)
class Thm41Options:
    """Options of the Theorem 4.1 experiment (see the module docstring; validated on construction)."""

    fields: tuple[str, ...] = ("cover", "sparse")
    dims: tuple[int, ...] = (2, 8, 32)
    samples: int = 300
    taus: tuple[float, ...] = (0.15, 0.25, 0.5, 1.0, 2.0, 4.0)
    eps_values: tuple[float, ...] = (0.25, 1.0)
    rtol: float = 1e-7
    atol: float = 1e-9
    gaussian_std: float = 0.8

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("fields", tuple(str(k) for k in self.fields))
        put("dims", tuple(require_int("dims", n) for n in self.dims))
        put("taus", tuple(float(t) for t in self.taus))
        put("eps_values", tuple(float(e) for e in self.eps_values))
        put("samples", require_int("samples", self.samples))
        for name in ("rtol", "atol", "gaussian_std"):
            put(name, float(getattr(self, name)))
        bad = [k for k in self.fields if k not in FIELD_KINDS]
        if not self.fields or bad:
            raise ValueError(f"fields must be a non-empty tuple of {', '.join(FIELD_KINDS)}, got {self.fields}")
        if not self.dims:
            raise ValueError("dims must be non-empty positive integers, got ()")
        if not self.taus or min(self.taus) <= 0 or not self.eps_values or min(self.eps_values) <= -1:
            raise ValueError(f"taus must be non-empty and > 0, eps_values non-empty and > -1 (c = (1 + eps) n > 0), "
                             f"got {self.taus}, {self.eps_values}")
        if not (self.rtol > 0 and self.atol > 0 and self.gaussian_std > 0):
            raise ValueError("rtol, atol and gaussian_std must be > 0")

    @property
    def tol(self) -> float:
        """The agreement tolerance ``100 rtol`` between the density-ratio and divergence ``log Lambda``."""
        return 100.0 * self.rtol


FAST = Thm41Options()
FULL = Thm41Options(dims=(2, 8, 32, 128), samples=2000)


def make_options(full: bool = False, **overrides: Any) -> Thm41Options:
    """:data:`FAST` or :data:`FULL` with keyword overrides (unknown names raise ``ValueError``)."""
    return replace_options(FULL if full else FAST, overrides)


def make_field(kind: str, n: int, seed: int, gaussian_std: float = 0.8) -> Any:
    """The field ``kind`` (``"cover"``, ``"sparse"``, ``"gaussian"``) in dimension ``n``."""
    if kind == "cover":
        lo = torch.zeros(2, n, dtype=DT)
        up = torch.ones(2, n, dtype=DT)
        up[0, 0], lo[1, 0] = 0.45, 0.55
        return BoxMixture(lo, up, torch.tensor([0.5, 0.5], dtype=DT), 0.05)
    if kind == "sparse":
        return build_field("box", n, seed)
    if kind == "gaussian":
        return build_field("gaussian", n, seed, gaussian_std=gaussian_std)
    raise ValueError(f"field kind must be one of cover, sparse, gaussian, got {kind!r}")


def compute_unit(kind: str, n: int, opts: Thm41Options, seed: int) -> dict[str, Any]:
    """Per-sample ``log Lambda`` (two ways), ``log p_g(x)``, ``||F(x)||^2`` for ``x ~ U([0, 1]^n)``.

    Lemma D.1 (docs/theory.md §6.1) at ``z = F(x)``: ``log Lambda_G(z) = (log phi(z) - log p_g(x)) / n``
    (:func:`theory.thm41.log_Lambda_density_ratio`), and independently ``-(1/n) log |det J_F(x)|`` from
    the divergence integral along the same solve.
    """
    t0 = time.perf_counter()
    field = make_field(kind, n, seed, opts.gaussian_std)
    x = torch.rand(opts.samples, n, generator=seeded_generator(seed, n, 41), dtype=DT)
    with torch.no_grad():
        inv = invert(field, x, solver="dopri5", rtol=opts.rtol, atol=opts.atol, logdet=True)
        z = inv.x
        sq = (z * z).sum(1).numpy()
        log_pg = field.log_prob(x, 1.0).numpy()
        div = (-inv.logdet / n).numpy()  # log |det J_F(x)| = -log |det J_G(z)|
    # Lemma D.1 by the density ratio: log Lambda_G(z) = (log phi(z) - log p_g(x)) / n at z = F(x)
    ratio = log_Lambda_density_ratio(log_standard_normal_density(sq_norm=sq, n=n), log_pg, n)
    return {
        "field": kind,
        "n": n,
        "log_Lambda_ratio": ratio.tolist(),
        "log_Lambda_divergence": div.tolist(),
        "log_pg_x": log_pg.tolist(),
        "sq_norm_F": sq.tolist(),
        "max_abs_diff_log_Lambda": float(np.abs(ratio - div).max()),
        "seconds": time.perf_counter() - t0,
    }


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Theorem 4.1 check (sweep, judge, figure, ``result.json``); see the module docstring."""
    from simulate.experiments.thm41.figures import draw_figures

    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = make_options(full, **overrides)
    params = {"full": full, "seed": seed, **asdict(opts)}
    store = RecordStore(out_dir, params)
    units = [(f"{k}:n={n}", partial(compute_unit, k, n, opts, seed)) for k in opts.fields for n in opts.dims]
    sweep(store, units, desc="thm41", progress=progress)
    judged = judge(opts, [store.get(key) for key, _ in units])
    figures = draw_figures(out_dir, opts, judged.numbers["cases"])
    result = ExperimentResult(NAME, list(CLAIM_IDS), judged.overall, params, judged.numbers, figures,
                              time.perf_counter() - start)
    write_result(out_dir, result)
    return result
