"""largemodel/ study: resume without losing or repeating an image, process split and merge,
summary statistics, and the CLI (one-line errors, end-to-end run on a tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from largemodel.study.runner import StudyConfig, load_records, recon_path, run_study, summarize
from reports.cli import main
from lm_fixtures import model, random_items, tiny  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]

CFG = StudyConfig(steps=4, perturbations=3, jvp_directions=1, eps_rms=1e-2, log_lambda="hutchinson", images_per_batch=2)






def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()[1:]]


def test_interrupted_study_resumes_each_image_exactly_once(model, tmp_path):
    items = random_items(5)
    seen = []

    def stop_after_three(key, rec):
        seen.append(key)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(model, items, tmp_path, CFG, progress=False, on_record=stop_after_three)
    path = tmp_path / "records.jsonl"
    assert len(_lines(path)) == 3
    with path.open("a") as fh:  # a line cut in the middle by a kill
        fh.write('{"key": "img04.png", "value": {"mse')
    resumed = []
    run_study(model, items, tmp_path, CFG, progress=False, on_record=lambda k, r: resumed.append(k))
    assert sorted(resumed) == ["img03.png", "img04.png"]
    keys = [r["key"] for r in load_records(tmp_path)]
    assert keys == sorted(it.key for it in items)
    again = []
    run_study(model, items, tmp_path, CFG, progress=False, on_record=lambda k, r: again.append(k))
    assert again == []


def test_results_do_not_depend_on_batching_or_interruption(model, tmp_path):
    items = random_items(3)
    run_study(model, items, tmp_path / "a", CFG, progress=False)
    cfg_b = StudyConfig(**{**CFG.__dict__, "images_per_batch": 1, "batch_size": 2})
    run_study(model, items, tmp_path / "b", cfg_b, progress=False)
    a, b = load_records(tmp_path / "a"), load_records(tmp_path / "b")
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(ra["mse_latent"], rb["mse_latent"], rtol=1e-4)
        assert ra["mu_bar"] > 0 and rb["mu_bar"] > 0
        # each image draws from its own generator: the same perturbations whatever the grouping
        for key in ("mu_bar", "lambda_jvp", "log_Lambda"):
            np.testing.assert_allclose(ra[key], rb[key], rtol=1e-5, err_msg=key)


def test_processes_split_the_images_and_merge(model, tmp_path):
    import threading

    items = random_items(5)
    got = {0: [], 1: []}
    cfg = StudyConfig(**{**CFG.__dict__, "jvp_directions": 0, "log_lambda": "none"})  # forward AD is not thread-safe
    run = lambda rank: run_study(model, items, tmp_path, cfg, rank=rank, world=2, run_id="launch-1",  # noqa: E731
                                 progress=False, on_record=lambda k, r: got[rank].append(k))
    other = threading.Thread(target=run, args=(1,))
    other.start()
    run(0)  # rank 0 returns once rank 1's records are in
    other.join()
    assert not set(got[0]) & set(got[1]) and len(got[0]) + len(got[1]) == 5
    assert [r["key"] for r in load_records(tmp_path)] == [it.key for it in items]


def test_changed_parameters_start_a_new_study(model, tmp_path):
    items = random_items(2)
    run_study(model, items, tmp_path, CFG, progress=False)
    redone = []
    run_study(model, items, tmp_path, StudyConfig(**{**CFG.__dict__, "steps": 5}), progress=False,
              on_record=lambda k, r: redone.append(k))
    assert len(redone) == 2 and list(tmp_path.glob("records.stale-*.jsonl"))


def test_record_contents_and_summary(model, tmp_path):
    run_study(model, random_items(4), tmp_path, CFG, progress=False)
    recs = load_records(tmp_path)
    n = 4 * 8 * 8
    for r in recs:
        assert r["n"] == n and r["nfe_per_map"] == 4
        assert 0 < r["mse_latent"] and r["psnr"] == pytest.approx(-10 * np.log10(r["mse_pixel"]))
        assert np.isfinite(r["log_Lambda"]) and r["log_p_g"] < 0
        assert r["mu_bar"] <= r["mu_max"] + 1e-12
    s = summarize(tmp_path, n_boot=100)
    assert s["n_images"] == 4
    c = s["correlations"]["mu_bar~mse_latent"]
    assert -1 <= c["spearman_rho"] <= 1 and c["n"] == 4
    assert (tmp_path / "scatter_mu_vs_error.png").stat().st_size > 0
    assert recon_path(tmp_path, recs[0]["record_key"]).is_file()


def test_config_errors():
    with pytest.raises(ValueError, match="solver"):
        StudyConfig(solver="rk4")
    with pytest.raises(ValueError, match="--eps-rms"):
        StudyConfig(eps_rms=0)
    with pytest.raises(ValueError, match="log_lambda"):
        StudyConfig(log_lambda="maybe")


# ---- CLI -----------------------------------------------------------------------------------


def _image_folder(root, n=4, size=20):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 6, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def _one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_cli_bad_inputs_one_line(tiny, tmp_path, capsys):
    imgs = _image_folder(tmp_path / "imgs")
    base = ["largemodel", "study", "--out", str(tmp_path / "o"), "--device", "cpu"]
    _one_line_error(capsys, base + ["--model", str(tmp_path / "none"), "--images", str(imgs)], "does not exist")
    _one_line_error(capsys, base + ["--model", str(imgs), "--images", str(imgs)], "not a diffusers model folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, base + ["--model", str(tiny), "--images", str(tmp_path / "empty")], "no images")
    (tmp_path / "bad").mkdir()  # one unreadable image is skipped (test_lm_resume_keys); only such: an error
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
    _one_line_error(capsys, base + ["--model", str(tiny), "--images", str(tmp_path / "bad"), "--steps", "2"],
                    "cannot read image")
    _one_line_error(capsys, base + ["--model", str(tiny), "--images", str(imgs), "--solver", "rk4"], "invalid choice")


def test_cli_study_and_gallery_end_to_end(tiny, tmp_path, capsys):
    imgs = _image_folder(tmp_path / "imgs", n=4)
    out = tmp_path / "study"
    argv = ["largemodel", "study", "--model", str(tiny), "--images", str(imgs), "--out", str(out), "--device", "cpu",
            "--n-images", "3", "--steps", "3", "--perturbations", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Spearman(mu_bar, error)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 3
    assert main(argv) == 0  # resumes: nothing to do, same summary
    assert json.loads((out / "summary.json").read_text())["n_images"] == 3
    gal = tmp_path / "gallery"
    assert main(["largemodel", "gallery", "--model", str(tiny), "--images", str(imgs), "--out", str(gal), "--device",
                 "cpu", "--n-images", "3", "--steps", "3", "--top", "2", "--no-progress"]) == 0
    assert (gal / "gallery.png").stat().st_size > 0


def test_train_then_study_end_to_end(tmp_path, capsys):
    """Issue 6's path on this machine: train a tiny model for a few seconds through the CLI, then
    run the very same study on two held-out images (exported as PNGs, read back as users do)."""
    from largemodel.models.images import to_uint8
    from largemodel.training.train import model_dataset

    model_dir = tmp_path / "digits"
    assert main(["largemodel", "train", "--data", "digits", "--size", "8", "--train-images", "64", "--steps", "20",
                 "--out", str(model_dir), "--no-progress"]) == 0
    held = model_dataset(model_dir).heldout[:2]
    imgs = tmp_path / "heldout"
    imgs.mkdir()
    for i, im in enumerate(to_uint8(held)):
        Image.fromarray(im[:, :, 0]).save(imgs / f"h{i}.png")
    out = tmp_path / "study"
    assert main(["largemodel", "study", "--model", str(model_dir), "--images", str(imgs), "--out", str(out),
                 "--device", "cpu", "--n-images", "2", "--steps", "5", "--perturbations", "2",
                 "--log-lambda", "exact", "--no-progress"]) == 0
    recs = load_records(out)
    assert [r["key"] for r in recs] == ["h0.png", "h1.png"]
    for r in recs:
        assert r["n"] == 64 and np.isfinite(r["log_Lambda"]) and r["mu_bar"] > 0
        assert r["mse_pixel"] < 4.0  # images in [-1, 1]: a real reconstruction, not garbage
