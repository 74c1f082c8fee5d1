"""The quick report's two models, shipped as package data (``largemodel.training.shipped``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from largemodel.training import train
from largemodel.training.options import config_key, train_config
from largemodel.training.shipped import FILES, SHIPPED_DIR, SPECS, regenerate, shipped_files, shipped_model

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


def _config(data: str, size: int, train_images: int, steps: int, classes: bool = False) -> dict:
    return train_config(data, size, train_images, steps=steps, **({"class_conditional": True} if classes else {}))


def _key(data: str, size: int, train_images: int, steps: int, classes: bool = False) -> str:
    return config_key(_config(data, size, train_images, steps, classes))


def test_the_report_specs_are_shipped_under_the_current_key() -> None:
    """Each quick-scale spec of the experiments has a complete shipped folder whose metadata names
    the key the current training code computes (a stale key would mean silent retraining)."""
    from largemodel.experiments.explain.experiment import ExplainOptions
    from largemodel.experiments.failure.experiment import FailureOptions
    from largemodel.experiments.fig4c.experiment import Fig4cOptions
    from largemodel.experiments.guidance.experiment import GuidanceOptions

    used = {Fig4cOptions().study_model, *Fig4cOptions().trend_models, FailureOptions().model,
            ExplainOptions().model, *ExplainOptions().trend_models}
    assert used == {s[:4] for s in SPECS if not s[4]}
    assert {(*GuidanceOptions().model, True)} == {s for s in SPECS if s[4]}
    for spec in SPECS:
        folder = shipped_model(spec[0], spec[1], _key(*spec))
        assert folder is not None and folder.parent == SHIPPED_DIR
        meta = json.loads((folder / "pfode_model.json").read_text())
        assert meta["config"] == _config(*spec)
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(shipped_files(spec[4]))


def test_cached_model_returns_the_shipped_folder_without_training(tmp_path: Path, monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("trained a shipped model")

    monkeypatch.setattr(train, "train_model", no_training)
    folder = train.cached_model("digits", 8, 100, steps=1000, cache_dir=tmp_path / "cache", progress=False)
    assert folder == SHIPPED_DIR / f"digits-8px-{_key('digits', 8, 100, 1000)}"
    assert not (tmp_path / "cache").exists()  # nothing written
    # another configuration is not shipped: cached_model trains it (negative control)
    with pytest.raises(AssertionError, match="trained a shipped model"):
        train.cached_model("digits", 8, 100, steps=999, cache_dir=tmp_path / "cache", progress=False)


def test_shipped_model_ignores_an_incomplete_or_foreign_folder(tmp_path: Path, monkeypatch) -> None:
    import largemodel.training.cache as cache

    key = _key("digits", 8, 100, 1000)
    src = SHIPPED_DIR / f"digits-8px-{key}"
    dst = tmp_path / src.name
    for rel in FILES:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes((src / rel).read_bytes())
    monkeypatch.setattr(cache, "SHIPPED_DIR", tmp_path)
    assert cache.shipped_model("digits", 8, key) == dst
    (dst / WEIGHTS).unlink()
    assert cache.shipped_model("digits", 8, key) is None
    (dst / WEIGHTS).write_bytes((src / WEIGHTS).read_bytes())
    meta = json.loads((dst / "pfode_model.json").read_text())
    (dst / "pfode_model.json").write_text(json.dumps({**meta, "config_key": "0" * 16}))
    assert cache.shipped_model("digits", 8, key) is None


def test_the_shipped_model_loads_and_generates(single_thread) -> None:
    from largemodel.models.load import load_model

    folder = shipped_model("digits", 8, _key("digits", 8, 100, 1000))
    model = load_model(folder, device="cpu", dtype="float32")
    assert model.latent_shape() == (1, 8, 8)
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    v = model.velocity(z, torch.full((2,), 0.5))
    assert v.shape == z.shape and torch.isfinite(v).all()


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_weights(tmp_path: Path, single_thread) -> None:
    """Retrain the three configurations with the project's code (about 6 minutes on one core): the
    weights are bit-identical to the shipped ones (training is deterministic on a given machine:
    on another CPU, float rounding may differ; then compare outputs, as the tolerance check shows)."""
    written = regenerate(tmp_path / "work", tmp_path / "shipped")
    assert [p.name for p in written] == [f"{d}-{s}px-{_key(*spec)}" for spec in SPECS for d, s in [spec[:2]]]
    for folder in written:
        new, old = load_file(folder / WEIGHTS), load_file(SHIPPED_DIR / folder.name / WEIGHTS)
        assert new.keys() == old.keys()
        mismatched = [k for k in new if not torch.equal(new[k], old[k])]
        assert not mismatched, (folder.name, mismatched[:5], max(float((new[k] - old[k]).abs().max()) for k in mismatched))
        for table in {"null_prompt.safetensors", "class_prompts.safetensors"} & {p.name for p in folder.iterdir()}:
            assert (folder / table).read_bytes() == (SHIPPED_DIR / folder.name / table).read_bytes()


def test_the_class_conditional_model_is_conditioned_by_its_class_table(single_thread) -> None:
    """The shipped class-conditional model loads with a class prompt and no text encoder; the class
    changes the field (the conditioning was learned), ``W = 1`` is the conditional field alone, and
    ``W`` extrapolates linearly from the null field: ``u_W = u_u + W (u_c - u_u)``."""
    from largemodel.models.load import load_model

    spec = next(s for s in SPECS if s[4])
    folder = shipped_model(spec[0], spec[1], _key(*spec))
    model = load_model(folder, device="cpu", dtype="float32", prompt="digit 3", guidance_scale=1.0)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    s = torch.full((4,), 0.6)
    u3, u7, u0 = (model.conditioned(p).velocity(z, s) for p in ("digit 3", "digit 7", ""))
    assert float((u3 - u7).norm()) > 1e-2 * float(u3.norm())  # the class matters
    u_w = model.conditioned("digit 3", 3.5).velocity(z, s)
    torch.testing.assert_close(u_w, u0 + 3.5 * (u3 - u0), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="class prompts 'digit 0'"):
        load_model(folder, device="cpu", dtype="float32", prompt="a cat")
