"""Guidance as a study axis (``largemodel.study.guidance``; ``--guidance-scales`` on study and explain)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from largemodel.study.guidance import paired_change, parse_guidance_scales
from reports.cli import main


def test_parse_guidance_scales() -> None:
    assert parse_guidance_scales("7, 1,3.5") == (1.0, 3.5, 7.0)
    assert parse_guidance_scales(None) is None
    for bad, match in (("1", "at least two"), ("1,,3", "at least two"), ("1,0.5", "'0.5' is not a finite number >= 1"),
                       ("1,nan", "'nan'"), ("1,x", "'x'"), ("1,3,1", "repeated")):
        with pytest.raises(ValueError, match=match):
            parse_guidance_scales(bad)


def test_paired_change_decides_with_intervals() -> None:
    """The sign test says increases / decreases only when the Clopper-Pearson interval of the share rising
    clears 1/2, undetermined when it straddles it, unchanged on rounding-level ties (the null prompt)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, 24)
    assert paired_change(base + 0.1, base)["status"] == "increases"
    assert paired_change(base - 0.1, base)["status"] == "decreases"
    signs = np.where(np.arange(24) % 2 == 0, 1.0, -1.0)  # 12 up, 12 down
    mixed = paired_change(base + 0.1 * signs, base)
    assert mixed["status"] == "undetermined" and mixed["frac_up_ci"][0] < 0.5 < mixed["frac_up_ci"][1]
    tied = paired_change(base * (1 + 1e-7 * signs), base)  # float32-rounding-size differences
    assert tied["status"] == "unchanged" and tied["ties"] == 24
    few = paired_change(base[:4] + 0.1, base[:4])  # 4/4 up: [0.40, 1] straddles 1/2
    assert few["status"] == "undetermined"
    lo, hi = paired_change(base + 0.1, base)["median_ci"]
    assert lo <= 0.1 + 1e-12 and hi >= 0.1 - 1e-12


def _digits_images(root, n):
    from largemodel.training.cache import SPECS, shipped_model
    from largemodel.training.options import config_key, train_config
    from largemodel.training.train import model_dataset

    data, size, k, steps, _ = next(s for s in SPECS if s[4])
    folder = shipped_model(data, size, config_key(train_config(data, size, k, steps=steps, class_conditional=True)))
    d = model_dataset(folder)
    root.mkdir()
    lines = ["file,prompt"]
    for i in range(n):
        Image.fromarray(((d.heldout[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8)).save(root / f"h{i}.png")
        lines.append(f"h{i}.png,digit {int(d.labels_heldout[i])}")
    (root.parent / "caps.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.usefixtures("single_thread")
def test_study_guidance_axis_on_the_class_model(tmp_path, capsys) -> None:
    """One run per (mode, W), a row per image and condition, and on the null prompt W changes nothing."""
    model = _digits_images(tmp_path / "imgs", 3)
    argv = ["largemodel", "study", "--model", str(model), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
            "--captions", str(tmp_path / "caps.csv"), "--guidance-scales", "1,4", "--steps", "8", "--perturbations", "2",
            "--log-lambda", "hutchinson", "--n-images", "3", "--images-per-batch", "3", "--jvp-directions", "0",
            "--no-progress"]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "o" / "guidance.csv").open()))
    assert len(rows) == 3 * 2 * 2 and {r["mode"] for r in rows} == {"empty", "caption"}
    assert {r["prompt"] for r in rows if r["mode"] == "caption"} <= {f"digit {c}" for c in range(10)}
    effects = json.loads((tmp_path / "o" / "guidance.json").read_text())
    assert all(effects["vs_reference"][f"{m}|empty|4"]["status"] == "unchanged" for m in ("mse_latent", "mu_bar", "log_Lambda"))
    assert (tmp_path / "o" / "guidance.png").is_file()
    for sub in ("empty_w1", "empty_w4", "caption_w1", "caption_w4"):
        assert (tmp_path / "o" / sub / "study.json").is_file()
    # the flags exclude each other, checked before any model loads
    assert main([*argv[:-1], "--guidance-scale", "2", "--no-progress"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*argv[:9], "--guidance-scales", "1,0.5"]) == 2


@pytest.mark.usefixtures("single_thread")
def test_explain_guidance_axis(tmp_path) -> None:
    """``explain --guidance-scales`` runs explain per (mode, W) and writes the same table and figure."""
    model = _digits_images(tmp_path / "imgs", 2)
    argv = ["largemodel", "explain", "--model", str(model), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
            "--captions", str(tmp_path / "caps.csv"), "--guidance-scales", "1,3", "--steps", "6", "--n-images", "2",
            "--budgets", "1", "--no-floor", "--power-iters", "0", "--causal-directions", "1", "--perturbations", "2",
            "--images-per-batch", "2"]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "o" / "guidance.csv").open()))
    assert len(rows) == 2 * 2 * 2 and all(r["mu_bar"] and r["log_Lambda"] for r in rows)
    assert (tmp_path / "o" / "caption_w3" / "explain.jsonl").is_file() and (tmp_path / "o" / "guidance.png").is_file()
    assert main([*argv, "--resolutions", "8,16"]) == 2  # the axis takes one resolution


@pytest.mark.usefixtures("single_thread")
def test_report_section_and_its_control(tmp_path) -> None:
    """The report's guidance section on the shipped class model (8 images, 8 steps): the judge decides on the
    class prompt, and on the null prompt (W changes nothing) its control says fails."""
    from reports.largemodel_suite import run_guidance_section

    import largemodel.experiments.guidance.experiment as exp

    small = exp.make_options(images=8, steps=8, perturbations=2)
    orig = exp.make_options
    try:
        exp.make_options = lambda full=False, **kw: small  # noqa: E731
        rows, data = run_guidance_section(tmp_path)
    finally:
        exp.make_options = orig
    [row] = rows
    assert row.claim_id == "guidance" and str(row.status).split(":")[0] in ("verified", "refuted", "inconclusive")
    assert [c["status"] for c in row.controls] == ["fails"] and "all ties" in row.controls[0]["key"]
    assert "## Guidance and prompt" in data["markdown"] and "| latent MSE | caption |" in data["markdown"]
    # the null prompt (the control) is measured at the smallest and the largest W only
    assert sorted(p.name for p in tmp_path.rglob("empty_w*") if p.is_dir()) == ["empty_w1", "empty_w7"]
    assert sorted(p.name for p in tmp_path.rglob("caption_w*") if p.is_dir()) == ["caption_w1", "caption_w3.5", "caption_w7"]
    assert "mse_latent|empty|3.5" not in data["effects"]["medians"] and "mse_latent|empty|7" in data["effects"]["medians"]


def test_guidance_null_scales_checked() -> None:
    """The control's scales must hold the pair its judge compares (smallest and largest W)."""
    import largemodel.experiments.guidance.experiment as exp

    with pytest.raises(ValueError, match="^null_scales"):
        exp.make_options(null_scales=(1.0, 3.5))
    with pytest.raises(ValueError, match="^null_scales"):
        exp.make_options(null_scales=(1.0, 5.0, 7.0))
    assert exp.FULL.null_scales == exp.FULL.scales
