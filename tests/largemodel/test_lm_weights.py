"""Complete models only (issue 30): a model folder whose weights do not match its configs is refused
by every sub-command that loads a model, with exit 2 and one line naming the file and the tensor;
an intact folder (the control) passes the same checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from largemodel.models.folder import ModelFolderError
from largemodel.models.load import check_model_folder, load_model
from largemodel.models.tiny import build_tiny_folder, tiny_transformer
from largemodel.models.transformer_configs import _count_on_meta, count_parameters
from reports.cli import main

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]

TF = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> Path:
    return build_tiny_folder(tmp_path_factory.mktemp("w") / "sd35", "sd3.5", with_vae=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(root / f"im{i}.png")
    return root


def _variant(intact: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(intact, folder)
    edit(folder)
    return folder


def _edit_tensors(folder: Path, fn, file: str = TF) -> None:
    tensors = load_file(str(folder / file))
    save_file(fn(tensors), str(folder / file))


def _edit_json(folder: Path, file: str, **changes) -> None:
    path = folder / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _drop_one(folder: Path) -> None:
    _edit_tensors(folder, lambda t: {k: v for k, v in t.items() if k != "norm_out.linear.weight"})


def test_intact_folder_passes(intact):
    """The control: every check passes on a folder saved whole."""
    info = check_model_folder(intact, device="cpu", dtype="float32")
    assert info.family == "sd3.5"


@pytest.mark.parametrize("command", [
    ["largemodel", "study", "--n-images", "1", "--steps", "2"],
    ["largemodel", "gallery", "--n-images", "1", "--steps", "2"],
    ["largemodel", "rank"],
    ["largemodel", "explain", "--n-images", "1", "--steps", "2"],
    ["report", "--suites", "largemodel"],
])
def test_one_tensor_removed_is_refused_by_every_subcommand(command, intact, images, tmp_path, capsys):
    broken = _variant(intact, tmp_path, _drop_one)
    out = tmp_path / "out"
    rc = main([*command, "--model", str(broken), "--images", str(images), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1
    assert str(broken / TF) in err and "'norm_out.linear.weight'" in err
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("edit, expected", [
    (lambda f: _edit_tensors(f, lambda t: {"renamed." + k: v for k, v in t.items()}), "incomplete model"),
    (lambda f: _edit_tensors(f, lambda t: {**t, "proj_out.bias": t["proj_out.bias"].to(torch.int32)}), "not a floating"),
    (lambda f: _edit_tensors(f, lambda t: {**t, "proj_out.bias": torch.zeros(3)}), "has shape [3]"),
    (lambda f: _edit_tensors(f, lambda t: {k: v for k, v in t.items() if k != sorted(t)[0]},
                             "vae/diffusion_pytorch_model.safetensors"), "vae/diffusion_pytorch_model.safetensors"),
    (lambda f: _edit_json(f, "transformer/config.json", patch_size=0), "patch_size must be an integer >= 1"),
    (lambda f: _edit_json(f, "transformer/config.json", num_layers=10**6), "GB at float32, more than"),
    (lambda f: _edit_json(f, "transformer/config.json", auto_map={"AutoModel": "m.X"}), "remote-code"),
    (lambda f: _edit_json(f, "model_index.json", _class_name=["my_module", "MyPipeline"]), "custom pipeline"),
])
def test_bad_folders_are_refused_with_one_line(edit, expected, intact, tmp_path):
    broken = _variant(intact, tmp_path, edit)
    with pytest.raises(ModelFolderError) as info:
        check_model_folder(broken, device="cpu", dtype="float32")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_nan_weight_is_refused_on_load(intact, tmp_path):
    def poison(t):
        t["proj_out.weight"][0, 0] = float("nan")
        return t

    broken = _variant(intact, tmp_path, lambda f: _edit_tensors(f, poison))
    with pytest.raises(ModelFolderError, match=r"diffusion_pytorch_model.safetensors: tensor 'proj_out.weight' holds NaN"):
        check_model_folder(broken, device="cpu", dtype="float32")  # before loading: the file is scanned
    with pytest.raises(ModelFolderError, match=r"transformer: tensor 'proj_out.weight' holds NaN"):
        load_model(broken, device="cpu", dtype="float32")  # and every value after loading


def test_nan_scan_of_a_huge_file_samples_the_first_rows(intact, tmp_path, monkeypatch):
    """Above FULL_SCAN_BYTES only the first rows are read: a NaN there is found, one in the last row
    is left to the check after loading (the control that the sampling is what it says)."""
    from largemodel.models import weights

    monkeypatch.setattr(weights, "FULL_SCAN_BYTES", 0)
    monkeypatch.setattr(weights, "SAMPLE_VALUES", 16)

    def poison(row):
        def edit(t):
            t["proj_out.weight"][row, 0] = float("nan")
            return t
        return edit

    first = _variant(intact, tmp_path / "a", lambda f: _edit_tensors(f, poison(0)))
    with pytest.raises(ModelFolderError, match="'proj_out.weight' holds NaN"):
        weights.scan_finite(first / "transformer")
    last = _variant(intact, tmp_path / "b", lambda f: _edit_tensors(f, poison(-1)))
    weights.scan_finite(last / "transformer")
    with pytest.raises(ModelFolderError, match="'proj_out.weight' holds NaN"):
        load_model(last, device="cpu", dtype="float32")


@pytest.mark.parametrize("family, layers", [("sd3.5", {"num_layers": 13}), ("flux", {"num_layers": 5, "num_single_layers": 7})])
def test_deep_config_count_is_exact(family, layers):
    """The extrapolated count of a deep config equals the count of the network built block by block."""
    cfg = {**dict(tiny_transformer(family).config), **layers}
    assert count_parameters(cfg) == _count_on_meta(cfg)


@pytest.mark.parametrize("command", [["largemodel", "rank", "--resolution", "4096"],
                                     ["largemodel", "explain", "--resolutions", "16,4096"],
                                     ["largemodel", "explain", "--budgets", "1,4096"]])
def test_a_resolution_beyond_memory_is_refused_before_loading(command, intact, images, tmp_path, capsys):
    rc = main([*command, "--model", str(intact), "--images", str(images), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "4096" in err and ("GB" in err or "network evaluations" in err) and "refused before loading" in err
    assert not (tmp_path / "o").exists()


def test_the_resolution_check_passes_at_the_native_resolution(intact):
    """The control: the model's own resolution fits this machine."""
    from largemodel.plan.commands import check_resolution_fits

    check_resolution_fits(intact, None, dtype="float32", device="cpu")
    check_resolution_fits(intact, 16, dtype="auto", device="cpu")


def test_explain_budgets_priced_by_the_plan(intact):
    """The default budgets pass (the control); a budget over the evaluation limit is refused."""
    from largemodel.plan.commands import EXPLAIN_MAX_EVALUATIONS, PlanError, check_explain_budgets

    check_explain_budgets(intact, (1, 2, 4), inverters=4, steps=100, solver="euler", resolution=None)
    with pytest.raises(PlanError, match=f"over the limit of {EXPLAIN_MAX_EVALUATIONS:,}"):
        check_explain_budgets(intact, (1, 100_000), inverters=4, steps=100, solver="euler", resolution=None)
