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
* ``"sparse"``: four boxes of side 0.2 (:func:`simulate.experiments.lemma_d1.build_field`; most of
  ``p_r``'s mass is far from ``p_g``'s: large ``Lambda``, large ``||F(x)||``, so ``p2 ~ 1`` and the
  bound is vacuous while ``P_inst`` is large);
* ``"gaussian"``: ``N(0.5 * 1, gaussian_std^2 I)`` (closed form ``Lambda = gaussian_std`` everywhere, so
  ``P_inst(tau)`` is exactly 1 for ``tau < gaussian_std`` and 0 for ``tau > gaussian_std``: the tests' case).

Verdict: ``verified`` when ``P_inst.upper >= lower end of the bound's interval`` in every case
(``holds_within_intervals``) and there are 0 Lemma D.2 violations, for both estimates of ``Lambda``.

Keyword overrides of :func:`run` (every key of :data:`FAST`): ``fields``, ``dims``, ``samples``,
``taus``, ``eps_values``, ``rtol``, ``atol``, ``gaussian_std``.

``result.json`` numbers: ``cases`` (list: field, n, tau, eps, c, ``p_inst``/``p1``/``p2`` with
intervals, ``lower_bound``, ``lower_bound_interval``, ``holds_within_intervals``,
``lemma_d2_violations``, and the same from the divergence estimate under ``divergence``),
``units`` (per field and n: ``max_abs_diff_log_Lambda``, quantiles of ``Lambda`` and
``||F(x)||^2 / n``), ``violations_total``, ``informative_cases`` (bound interval above 0).
Figure ``thm41.png``: ``P_inst`` and the bound vs ``tau`` per field and ``n`` with error bars.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulate.fields import BoxMixture
from simulate.maps import invert
from theory.thm41 import theorem41_from_samples

from .common import ExperimentResult, RecordStore, Verdict, progress_iter, savefig, write_result
from .lemma_d1 import _generator, build_field, resolve_options

__all__ = ["NAME", "DESCRIPTION", "CLAIM_IDS", "FAST", "FULL", "run", "make_field", "compute_unit", "estimates"]

NAME = "thm41"
DESCRIPTION = "Theorem 4.1: P_inst(tau) >= 1 - p1(tau, c) - p2(c) by Monte Carlo with Clopper-Pearson intervals"
CLAIM_IDS = ["thm41"]

DT = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)

FAST: dict[str, Any] = {
    "fields": ("cover", "sparse"),
    "dims": (2, 8, 32),
    "samples": 300,
    "taus": (0.15, 0.25, 0.5, 1.0, 2.0, 4.0),
    "eps_values": (0.25, 1.0),
    "rtol": 1e-7,
    "atol": 1e-9,
    "gaussian_std": 0.8,
}
FULL: dict[str, Any] = FAST | {"dims": (2, 8, 32, 128), "samples": 2000}


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


def compute_unit(kind: str, n: int, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """Per-sample ``log Lambda`` (two ways), ``log p_g(x)``, ``||F(x)||^2`` for ``x ~ U([0, 1]^n)``."""
    t0 = time.perf_counter()
    field = make_field(kind, n, seed, opts["gaussian_std"])
    x = torch.rand(int(opts["samples"]), n, generator=_generator(seed, n, 41), dtype=DT)
    with torch.no_grad():
        inv = invert(field, x, solver="dopri5", rtol=opts["rtol"], atol=opts["atol"], logdet=True)
        z = inv.x
        sq = (z * z).sum(1)
        log_pg = field.log_prob(x, 1.0)
        log_phi = -0.5 * n * _LOG_2PI - 0.5 * sq
        ratio = (log_phi - log_pg) / n
        div = -inv.logdet / n  # log |det J_F(x)| = -log |det J_G(z)|
    return {
        "field": kind,
        "n": n,
        "log_Lambda_ratio": ratio.numpy().tolist(),
        "log_Lambda_divergence": div.numpy().tolist(),
        "log_pg_x": log_pg.numpy().tolist(),
        "sq_norm_F": sq.numpy().tolist(),
        "max_abs_diff_log_Lambda": float((ratio - div).abs().max()),
        "seconds": time.perf_counter() - t0,
    }


def estimates(rec: dict[str, Any], taus: Any, eps_values: Any) -> list[dict[str, Any]]:
    """Theorem 4.1 estimates for every ``(tau, eps)`` from one unit's samples (both ``Lambda`` estimates)."""
    n = int(rec["n"])
    out = []
    for eps in eps_values:
        c = (1.0 + float(eps)) * n
        for tau in taus:
            est = {}
            for method in ("ratio", "divergence"):
                e = theorem41_from_samples(rec[f"log_Lambda_{method}"], rec["log_pg_x"], rec["sq_norm_F"], n, float(tau), c)
                est[method] = e.as_dict()
            case = dict(est["ratio"])
            case.update({"field": rec["field"], "eps": float(eps), "divergence": est["divergence"]})
            out.append(case)
    return out


def _quantiles(values: list[float]) -> list[float]:
    return np.quantile(np.asarray(values), [0.0, 0.1, 0.5, 0.9, 1.0]).tolist()


def _verdict(cases: list[dict[str, Any]], units: list[dict[str, Any]], tol: float) -> Verdict:
    bad = [c for c in cases if not (c["holds_within_intervals"] and c["divergence"]["holds_within_intervals"])]
    viol = sum(c["lemma_d2_violations"] for c in cases)
    viol_div = sum(c["divergence"]["lemma_d2_violations"] for c in cases)
    diff = max(u["max_abs_diff_log_Lambda"] for u in units)
    informative = [c for c in cases if c["lower_bound_interval"][0] > 0]
    slack = [c["p_inst"]["estimate"] - c["lower_bound"] for c in informative]
    key = (f"P_inst >= 1 - p1 - p2 within 95% CP intervals in {len(cases) - len(bad)}/{len(cases)} cases; "
           f"Lemma D.2 violations {viol} (ratio) / {viol_div} (divergence)")
    per_n = []
    for u in units:
        sel = [c for c in cases if c["field"] == u["field"] and c["n"] == u["n"]]
        best = max(sel, key=lambda c: c["lower_bound"])
        per_n.append(f"{u['field']} n={u['n']}: max bound {best['lower_bound']:.2f} at tau={best['tau']:g}, eps={best['eps']:g} "
                     f"(P_inst {best['p_inst']['estimate']:.2f} [{best['p_inst']['lower']:.2f}, {best['p_inst']['upper']:.2f}])")
    evidence = (
        f"{len(units)} (field, n) units x {len(cases) // max(len(units), 1)} (tau, c=(1+eps)n) cases, x ~ U([0,1]^n), "
        f"{units[0]['samples'] if units and 'samples' in units[0] else ''} samples each; log Lambda by density ratio and by the "
        f"divergence integral differ by at most {diff:.1e} (tol 100 rtol = {tol:.0e}); bound informative (interval above 0) in "
        f"{len(informative)} cases, min P_inst - bound there {min(slack) if slack else float('nan'):.3f}; " + "; ".join(per_n)
    )
    ok = not bad and viol == 0 and viol_div == 0 and diff <= tol
    if ok:
        return Verdict("verified", key, evidence)
    problems = []
    if bad:
        problems.append("bound above P_inst beyond the intervals at " + ", ".join(
            f"{c['field']} n={c['n']} tau={c['tau']:g} eps={c['eps']:g}" for c in bad[:8]))
    if viol or viol_div:
        problems.append(f"Lemma D.2 violations: {viol} (ratio), {viol_div} (divergence)")
    if diff > tol:
        problems.append(f"density ratio and divergence differ by {diff:.1e} > tol {tol:.0e}")
    return Verdict("refuted", key, evidence + "; " + "; ".join(problems))


def _figure(cases: list[dict[str, Any]], fields: list[str], dims: list[int], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(fields), len(dims), figsize=(4.2 * len(dims), 3.4 * len(fields)), squeeze=False)
    for i, kind in enumerate(fields):
        for j, n in enumerate(dims):
            ax = axes[i][j]
            sel = [c for c in cases if c["field"] == kind and c["n"] == n]
            eps_list = sorted({c["eps"] for c in sel})
            for k, eps in enumerate(eps_list):
                cs = sorted((c for c in sel if c["eps"] == eps), key=lambda c: c["tau"])
                taus = np.array([c["tau"] for c in cs])
                if k == 0:
                    p = np.array([c["p_inst"]["estimate"] for c in cs])
                    lo = p - np.array([c["p_inst"]["lower"] for c in cs])
                    hi = np.array([c["p_inst"]["upper"] for c in cs]) - p
                    ax.errorbar(taus, p, yerr=[lo, hi], fmt="o-", color="k", capsize=3, label="P_inst (95% CP)")
                b = np.array([c["lower_bound"] for c in cs])
                blo = b - np.array([c["lower_bound_interval"][0] for c in cs])
                bhi = np.array([c["lower_bound_interval"][1] for c in cs]) - b
                ax.errorbar(taus * (1.03 + 0.03 * k), b, yerr=[np.maximum(blo, 0), np.maximum(bhi, 0)], fmt="s--",
                            color=f"C{k}", capsize=3, label=f"1 - p1 - p2, c=(1+{eps:g})n")
            ax.set(xscale="log", ylim=(-1.05, 1.05), xlabel="tau", title=f"{kind}, n={n}")
            all_taus = sorted({c["tau"] for c in sel})
            ax.set_xticks(all_taus)
            ax.set_xticklabels([f"{t:g}" for t in all_taus], fontsize=7)
            ax.minorticks_off()
            ax.axhline(0, color="gray", lw=0.6)
            if j == 0:
                ax.set_ylabel("probability")
            ax.legend(fontsize=6)
    return savefig(fig, out_dir, "thm41.png")


def run(out_dir: Path, *, full: bool = False, seed: int = 0, progress: bool = True, **overrides: Any) -> ExperimentResult:
    """Run the Theorem 4.1 check; see the module docstring for the options and outputs."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    opts = resolve_options(FULL if full else FAST, overrides)
    params = {"full": full, "seed": seed, **opts}
    store = RecordStore(out_dir, params)
    work = [(k, int(n)) for k in opts["fields"] for n in opts["dims"]]
    for kind, n in progress_iter(work, "thm41", progress):
        key = f"{kind}:n={n}"
        if not store.done(key):
            store.add(key, compute_unit(kind, n, opts, seed))
    recs = [store.get(f"{k}:n={n}") for k, n in work]
    cases = [c for rec in recs for c in estimates(rec, opts["taus"], opts["eps_values"])]
    units = [{
        "field": r["field"], "n": r["n"], "samples": len(r["sq_norm_F"]),
        "max_abs_diff_log_Lambda": r["max_abs_diff_log_Lambda"],
        "Lambda_quantiles_0_10_50_90_100": np.exp(_quantiles(r["log_Lambda_ratio"])).tolist(),
        "sq_norm_F_over_n_quantiles": (np.array(_quantiles(r["sq_norm_F"])) / r["n"]).tolist(),
        "seconds": r["seconds"],
    } for r in recs]
    tol = 100.0 * float(opts["rtol"])
    verdict = _verdict(cases, units, tol)
    figures = [_figure(cases, list(opts["fields"]), [int(n) for n in opts["dims"]], out_dir)]
    numbers = {
        "cases": cases,
        "units": units,
        "tol_log_Lambda": tol,
        "violations_total": sum(c["lemma_d2_violations"] + c["divergence"]["lemma_d2_violations"] for c in cases),
        "informative_cases": sum(1 for c in cases if c["lower_bound_interval"][0] > 0),
        "holds_within_intervals_all": all(c["holds_within_intervals"] and c["divergence"]["holds_within_intervals"] for c in cases),
    }
    result = ExperimentResult(NAME, list(CLAIM_IDS), verdict, params, numbers, figures, time.perf_counter() - start)
    write_result(out_dir, result)
    return result
