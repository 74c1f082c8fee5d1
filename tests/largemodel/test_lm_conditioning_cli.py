"""``--prompt``, ``--captions``, ``--guidance-scale`` on study, gallery, rank and explain (issue 27, item 1).

Caption files (CSV, JSONL, PIE-Bench's ``mapping_file.json`` as it ships) are read and checked before
any computing; records carry ``prompt`` and ``guidance_scale``; resume keys include them (a rerun with
another prompt or scale never reuses a record, the same one reuses all); each image is studied on its
own caption's field; ``--solver heun-diffusers`` on FLUX says it matches no pipeline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from largemodel.models.captions import check_captions, clean_pie_prompt, read_captions
from largemodel.models.load import load_model
from largemodel.models.tiny import build_tiny_folder
from largemodel.study.ode import solver_note
from reports.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_folder(tmp_path_factory.mktemp("cli") / "sd3", "sd3", text_encoders=True)


def _write_pngs(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _records(path):
    return [json.loads(x)["value"] for x in path.read_text().splitlines()[1:]]


def test_caption_files_read_in_three_formats(tmp_path):
    (tmp_path / "c.csv").write_text('file,prompt,extra\na.png,"a red, round ball",x\nsub/b.png,\n')
    assert read_captions(tmp_path / "c.csv") == {"a.png": "a red, round ball", "sub/b.png": ""}
    (tmp_path / "c.jsonl").write_text('{"file": "./a.png", "prompt": "one"}\n\n{"file": "sub\\\\b.png", "prompt": "two"}\n')
    assert read_captions(tmp_path / "c.jsonl") == {"a.png": "one", "sub/b.png": "two"}
    pie = {"000000000000": {"image_path": "0_random_140/000000000000.jpg", "original_prompt": "a [cat]  sitting on [a] mat",
                            "editing_prompt": "a [dog] sitting", "editing_instruction": "x", "blended_word": "cat dog"}}
    (tmp_path / "mapping_file.json").write_text(json.dumps(pie))
    assert read_captions(tmp_path / "mapping_file.json") == {"0_random_140/000000000000.jpg": "a cat sitting on a mat"}
    assert clean_pie_prompt("[a] b  [c]") == "a b c"
    bad = {"c.txt": "x", "d.csv": "name,text\na,b\n", "e.jsonl": '{"file": "a.png", "prompt": "x"}\n[1]\n',
           "f.jsonl": '{"file": "a.png", "prompt": "x"}\n{"file": "a.png", "prompt": "y"}\n', "g.json": '{"1": {"x": 1}}',
           "h.csv": "file,prompt\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match="--captions"):
            read_captions(tmp_path / name)
    with pytest.raises(ValueError, match="absent from --images"):
        check_captions({"a.png": "x", "z.png": "y"}, ["a.png"], ["a.png"])
    with pytest.raises(ValueError, match="1 images have no caption .first: b.png"):
        check_captions({"a.png": "x"}, ["a.png", "b.png"], ["a.png", "b.png"])


def test_study_with_captions_and_guidance_records_and_resume(folder, tmp_path, capsys):
    imgs = _write_pngs(tmp_path / "imgs", ["a.png", "sub/b.png", "c.png"])
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"file": f, "prompt": p}) + "\n"
                            for f, p in [("a.png", "a red ball"), ("sub/b.png", "a blue cube"), ("c.png", "a red ball")]))
    out = tmp_path / "out"
    argv = ["largemodel", "study", "--model", str(folder), "--images", str(imgs), "--out", str(out), "--steps", "3",
            "--perturbations", "2", "--jvp-directions", "0", "--images-per-batch", "3", "--device", "cpu",
            "--dtype", "fp32", "--no-progress", "--captions", str(caps)]
    assert main([*argv, "--guidance-scale", "3.5"]) == 0
    recs = _records(out / "records.jsonl")
    assert {(r["key"], r["prompt"], r["guidance_scale"]) for r in recs} == {
        ("a.png", "a red ball", 3.5), ("sub/b.png", "a blue cube", 3.5), ("c.png", "a red ball", 3.5)}
    assert len(list((out / "prompt_cache").iterdir())) == 3  # "", and the two distinct captions
    # the record of a.png is the study of a.png alone on its caption's guided field
    m = load_model(folder, device="cpu", dtype="float32", prompt="a red ball", guidance_scale=3.5)
    from largemodel.study.items import items_from_folder
    from largemodel.study.runner import StudyConfig, run_study

    alone = tmp_path / "alone"
    (item,) = [it for it in items_from_folder(imgs, 3, 0, 16, 3) if it.key == "a.png"]
    run_study(m, [item], alone, StudyConfig(steps=3, perturbations=2, jvp_directions=0), progress=False)
    (ref,) = _records(alone / "records.jsonl")
    (ours,) = [r for r in recs if r["key"] == "a.png"]
    assert ref["record_key"] == ours["record_key"] and ref["mu_bar"] == pytest.approx(ours["mu_bar"], rel=1e-5)
    assert ref["mse_latent"] == pytest.approx(ours["mse_latent"], rel=1e-5)
    assert main([*argv, "--guidance-scale", "3.5"]) == 0  # the same run: every record reused
    assert len(_records(out / "records.jsonl")) == 3
    assert main(argv) == 0  # another W: studied afresh, and the records of W = 3.5 kept
    again = _records(out / "records.jsonl")
    assert len(again) == 6 and {r["guidance_scale"] for r in again[3:]} == {1.0}
    assert len({r["record_key"] for r in again}) == 6
    capsys.readouterr()


def test_bad_conditioning_flags_stop_before_loading(folder, tmp_path, capsys):
    imgs = _write_pngs(tmp_path / "imgs", ["a.png", "b.png"])
    caps = tmp_path / "caps.csv"
    caps.write_text("file,prompt\na.png,x\n")
    for cmd in ("study", "gallery", "rank", "explain"):
        base = ["largemodel", cmd, "--model", str(folder), "--images", str(imgs), "--out", str(tmp_path / f"o-{cmd}")]
        for extra, needle in ((["--guidance-scale", "0.5"], "--guidance-scale"),
                              (["--prompt", "x", "--captions", str(caps)], "--prompt and --captions"),
                              (["--captions", str(caps)], "1 images have no caption"),
                              (["--captions", str(tmp_path / "none.csv")], "--captions: cannot read")):
            assert main([*base, *extra]) == 2, (cmd, extra)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and needle in err[0], (cmd, err)
        assert not (tmp_path / f"o-{cmd}" / "prompt_cache").exists()  # nothing was computed


def test_rank_takes_prompts_guidance_and_flux_heun_note(folder, tmp_path, capsys):
    imgs = _write_pngs(tmp_path / "imgs", ["a.png", "b.png"])
    out = tmp_path / "out"
    base = ["largemodel", "rank", "--model", str(folder), "--images", str(imgs), "--out", str(out), "--steps", "2",
            "--device", "cpu", "--dtype", "fp32", "--gallery", "0", "--guidance", "2.0"]
    assert main([*base, "--prompt", "a photo", "--guidance-scale", "2"]) == 0
    recs = _records(out / "scores.jsonl")
    assert len(recs) == 2 and {(r["prompt"], r["guidance_scale"]) for r in recs} == {("a photo", 2.0)}
    assert main(base) == 0  # the null prompt: new records
    assert len(_records(out / "scores.jsonl")) == 4
    capsys.readouterr()
    assert solver_note("heun-diffusers", "flux") is not None and "FluxPipeline" in solver_note("heun-diffusers", "flux")
    assert solver_note("heun-diffusers", "sd3") is None and solver_note("euler", "flux") is None
    flux = build_tiny_folder(tmp_path / "flux", "flux")
    assert main(["largemodel", "rank", "--model", str(flux), "--images", str(imgs), "--out", str(tmp_path / "f"),
                 "--steps", "2", "--device", "cpu", "--dtype", "fp32", "--gallery", "0", "--inversion-only",
                 "--solver", "heun-diffusers"]) == 0
    err = capsys.readouterr().err
    assert err.count("pfode: warning: --solver heun-diffusers on FLUX") == 1


def test_explain_records_carry_the_conditioning(folder, tmp_path, capsys):
    imgs = _write_pngs(tmp_path / "imgs", ["a.png", "b.png"])
    caps = tmp_path / "caps.csv"
    caps.write_text("file,prompt\na.png,a cat\nb.png,\n")
    out = tmp_path / "out"
    argv = ["largemodel", "explain", "--model", str(folder), "--images", str(imgs), "--out", str(out), "--steps", "3",
            "--n-images", "2", "--perturbations", "2", "--sizes", "1e-3,1e-2", "--fixed-size", "1e-2", "--causal-directions",
            "1", "--power-iters", "0", "--budgets", "1", "--no-floor", "--no-log-lambda", "--device", "cpu",
            "--dtype", "fp32", "--captions", str(caps), "--guidance-scale", "1.5"]
    assert main(argv) == 0
    recs = _records(out / "explain.jsonl")
    assert sorted((r["name"], r["prompt"], r["guidance_scale"]) for r in recs) == [("a.png", "a cat", 1.5),
                                                                                   ("b.png", "", 1.5)]
