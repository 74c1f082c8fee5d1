"""Issue 12 (resume keys, unreadable inputs): a study's records are keyed on image content, the
summary covers the current run only, reconstruction files never collide, unreadable images are
skipped without shifting the seeded subset, and bad model folders are refused naming the file.

Each test fails on the code before the fix (name-keyed records, flattened file names, NaN images
loaded as black, a corrupt image stopping the study, ``{}`` scheduler configs accepted, a
``SafetensorError`` escaping)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from largemodel.models.folder import ModelFolderError, inspect_folder
from largemodel.models.images import load_image, select_images
from largemodel.study.runner import (
    ImageItem,
    StudyConfig,
    items_from_folder,
    load_records,
    recon_path,
    run_study,
    summarize,
)
from reports.cli import main
from lm_fixtures import model, random_items, tiny  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]

CFG = StudyConfig(steps=2, perturbations=2, jvp_directions=0, eps_rms=1e-2)






def _png_folder(root: Path, names: list[str], seed: int, size: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name)
    return root


# ---- resume keyed on content ----------------------------------------------------------------


def test_same_names_other_pixels_are_studied_again(model, tmp_path: Path) -> None:
    names = ["img0.png", "img1.png"]
    run_study(model, random_items(names, 0), tmp_path, CFG, progress=False)
    first = {r["key"]: r["mse_latent"] for r in load_records(tmp_path)}
    again: list[str] = []
    run_study(model, random_items(names, 0), tmp_path, CFG, progress=False, on_record=lambda k, r: again.append(k))
    assert again == []  # same content: resumed, nothing recomputed
    redone: list[str] = []
    run_study(model, random_items(names, 1), tmp_path, CFG, progress=False, on_record=lambda k, r: redone.append(k))
    assert sorted(redone) == names  # same names, other pixels: recomputed
    s = summarize(tmp_path, n_boot=10)
    assert s["n_images"] == 2
    latest = {r["key"]: r["mse_latent"] for r in load_records(tmp_path, keys=json.loads((tmp_path / "study.json").read_text())["keys"])}
    assert all(latest[n] != first[n] for n in names)


def test_other_image_folder_with_the_same_names_is_studied_again(model, tmp_path: Path) -> None:
    names = ["a.png", "b.png"]
    one, two = _png_folder(tmp_path / "one", names, 0), _png_folder(tmp_path / "two", names, 1)
    out = tmp_path / "out"
    run_study(model, items_from_folder(one, 2, 0, 16, 3), out, CFG, progress=False)
    redone: list[str] = []
    run_study(model, items_from_folder(two, 2, 0, 16, 3), out, CFG, progress=False,
              on_record=lambda k, r: redone.append(k))
    assert sorted(redone) == names


def test_cli_four_images_then_two_summarises_two(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    imgs = _png_folder(tmp_path / "imgs", [f"im{i}.png" for i in range(4)], 0, size=20)
    out = tmp_path / "study"
    base = ["largemodel", "study", "--model", str(tiny), "--images", str(imgs), "--out", str(out), "--device", "cpu",
            "--steps", "2", "--perturbations", "2", "--no-progress"]
    assert main(base + ["--n-images", "4"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_images"] == 4
    capsys.readouterr()
    assert main(base + ["--n-images", "2"]) == 0
    assert capsys.readouterr().out.startswith("2 images")
    assert json.loads((out / "summary.json").read_text())["n_images"] == 2


def test_study_holds_the_output_lock(model, tmp_path: Path) -> None:
    import os

    seen: list[dict] = []
    run_study(model, random_items(["x.png"], 0), tmp_path, CFG, progress=False,
              on_record=lambda k, r: seen.append(json.loads((tmp_path / ".lock").read_text())))
    assert seen[0]["pid"] == os.getpid() and seen[0]["command"] == "pfode largemodel study"


# ---- reconstruction file names ---------------------------------------------------------------


def test_names_that_flatten_alike_get_distinct_reconstructions(model, tmp_path: Path) -> None:
    names = ["a b.png", "a_b.png", "a?b.png"]
    run_study(model, random_items(names, 0), tmp_path, CFG, progress=False)
    recs = load_records(tmp_path)
    paths = {recon_path(tmp_path, r["record_key"]) for r in recs}
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    assert len(list((tmp_path / "recon").glob("*.png"))) == 3
    # each file holds its own image's reconstruction
    pngs = [np.asarray(Image.open(recon_path(tmp_path, r["record_key"]))) for r in recs]
    assert not np.array_equal(pngs[0], pngs[1]) and not np.array_equal(pngs[1], pngs[2])


# ---- unreadable images ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_image_with_nonfinite_pixels_is_rejected(tmp_path: Path, bad: float) -> None:
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    arr[3, 4] = bad
    path = tmp_path / "float.tif"
    Image.fromarray(arr, mode="F").save(path)
    with pytest.raises(ValueError, match=r"cannot read image .*float\.tif.*non-finite"):
        load_image(path, 8, channels=1)
    arr[3, 4] = 0.5
    Image.fromarray(arr, mode="F").save(path)
    assert torch.isfinite(load_image(path, 8, channels=1)).all()


def test_corrupt_image_is_skipped_with_a_record_and_the_subset_is_stable(model, tmp_path: Path) -> None:
    names = [f"g{i}.png" for i in range(8)]
    imgs = _png_folder(tmp_path / "imgs", names, 0)
    (imgs / "corrupt.png").write_bytes(b"\x89PNG not really")
    n = 4
    seed = next(s for s in range(200) if "corrupt.png" in [p.name for p in select_images(
        [*map(imgs.joinpath, names), imgs / "corrupt.png"], n, s, root=imgs)])
    items = items_from_folder(imgs, n, seed, 16, 3)
    assert "corrupt.png" in [it.key for it in items]
    out = tmp_path / "out"
    lines: list[str] = []
    run_study(model, items, out, CFG, progress=False, warn=lines.append)
    assert len(lines) == 1 and "corrupt.png" in lines[0] and "cannot read image" in lines[0]
    skipped = load_records(out, skipped=True)
    assert [r["key"] for r in skipped] == ["corrupt.png"] and "cannot read image" in skipped[0]["skipped"]
    studied = [r["key"] for r in load_records(out)]
    assert len(studied) == n - 1
    s = summarize(out, n_boot=10)
    assert s["n_images"] == n - 1 and [x["key"] for x in s["skipped"]] == ["corrupt.png"]
    # removing the corrupt file leaves the other selected images where they were
    (imgs / "corrupt.png").unlink()
    after = [it.key for it in items_from_folder(imgs, n, seed, 16, 3)]
    assert set(studied) <= set(after) and len(after) == n
    # a resumed run redoes nothing but the image that took the corrupt one's place
    redone: list[str] = []
    run_study(model, items_from_folder(imgs, n, seed, 16, 3), out, CFG, progress=False,
              on_record=lambda k, r: redone.append(k), warn=lines.append)
    assert redone == sorted(set(after) - set(studied))


def test_nonfinite_tensor_image_is_skipped(model, tmp_path: Path) -> None:
    items = random_items(["ok0", "ok1"], 0)
    nan = torch.zeros(3, 16, 16)
    nan[0, 0, 0] = float("nan")
    lines: list[str] = []
    run_study(model, [*items, ImageItem("nan", lambda: nan)], tmp_path, CFG, progress=False, warn=lines.append)
    assert len(lines) == 1 and "non-finite" in lines[0]
    assert [r["key"] for r in load_records(tmp_path)] == ["ok0", "ok1"]


def test_cli_corrupt_image_gives_one_warning_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    imgs = _png_folder(tmp_path / "imgs", ["a.png", "b.png", "c.png"], 0, size=20)
    (imgs / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["largemodel", "study", "--model", str(tiny), "--images", str(imgs), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--steps", "2", "--perturbations", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pfode: warning: skipped broken.jpg: cannot read image"), err
    assert captured.out.startswith("3 images")


# ---- model folders ---------------------------------------------------------------------------------


def _copy(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    return dest


@pytest.mark.parametrize("config", [{}, {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000},
                                    {"num_train_timesteps": 1000, "shift": float("nan")},
                                    {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}])
def test_scheduler_config_lacking_settings_is_rejected(tiny: Path, tmp_path: Path, config: dict) -> None:
    bad = _copy(tiny, tmp_path / "bad")
    (bad / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"scheduler_config\.json"):
        inspect_folder(bad)


def test_cli_empty_scheduler_config_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _copy(tiny, tmp_path / "bad")
    (bad / "scheduler" / "scheduler_config.json").write_text("{}")
    imgs = _png_folder(tmp_path / "imgs", ["a.png"], 0)
    assert main(["largemodel", "study", "--model", str(bad), "--images", str(imgs), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scheduler_config.json lacks num_train_timesteps, shift" in err[0], err


def test_garbage_null_prompt_is_named(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _copy(tiny, tmp_path / "bad")
    (bad / "null_prompt.safetensors").write_bytes(b"garbage, not safetensors")
    with pytest.raises(ModelFolderError, match=r"null_prompt\.safetensors: not a readable safetensors file"):
        inspect_folder(bad)
    imgs = _png_folder(tmp_path / "imgs", ["a.png"], 0)
    assert main(["largemodel", "study", "--model", str(bad), "--images", str(imgs), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "null_prompt.safetensors" in err[0], err
    from safetensors.torch import save_file

    save_file({"prompt_embeds": torch.zeros(1, 4, 8)}, str(bad / "null_prompt.safetensors"))
    with pytest.raises(ModelFolderError, match="pooled_prompt_embeds is missing"):
        inspect_folder(bad)


def test_pickle_only_weights_refused_before_diffusers_looks(tiny: Path, tmp_path: Path) -> None:
    bad = _copy(tiny, tmp_path / "bad")
    weights = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))  # never loaded: the name alone is refused
    (bad / "transformer" / "stray.safetensors").write_bytes(b"")  # the old check only looked for any .safetensors
    with pytest.raises(ModelFolderError, match=r"transformer: weights only in pickle format \(diffusion_pytorch_model\.bin\)"):
        inspect_folder(bad)
    (bad / "transformer" / "diffusion_pytorch_model.bin").rename(bad / "transformer" / "diffusion_pytorch_model.fp16.safetensors")
    with pytest.raises(ModelFolderError, match="no diffusion_pytorch_model.safetensors"):
        inspect_folder(bad)
