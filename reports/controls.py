r"""Negative controls: every claim's judge, run on an input where the claim is known to be false (issue 25).

A verdict is worth as much as its judge's ability to say "fails". For every claim of
:data:`reports.claims.CLAIMS` (its ``controls`` names them) this module feeds the *same judge* that
decides the claim an input on which the claim is false, and records what the judge said:

============  ===================================================================================
claim         control (the input; the judge that must say "fails")
============  ===================================================================================
prop21        ``f(z) = |z|`` (not differentiable where a coordinate is 0): ``mu`` does not converge
              to the JVP's ``lambda``; :func:`simulate.experiments.prop21.judge.verdict`
thm31         the run's own points with a planted solver error that does not shrink with ``h``
              (``O(h^0)``: twice the largest noise bound at the largest ``N``); the thm31 judge
lemma_d1      the run's own units with the slogdet of ``2 J_G`` (a wrong log-determinant, off by
              ``log 2`` per coordinate); :func:`~simulate.experiments.lemma_d1.judge.verdict_from_units`
thm41         Gaussian samples whose ``log Lambda`` is off by -1 per coordinate (Lemma D.1 broken);
              the thm41 judge. (Its claim is otherwise a sample-wise identity: see "Checked identities".)
thm42         a target the construction cannot approach: the ring at radius 2, outside the tiled square
              ``[-1.5, 1.5]^2`` but for its corners; the thm42 judge
thm43_*       cells measured by the thm43 code where the claim is false: a single box at sigma = 0.3
              (P_inst -> 1), at sigma = 0.05 (p2 -> 0), a nearly uniform p_g (box side 0.45,
              sigma = 0.3: p1 -> 0); the thm43 judge (the trend classifier, :mod:`simulate.decide`)
fig3          a contracting field (one Gaussian, std 0.5: ``G(z) = 0.5 z``, ``lambda = 0.5``); the fig3 judge
fig4b         the run's own points with the errors shuffled against ``mu_bar``; the fig4 judge
fig4c         the Fig. 4(c) judge on planted records whose errors fall as ``mu_bar`` rises (must say fails),
              and on the run's own study records with the errors shuffled (no correlation left: the
              judge says inconclusive, reported as undetermined)
learned_*     (``learned_vs_exact``) the exact field with a wrong ``sigma`` (x 3) posing as the learned
              model, measured at the run's own points; its judge must not say it inherits the instability
guidance      the run's own images on the null prompt, where ``u_W = u_u`` for every ``W``: the guidance
              judge must not say that ``W`` raises the error
============  ===================================================================================

A control's ``status`` is ``"fails"`` when the judge did not confirm the claim on it (refuted), ``"holds"``
when it confirmed a false claim (the judge is broken), ``"undetermined"`` when it could not decide
(inconclusive). Each control takes seconds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Control", "run_controls", "status_of"]


@dataclass(frozen=True)
class Control:
    """One control's outcome: its name, the control status, the key number, the judge's own status."""

    name: str
    status: str
    key: str
    judge_status: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "key": self.key, "judge_status": self.judge_status}


def status_of(judge_status: str) -> str:
    """The control status from the judge's verdict status (see the module docstring)."""
    from simulate.verdict import Status, StatusKind

    kind = Status(judge_status).kind
    if kind in (StatusKind.VERIFIED, StatusKind.HOLDS_IN_REGIME):
        return "holds"
    return "fails" if kind is StatusKind.REFUTED else "undetermined"


def _ctl(name: str, verdict: Any) -> Control:
    return Control(name, status_of(verdict.status), verdict.key_number, str(verdict.status))


# ------------------------------------------------------------------------------------------ prop21
def prop21_not_differentiable(result: Any = None) -> Control:
    """Prop. 2.1 on ``f(z) = |z|`` at points with a zero coordinate: ``mu(z, s u) = 1`` at every ``s`` while
    the JVP gives ``lambda < 1`` (``d|x|/dx = 0`` at 0), so part (a) cannot converge."""
    import torch

    from simulate.experiments.prop21 import experiment as prop21
    from simulate.experiments.prop21.judge import verdict
    from theory.prop21 import check_proposition_21

    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 2, generator=g, dtype=torch.float64)
    z[:, 0] = 0.0
    u = torch.randn(6, 2, generator=g, dtype=torch.float64)
    check = check_proposition_21(torch.abs, z, u, scales=[10.0 ** -k for k in range(1, 7)], eps=1e-3, power_iters=20)
    summ = prop21.summarize_check(check, torch.diag_embed(torch.sign(z)), slice(0, 6))
    summ.update({"unit": "abs", "n": 2})
    return _ctl("f(z) = |z| at 6 points with z_1 = 0 (not differentiable)", verdict([summ], 1e-3))


# ------------------------------------------------------------------------------------------ thm31
def thm31_planted_offset(result: Any) -> Control:
    """The run's points re-checked with ``||z~ - z|| + delta`` and ``||x^ - x|| + kappa delta``, ``delta`` twice
    the largest noise bound at the largest ``N`` (an O(h^0) error: the same at every ``N``)."""
    from simulate.experiments.thm31.experiment import check_row
    from simulate.experiments.thm31.judge import judge

    records = copy.deepcopy(result.numbers["per_point"])
    for rec in records.values():
        n_max = max(rec["per_N"], key=int)
        delta = 2.0 * max(math.exp(r["log_bounds"]["log_noise_error"]) for r in rec["per_N"][n_max]["rows"])
        for N, d in rec["per_N"].items():
            d["rows"] = [check_row(r["noise_error"] + delta, r["recon_error"] + r["kappa"] * delta, L, Lp, M, int(N), r["kappa"])
                         for r, L, Lp, M in zip(d["rows"], rec["L"], rec["L_path"], rec["M"])]
        rec.update(path_end_error=0.0, M_crosscheck_rel=0.0, seconds=0.0)
    return _ctl("solver error + a constant offset (O(h^0)), the run's points", judge(None, records).overall)


# ------------------------------------------------------------------------------------------ lemma_d1
def lemma_d1_wrong_logdet(result: Any) -> Control:
    """The run's units with slogdet taken of ``2 J_G``: every pair with slogdet is off by ``log 2`` (at least
    ``log 2`` minus the measured difference)."""
    from simulate.experiments.lemma_d1.judge import verdict_from_units

    units = copy.deepcopy(result.numbers["units"])
    for u in units:
        u["max_diff"] = {p: (math.log(2.0) - d if "slogdet" in p else d) for p, d in u["max_diff"].items()}
    p = result.params
    v, _, _ = verdict_from_units(units, result.numbers["tol"], p["rtol"], p["atol"])
    return _ctl("slogdet of 2 J_G (log-determinant off by log 2 per coordinate)", v)


# ------------------------------------------------------------------------------------------ thm41
def planted_thm41_record(shift: float, n: int = 4, samples: int = 400, seed: int = 0) -> dict[str, Any]:
    """Samples of a Gaussian model with Lemma D.1 exact (``shift = 0``) or broken (``log Lambda + shift``):
    ``z ~ N(0, I_n)``, a true ``ell = (1/n) log Lambda ~ U(-1, 1)``, ``log p_g(x) = log phi(z) - n ell``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, n))
    ell = rng.uniform(-1.0, 1.0, samples)
    sq = (z ** 2).sum(1)
    log_phi = -0.5 * n * math.log(2 * math.pi) - 0.5 * sq
    wrong = (ell + shift).tolist()
    return {"field": f"gaussian model (log Lambda {shift:+g})", "n": n, "log_Lambda_ratio": wrong, "log_Lambda_divergence": wrong,
            "log_pg_x": (log_phi - n * ell).tolist(), "sq_norm_F": sq.tolist(), "max_abs_diff_log_Lambda": 0.0, "seconds": 0.0}


def thm41_wrong_log_lambda(result: Any) -> Control:
    """The thm41 judge on samples whose ``log Lambda`` is 1 nat per coordinate too small."""
    from simulate.experiments.thm41.experiment import make_options
    from simulate.experiments.thm41.judge import judge

    opts = make_options() if result is None else make_options(**{k: result.params[k] for k in ("taus", "eps_values")})
    return _ctl("log Lambda - 1 per coordinate on 400 Gaussian-model samples (Lemma D.1 broken)",
                judge(opts, [planted_thm41_record(-1.0)]).overall)


# ------------------------------------------------------------------------------------------ thm42
def thm42_outside_target(result: Any = None) -> Control:
    """The ring at radius 2 lies outside the tiled square ``[-1.5, 1.5]^2`` but for its corners: the mixtures
    of the construction (tilings of the square) cannot approach it at any m (L1 stays near 2)."""
    from simulate.experiments.thm42 import experiment as thm42

    opts = thm42.make_options(radius=2.0, ms=(4, 16, 64), n_samples=256)
    rows = [thm42.compute_unit(m, opts, thm42.sample_target(256, opts, np.random.default_rng(0)), 0)[0] for m in opts.ms]
    return _ctl("ring of radius 2, outside the tiled square [-1.5, 1.5]^2", thm42.judge(opts, rows, 0.0).overall)


# ------------------------------------------------------------------------------------------ thm43
def _thm43_control(cell: Any, claim: str, side: float = 0.1) -> Any:
    from simulate.experiments.thm43 import experiment as thm43
    from simulate.experiments.thm43.judge import judge
    from simulate.experiments.thm43.sequential import summarize

    opts = thm43.make_options(ns=(8, 32, 128), taus=(1.0,), num_points=8, num_points_p1=64, lln_nodes=0, side=side,
                              sigmas=(cell.sigma,), ms=(1,))
    recs = [summarize(cell, n, opts, [thm43.compute_unit(cell, n, opts, seed=7)]) for n in opts.ns]
    return judge(opts, [cell], {cell: recs}, {}).claims[claim]


def thm43_pinst_single_box(result: Any = None) -> Control:
    from simulate.experiments.thm43.geometry import Cell

    return _ctl("single box, sigma = 0.3, n = 8..128", _thm43_control(Cell("single", 0.3, 1), "thm43_pinst"))


def thm43_p2_single_box(result: Any = None) -> Control:
    from simulate.experiments.thm43.geometry import Cell

    return _ctl("single box, sigma = 0.05, n = 8..128", _thm43_control(Cell("single", 0.05, 1), "thm43_p2"))


def thm43_p1_nearly_uniform(result: Any = None) -> Control:
    from simulate.experiments.thm43.geometry import Cell

    return _ctl("single box of side 0.45, sigma = 0.3 (p_g nearly uniform), n = 8..128",
                _thm43_control(Cell("single", 0.3, 1), "thm43_p1", side=0.45))


# ------------------------------------------------------------------------------------------ fig3
def fig3_contracting(result: Any = None) -> Control:
    """One Gaussian of std 0.5: ``G(z) = 0.5 z`` contracts every direction."""
    from simulate.experiments.fig3 import experiment as fig3
    from simulate.experiments.fig3.judge import judge

    opts = fig3.make_options(means=((0.0, 0.0),), stds=0.5, weights=(1.0,), grid_n=21, line_n=21, n_dirs=4, green_n=5,
                             boundary_points=64, jvp_points=2)
    field = fig3.build_field(opts)
    units = {part: fig3.compute_unit(part, field, opts) for part in fig3.PARTS}
    lmap = units["lambda_map"]
    v = judge(opts, lmap["lam_x"], units["expansion"]["numbers"], {**lmap["numbers"], **units["jvp_check"]}, units["line"])
    return _ctl("contracting field (one Gaussian, std 0.5)", v.overall)


# ------------------------------------------------------------------------------------------ fig4b / fig4c
def fig4b_shuffled(result: Any) -> Control:
    """The run's per-point errors permuted against ``mu_bar`` in every pipeline, re-judged."""
    from simulate.experiments.fig4.experiment import make_options
    from simulate.experiments.fig4.judge import judge
    from simulate.stats import correlation_summary

    opts = make_options(**{k: v for k, v in result.params.items() if k not in ("full", "seed")})
    summaries = copy.deepcopy(result.numbers["pipelines"])
    rng = np.random.default_rng(0)
    for name, s in summaries.items():
        pts = result.numbers["per_point"][name]
        err = rng.permutation(np.asarray(pts["error"], dtype=float))
        s["correlation"] = correlation_summary(err, np.asarray(pts["mu_bar"], dtype=float), seed=0,
                                               n_resamples=int(opts.n_resamples), confidence=float(opts.confidence))
    return _ctl("errors shuffled against mu_bar (the run's points)", judge(opts, np.asarray(result.numbers["box"]), summaries).overall)


def fig4c_shuffled(result: Any) -> Control:
    """The Fig. 4(c) judge on the run's own study records (``result["study_dir"]``) with the latent errors
    permuted against ``mu_bar``: no correlation is left, so the judge must not confirm the claim (its interval
    then contains 0: "inconclusive", which this control reports as undetermined)."""
    import json
    from pathlib import Path

    from largemodel.experiments.fig4c.judge import judge_fig4c
    from largemodel.study.items import load_records
    from simulate.stats import correlate

    study = Path(result["study_dir"])
    meta = json.loads((study / "study.json").read_text())
    recs = load_records(study, meta.get("signature"), keys=meta.get("keys"))
    pairs = np.array([(r["mu_bar"], r["mse_latent"]) for r in recs if "mu_bar" in r and "mse_latent" in r], dtype=float)
    log_mu, log_err = np.log(pairs).T
    corr = correlate(log_mu, np.random.default_rng(0).permutation(log_err), n_boot=2000, seed=0)
    return _ctl(f"errors shuffled against mu_bar ({len(pairs)} images of the run's study)",
                judge_fig4c(corr, "shuffled study records", stand_in=False))


def fig4c_reversed(result: Any = None) -> Control:
    """48 records whose latent error falls as ``mu_bar`` rises (log-normal ``mu_bar``, noisy reversed ranks)."""
    from largemodel.experiments.fig4c.judge import judge_fig4c
    from simulate.stats import correlation_summary

    rng = np.random.default_rng(0)
    mu = np.exp(rng.normal(-0.7, 0.3, 48))
    err = np.exp(-3.0 * np.log(mu) + rng.normal(0, 0.3, 48))
    corr = correlation_summary(mu, err, seed=0, n_resamples=1000)
    return _ctl("error falling with mu_bar (48 planted records)", judge_fig4c(corr, "planted records", stand_in=False))


# ------------------------------------------------------------------------------------------ learned_vs_exact
def learned_wrong_sigma(result: Any) -> Control:
    """The learned-vs-exact judge with the exact field at ``sigma`` times ``control_sigma_factor`` posing as the
    learned model (measured by the run at the same points, the learned pipeline's divergence integral): a model
    that is known not to have the data law's instability must not be judged to inherit it."""
    from largemodel.experiments.learned_vs_exact.judge import control_verdict

    c = result.numbers["control"]
    return _ctl(f"exact field with sigma x {c['sigma_factor']:g} as the learned model ({c['regime']}, n = {c['n']})",
                control_verdict(result.numbers))


# ------------------------------------------------------------------------------------------ guidance
def guidance_null_prompt(result: Any) -> Control:
    """The guidance judge on the run's own images under the null prompt (docs/theory.md §10.9): there
    ``u_W = u_u + W (u_u - u_u) = u_u``, so ``W`` cannot change the reconstruction, and a judge that says it
    raises the error is broken."""
    from largemodel.experiments.guidance.judge import control_verdict

    return _ctl(f"null prompt, where W changes nothing ({result.numbers['images']} images of the run)",
                control_verdict(result.numbers["effects"]))


def run_controls(claim_id: str, result: Any = None) -> list[dict[str, str]]:
    """Run ``claim_id``'s controls on ``result`` (the measured run); a control that raises is reported as
    ``"error"`` (with its message), never silently dropped."""
    from reports.claims import claim

    out = []
    for fn in (globals()[name] for name in claim(claim_id).controls):
        try:
            out.append(fn(result).as_dict())
        except Exception as exc:  # a broken control must show in the report, not sink it
            out.append({"name": fn.__name__, "status": "error", "key": f"{type(exc).__name__}: {exc}", "judge_status": "-"})
    return out
