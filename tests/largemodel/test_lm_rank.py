"""Which images fail (issue 15): metrics against scikit-learn, one-pass scores against the study,
the ranking CLI (sorted, resumable by content hash, locked), and instability maps."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats as sps
from sklearn.metrics import average_precision_score, roc_auc_score

from largemodel.diagnose.maps import instability_map
from largemodel.study.ode import invert
from largemodel.diagnose.predict import (
    auroc_vectorized,
    average_precision_vectorized,
    classification_metrics,
    evaluate_scores,
    worst_fraction_labels,
)
from largemodel.diagnose.scores import INVERSION_SCORES, ONE_PASS_SCORES, ScoreConfig, one_pass_scores, score_costs, score_group, image_generators
from largemodel.study.runner import StudyConfig, load_records, pixel_digest, record_key, run_study
from reports.cli import main
from lm_fixtures import model, random_items, tiny  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]

CFG = StudyConfig(steps=4, perturbations=3, jvp_directions=1, eps_rms=1e-2, log_lambda="hutchinson", probes=2,
                  images_per_batch=2, seed=3)






# ---- metrics against scikit-learn ----------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_ap_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((4, 60)) < 0.2).astype(float)
    y[:, 0], y[:, 1] = 1.0, 0.0
    s = np.round(rng.normal(size=(4, 60)) + y, 1)  # rounding makes ties
    for row in range(4):
        assert auroc_vectorized(y[row], s[row]) == pytest.approx(roc_auc_score(y[row], s[row]), abs=1e-12)
        assert average_precision_vectorized(y[row], s[row]) == pytest.approx(
            average_precision_score(y[row], s[row]), abs=1e-12)
    batched = auroc_vectorized(y, s, axis=-1)
    assert np.allclose(batched, [roc_auc_score(a, b) for a, b in zip(y, s)])
    assert np.allclose(average_precision_vectorized(y, s), [average_precision_score(a, b) for a, b in zip(y, s)])


def test_bootstrap_intervals_match_a_sklearn_bootstrap_and_cover_the_truth():
    # binormal scores: AUROC = Phi(d / sqrt 2)
    rng = np.random.default_rng(0)
    d, m = 1.0, 300
    y = (rng.random(m) < 0.25).astype(float)
    s = rng.normal(size=m) + d * y
    res = classification_metrics(y, s, n_boot=1000, seed=1)
    assert res["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert res["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    truth = sps.norm.cdf(d / math.sqrt(2))
    lo, hi = res["auroc_ci"]
    assert lo < res["auroc"] < hi and lo < truth < hi
    # an independent percentile bootstrap with scikit-learn gives about the same interval
    boot_rng = np.random.default_rng(7)
    aucs, aps = [], []
    for _ in range(400):
        idx = boot_rng.integers(0, m, m)
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(roc_auc_score(y[idx], s[idx]))
        aps.append(average_precision_score(y[idx], s[idx]))
    for name, values in (("auroc", aucs), ("ap", aps)):
        ref = np.quantile(values, [0.025, 0.975])
        assert np.allclose(res[f"{name}_ci"], ref, atol=0.035), (name, res[f"{name}_ci"], ref)


def test_worst_fraction_labels_and_evaluation_on_synthetic_records():
    rng = np.random.default_rng(0)
    m = 200
    err = np.exp(rng.normal(size=m))
    y = worst_fraction_labels(err, 0.1)
    assert y.sum() == 20 and err[y == 1].min() > err[y == 0].max()
    recs = [{"mse_latent": float(e), "perfect": float(np.log(e)), "noise": float(rng.normal()),
             "a": float(np.log(e) + rng.normal()), "b": float(np.log(e) + rng.normal())} for e in err]
    res = evaluate_scores(recs, ["perfect", "noise", "a"], combine=["a", "b"], n_boot=300)
    sc = res["scores"]
    assert sc["perfect"]["auroc"] == 1.0 and sc["perfect"]["spearman"] == pytest.approx(1.0)
    assert sc["noise"]["auroc_ci"][0] < 0.5 < sc["noise"]["auroc_ci"][1]
    # two independent noisy copies of log e combine into a better predictor (out of fold)
    assert sc["combined_ridge"]["spearman"] > sc["a"]["spearman"]
    assert len(res["values"]["combined_logistic"]) == m


# ---- one-pass scores ------------------------------------------------------------------------
def test_one_pass_scores_equal_the_study_values(model, tmp_path):
    items = random_items(4)
    run_study(model, items, tmp_path, CFG, progress=False, save_images=False)
    study = {r["key"]: r for r in load_records(tmp_path)}
    cfg = ScoreConfig(steps=CFG.steps, probes=CFG.probes, seed=CFG.seed)
    for start in range(0, 4, CFG.images_per_batch):
        group = items[start : start + CFG.images_per_batch]
        imgs = torch.stack([it.load() for it in group])
        recs, _ = score_group(model, imgs, cfg, image_generators(CFG.seed, [record_key(it.key, it.content_hash or pixel_digest(it.load())) for it in group]),
                              perturbations=CFG.perturbations, eps_rms=CFG.eps_rms, jvp_directions=CFG.jvp_directions)
        for it, rec in zip(group, recs):
            ref = study[it.key]
            for key in ("log_Lambda", "log_p_g", "z_norm2_over_n", "mse_latent", "mu_bar", "lambda_jvp"):
                assert rec[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-8), key


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_velocity_scores_equal_a_plain_inversion(model, solver):
    x = model.encode(torch.stack([it.load() for it in random_items(2, seed=5)]))
    sig = model.sigmas(5)
    got = one_pass_scores(model.velocity, x, sig, ScoreConfig(steps=5, solver=solver, probes=3),
                          torch.Generator().manual_seed(0))
    # independent: step the solver by hand, keeping the on-path velocities u_i = u(x_i, s_i)
    s = sig.flip(0)
    xi, us = x, []
    with torch.no_grad():
        for i in range(5):
            h = float(s[i + 1] - s[i])
            u0 = model.velocity(xi, s[i])
            us.append(u0.flatten(1).to(torch.float64))
            if solver == "euler":
                xi = xi + h * u0
            else:
                u1 = model.velocity(xi + h * u0, s[i + 1])
                xi = xi + 0.5 * h * (u0 + u1)
    norms = torch.stack([u.norm(dim=1) for u in us], 1)
    n = x[0].numel()
    torch.testing.assert_close(got["velocity_norms"], norms, rtol=1e-5, atol=1e-6)
    change = sum(float(s[i + 1] - s[i]) * (us[i + 1] - us[i]).norm(dim=1) for i in range(4)) / math.sqrt(n)
    torch.testing.assert_close(got["velocity_change"], change, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["z"], invert(model.velocity, x, sig, solver=solver), rtol=1e-5, atol=1e-5)
    assert set(ONE_PASS_SCORES) <= set(got)


def test_inversion_only_gives_the_same_inversion_scores(model):
    x = model.encode(torch.stack([it.load() for it in random_items(2, seed=6)]))
    sig = model.sigmas(4)
    full = one_pass_scores(model.velocity, x, sig, ScoreConfig(steps=4, probes=2), torch.Generator().manual_seed(0))
    plain = one_pass_scores(model.velocity, x, sig, ScoreConfig(steps=4, divergence=False), None)
    assert set(plain) >= set(INVERSION_SCORES) and "log_Lambda" not in plain
    for key in INVERSION_SCORES:
        torch.testing.assert_close(plain[key], full[key], rtol=1e-5, atol=1e-7)


def test_costs_are_relative_to_one_reconstruction():
    c = score_costs(100, "euler", 4, perturbations=8)
    assert c["z_norm2_over_n"]["per_reconstruction"] == 0.5
    assert c["mu_bar"]["per_reconstruction"] == 5.0
    assert c["log_Lambda"]["evaluations"] == 3 * 4 * 100


# ---- the rank CLI ---------------------------------------------------------------------------
def _write_pngs(folder, n, seed=0, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"im{start + i:02d}.png")


def _ranking(out):
    with (out / "ranking.csv").open() as fh:
        return list(csv.DictReader(fh))


def _scored_keys(out):
    lines = (out / "scores.jsonl").read_text().splitlines()[1:]
    return [json.loads(x)["key"] for x in lines]


def test_rank_cli_sorted_resumable_and_verified(tiny, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    out = imgs / "ranked"  # inside the image folder: its own PNGs must not be ranked on a rerun
    _write_pngs(imgs, 5)
    argv = ["largemodel", "rank", "--model", str(tiny), "--images", str(imgs), "--out", str(out), "--steps", "3",
            "--probes", "2", "--images-per-batch", "2", "--device", "cpu", "--dtype", "fp32"]
    assert main([*argv, "--verify", "1", "--gallery", "3"]) == 0
    rows = _ranking(out)
    risks = [float(r["risk"]) for r in rows]
    assert len(rows) == 5 and risks == sorted(risks, reverse=True)
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["risk"] == r["velocity_change"] for r in rows)
    assert (out / "gallery_riskiest.png").is_file() and (out / "verify.png").is_file()
    with (out / "verify.csv").open() as fh:
        assert [r["group"] for r in csv.DictReader(fh)] == ["top", "bottom"]
    first = _scored_keys(out)
    assert len(first) == 5
    # rename one image and add one: only the new content is scored; the renamed one keeps its record
    (imgs / "im00.png").rename(imgs / "renamed.png")
    _write_pngs(imgs, 1, seed=9, start=7)
    assert main(argv) == 0
    again = _scored_keys(out)
    assert again[:5] == first and len(again) == 6
    rows2 = _ranking(out)
    assert len(rows2) == 6 and "renamed.png" in {r["file"] for r in rows2}
    by_hash = {r["sha256"]: r["risk"] for r in rows}
    assert all(by_hash[r["sha256"]] == r["risk"] for r in rows2 if r["sha256"] in by_hash)
    risks2 = [float(r["risk"]) for r in rows2]
    assert risks2 == sorted(risks2, reverse=True)


def test_rank_cli_bad_input_and_busy_folder(tiny, tmp_path, capsys):
    imgs, out = tmp_path / "imgs", tmp_path / "out"
    _write_pngs(imgs, 2)
    base = ["largemodel", "rank", "--model", str(tiny), "--images", str(imgs), "--out", str(out)]
    assert main([*base, "--verify", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--verify" in err[0]
    assert main([*base, "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main([*base, "--inversion-only", "--risk", "log_Lambda"]) == 2
    assert "--inversion-only" in capsys.readouterr().err
    assert main([*base, "--inversion-only", "--steps", "2"]) == 0
    header = (out / "ranking.csv").read_text().splitlines()[0].split(",")
    assert header == ["rank", "file", "sha256", "risk", *INVERSION_SCORES]
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom simulate.store import output_lock\n"
         f"with output_lock({str(out)!r}, command='another run'):\n    print('locked', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main([*base, "--steps", "2"]) == 2
        assert "in use by another pfode run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


# ---- instability maps -----------------------------------------------------------------------
def test_maps_have_the_image_size_and_the_study_mu_bar(model, tmp_path):
    items = random_items(1, seed=4)
    cfg = StudyConfig(**{**CFG.__dict__, "images_per_batch": 1})
    run_study(model, items, tmp_path, cfg, progress=False, save_images=False)
    (ref,) = load_records(tmp_path)
    (ref,) = load_records(tmp_path)
    m = instability_map(model, items[0].load(), ref["record_key"], cfg)
    assert m["instability_map"].shape == (16, 16) and m["error_map"].shape == (16, 16)
    assert m["mu_bar"] == pytest.approx(ref["mu_bar"], rel=1e-5)
    assert np.isfinite(m["instability_map"]).all() and (m["instability_map"] >= 0).all()
    assert -1.0 <= m["spatial_spearman"] <= 1.0


@pytest.mark.slow
def test_failure_section_on_the_trained_digits_model(tmp_path):
    """The report's measurement (trains the digits model once if the cache lacks it; minutes)."""
    from reports.failure_suite import run_failure_section

    data = run_failure_section(tmp_path, quick=True)
    res = data["result"]
    assert res["n"] >= 200 and res["positives"] == math.ceil(res["n"] / 10)
    assert set(ONE_PASS_SCORES) | {"mu_bar", "combined_logistic", "combined_ridge"} <= set(res["scores"])
    best = max(res["scores"][k]["auroc_ci"][0] for k in ONE_PASS_SCORES)
    assert best > 0.5  # some one-pass score predicts the worst decile better than chance
    assert "| score |" in data["markdown"] and (tmp_path / data["figures"][0]).is_file()


def test_rank_gallery_zero_writes_no_gallery(tiny, tmp_path, capsys):
    """``--gallery 0`` is "no gallery" (as ``--verify 0`` is no verification): the ranking is written,
    the gallery is not; a negative count is refused by the parser, naming the flag."""
    imgs, out = tmp_path / "imgs", tmp_path / "ranked"
    _write_pngs(imgs, 2)
    argv = ["largemodel", "rank", "--model", str(tiny), "--images", str(imgs), "--out", str(out), "--steps", "2",
            "--inversion-only", "--device", "cpu", "--dtype", "fp32"]
    assert main([*argv, "--gallery", "0"]) == 0
    assert len(_ranking(out)) == 2 and not (out / "gallery_riskiest.png").exists()
    assert "gallery_riskiest" not in capsys.readouterr().out
    assert main([*argv, "--gallery", "1"]) == 0  # the control: a positive count writes it
    assert (out / "gallery_riskiest.png").is_file()


@pytest.mark.parametrize("argv, flag", [
    (["rank", "--gallery", "-1"], "--gallery"),
    (["rank", "--images-per-batch", "0"], "--images-per-batch"),
    (["rank", "--verify", "-1"], "--verify"),
    (["explain", "--n-images", "0"], "--n-images"),
    (["explain", "--images-per-batch", "0"], "--images-per-batch"),
    (["explain", "--causal-directions", "0"], "--causal-directions"),  # ExplainConfig needs >= 1: same bound
])
def test_rank_and_explain_bounds_come_from_the_flag_table(argv, flag, tmp_path, capsys):
    """Refused while parsing (``reports.cli_checks.FLAG_RULES``), before the model folder is even looked at."""
    missing = tmp_path / "no_such_model"
    full = ["largemodel", argv[0], "--model", str(missing), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
            *argv[1:]]
    assert main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].count(f"{flag} must be") == 1, err
