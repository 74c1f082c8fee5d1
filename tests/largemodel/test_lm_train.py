"""Offline datasets, flow-matching training, the model cache and sample quality (largemodel)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")
pytest.importorskip("skimage")

from largemodel.training import train as train_mod
from largemodel.training.data import available_images, dataset_from_split, load_dataset, resize_images  # noqa: E402
from largemodel.models.folder import PFODE_META_FILE  # noqa: E402
from largemodel.models.load import load_model  # noqa: E402
from largemodel.training.quality import digit_classifier, nearest_rms, quality_report, sample  # noqa: E402
from largemodel.training.train import (  # noqa: E402
    CHECKPOINT_FILE,
    Arch,
    build_transformer,
    cached_model,
    config_key,
    default_cache_dir,
    default_patch_size,
    flow_matching_loss,
    model_dataset,
    null_conditioning,
    train_config,
    train_model,
)
from largemodel.training.cli import add_train_arguments, run_train  # noqa: E402

#: a model and a run small enough to train in about a second
TINY = dict(steps=6, batch_size=16, num_layers=1, num_heads=2, head_dim=8, heldout_images=32, progress=False)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


# ---- datasets -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [("digits", 8, 1), ("digits", 12, 1), ("faces", 16, 1), ("faces", 25, 1), ("patches", 8, 3)],
)
def test_dataset_shapes_and_range(name, size, channels):
    d = load_dataset(name, size, train_images=40, heldout_images=10, seed=3)
    assert d.train.shape == (40, channels, size, size) and d.heldout.shape == (10, channels, size, size)
    assert d.train.dtype == torch.float32 and d.channels == channels and d.name == name and d.size == size
    for x in (d.train, d.heldout):
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert float(x.std()) > 0.1  # real images, not constants
    if name == "digits":
        assert d.labels_train.shape == (40,) and d.labels_heldout.shape == (10,)
        assert set(d.labels_train.tolist()) <= set(range(10))
    else:
        assert d.labels_train is None and d.labels_heldout is None


def test_digits_values_match_sklearn():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", 8, train_images=5, heldout_images=5, seed=0)
    raw = torch.tensor(load_digits().images, dtype=torch.float32)
    idx = d.split["train_indices"]
    torch.testing.assert_close(d.train[:, 0], raw[idx] / 8 - 1)
    assert d.labels_train.tolist() == [int(v) for v in load_digits().target[idx]]


def test_split_deterministic_disjoint_and_stable():
    a = load_dataset("digits", 8, train_images=100, heldout_images=50, seed=1)
    b = load_dataset("digits", 8, train_images=100, heldout_images=50, seed=1)
    c = load_dataset("digits", 8, train_images=100, heldout_images=50, seed=2)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    assert not torch.equal(a.heldout, c.heldout)
    assert not set(a.split["train_indices"]) & set(a.split["heldout_indices"])
    more = load_dataset("digits", 8, train_images=300, heldout_images=50, seed=1)
    assert torch.equal(more.heldout, a.heldout)  # held-out set independent of K
    again = dataset_from_split(json.loads(json.dumps(a.split)))
    assert torch.equal(again.train, a.train) and torch.equal(again.heldout, a.heldout)


def test_patches_deterministic_and_distinct():
    a = load_dataset("patches", 8, train_images=64, heldout_images=16, seed=5)
    b = load_dataset("patches", 8, train_images=64, heldout_images=16, seed=5)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    assert float(nearest_rms(a.heldout, a.train).min()) > 0  # no held-out patch repeats a training patch


def test_defaults_and_resize():
    d = load_dataset("faces", 16)
    assert d.train.shape[0] + d.heldout.shape[0] == available_images("faces", 16) == 100
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(resize_images(x, 8), x)
    y = resize_images(x, 4)
    assert y.shape == (2, 1, 4, 4) and float(y.abs().max()) <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(name="mnist", size=8), "data must be one of"),
        (dict(name="digits", size=1), "size"),
        (dict(name="digits", size=8.0), "size"),
        (dict(name="digits", size=True), "size"),
        (dict(name="digits", size=1000), "size"),
        (dict(name="digits", size=8, train_images=1700, heldout_images=200), "exceeds the 1797"),
        (dict(name="digits", size=8, heldout_images=1797), "heldout_images"),
        (dict(name="faces", size=16, train_images=0), "train_images"),
        (dict(name="faces", size=16, train_images=90, heldout_images=20), "exceeds the 100"),
        (dict(name="patches", size=128, train_images=10), "too large for patches"),
        (dict(name="digits", size=8, seed=-1), "seed"),
    ],
)
def test_dataset_errors(kwargs, match):
    kwargs = dict(kwargs)
    name, size = kwargs.pop("name"), kwargs.pop("size")
    with pytest.raises(ValueError, match=match):
        load_dataset(name, size, **kwargs)


# ---- training -----------------------------------------------------------------------------
def test_one_build_transformer_same_weights_as_the_direct_constructor():
    """``train.build_transformer`` is ``transformer_configs.build_transformer`` of the pixel config:
    the same weights as calling ``SD3Transformer2DModel(**config)`` under ``torch.manual_seed`` (the
    training code's former construction), in training mode, and the global RNG left as it was."""
    from diffusers import SD3Transformer2DModel

    from largemodel.models import fullsize
    from largemodel.models import transformer_configs
    from largemodel.training.options import transformer_config

    arch = Arch(2, 1, 2, 8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    model = build_transformer(1, 8, arch, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # construction draws nothing from the global RNG
    assert model.training and all(p.requires_grad for p in model.parameters())
    torch.manual_seed(5)
    direct = SD3Transformer2DModel(**transformer_config(1, 8, arch))
    a, b = model.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert dict(model.config) == dict(direct.config)
    assert fullsize.build_transformer is transformer_configs.build_transformer
    frozen = transformer_configs.build_transformer(transformer_config(1, 8, arch), dtype="float32", seed=5)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert all(torch.equal(t, a[k]) for k, t in frozen.state_dict().items())


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    x1 = load_dataset("digits", 8, train_images=16, heldout_images=0, seed=0).train
    x0 = torch.randn(x1.shape)
    sigma = torch.linspace(0.05, 0.95, 16)
    model = build_transformer(1, 8, Arch(2, 1, 2, 8), seed=0)
    cond = null_conditioning(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = flow_matching_loss(model, x1, x0, sigma, *cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]


def test_train_saves_a_loadable_model(tmp_path):
    out = train_model("digits", 8, 64, tmp_path / "m", seed=1, **TINY)
    meta = json.loads((out / PFODE_META_FILE).read_text())
    assert meta["resolution"] == 8 and meta["image_channels"] == 1 and meta["data"] == "digits"
    assert meta["train_images"] == 64 and meta["heldout_images"] == 32 and meta["steps"] == 6 and meta["seed"] == 1
    assert len(meta["split"]["heldout_indices"]) == 32 and meta["final_loss"] > 0
    assert not (out / CHECKPOINT_FILE).exists()
    model = load_model(out, device="cpu", dtype="float32")
    assert model.resolution == 8 and model.image_channels == 1 and model.latent_shape() == (1, 8, 8)
    # velocity() is the saved EMA network: it reproduces the EMA loss measured at save time
    data = model_dataset(out)
    x1 = data.train[:256]
    gen = torch.Generator().manual_seed(1 + 2)
    x0 = torch.randn(x1.shape, generator=gen)
    n = x1.shape[0]
    sigma = ((torch.arange(n, dtype=torch.float32) + 0.5) / n)[torch.randperm(n, generator=gen)]
    s = sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        u = model.velocity((1 - s) * x1 + s * x0, sigma)
    assert float(((u - (x0 - x1)) ** 2).mean()) == pytest.approx(meta["eval_loss_train"], rel=1e-5)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    whole = train_model("digits", 8, 64, tmp_path / "whole", checkpoint_every=0, **TINY)

    class Stop(Exception):
        pass

    def stop_at_4(step, loss):
        if step == 4:
            raise Stop

    part = tmp_path / "part"
    with pytest.raises(Stop):
        train_model("digits", 8, 64, part, checkpoint_every=3, callback=stop_at_4, **TINY)
    assert (part / CHECKPOINT_FILE).is_file() and not (part / PFODE_META_FILE).exists()
    with pytest.raises(ValueError, match="different training configuration"):
        train_model("digits", 8, 64, part, checkpoint_every=3, **{**TINY, "lr": 5e-4})
    seen = []
    train_model("digits", 8, 64, part, checkpoint_every=3, callback=lambda k, loss: seen.append(k), **TINY)
    assert seen == [4, 5, 6]
    a, b = _weights(whole), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    meta_a = json.loads((whole / PFODE_META_FILE).read_text())
    meta_b = json.loads((part / PFODE_META_FILE).read_text())
    assert meta_a["final_loss"] == meta_b["final_loss"] and meta_a["loss_curve"] == meta_b["loss_curve"]


def test_cache_reuses_the_trained_folder(tmp_path, monkeypatch):
    first = cached_model("digits", 8, 64, cache_dir=tmp_path, **TINY)
    stamp = (first / PFODE_META_FILE).stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a cached model")

    monkeypatch.setattr(train_mod, "_train", no_training)
    # spelled-out defaults and runtime-only options give the same key
    again = cached_model("digits", 8, 64, cache_dir=tmp_path, data_seed=0, sigma_sampling="logit_normal",
                         checkpoint_every=1, num_threads=None, **TINY)
    assert again == first and (first / PFODE_META_FILE).stat().st_mtime_ns == stamp
    assert train_model("digits", 8, 64, first, **TINY) == first  # finished model: returned as is
    with pytest.raises(AssertionError, match="retrained"):
        cached_model("digits", 8, 64, cache_dir=tmp_path, **{**TINY, "seed": 9})
    with pytest.raises(ValueError, match="different model"):
        train_model("digits", 8, 64, first, **{**TINY, "seed": 9})


def test_config_key_and_errors(monkeypatch, tmp_path):
    base = train_config("digits", 8, None)
    assert base["train_images"] == 1797 - 256 and base["arch"]["patch_size"] == 2
    assert config_key(base) == config_key(train_config("digits", 8, 1541, heldout_images=256))
    assert config_key(base) != config_key(train_config("digits", 8, None, seed=1))
    assert train_config("faces", 25, None)["arch"]["patch_size"] == 5
    assert [default_patch_size(s) for s in (2, 7, 8, 12, 16, 25, 32)] == [1, 1, 2, 3, 4, 5, 8]
    for kwargs, match in [
        (dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(ema_decay=1.0), "ema_decay"),
        (dict(batch_size=2.5), "batch_size"), (dict(sigma_sampling="beta"), "sigma_sampling"),
        (dict(patch_size=3), "patch_size"), (dict(num_layers=0), "num_layers"), (dict(foo=1), "foo"),
    ]:
        with pytest.raises(ValueError, match=match):
            train_config("digits", 8, None, **kwargs)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_model("digits", 8, 64, tmp_path / "x", checkpoint_every=-1, **TINY)
    monkeypatch.setenv("PFODE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"


# ---- sampling and quality -----------------------------------------------------------------
class _PointMassModel:
    """The exact field of a point mass at ``m``: ``u(x, sigma) = (x - m) / sigma``."""

    device, state_dtype = torch.device("cpu"), torch.float64

    def __init__(self, m: torch.Tensor) -> None:
        self.m = m

    def latent_shape(self):
        return tuple(self.m.shape)

    def sigmas(self, steps):
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64) ** 2

    def velocity(self, x, sigma):
        return (x - self.m) / sigma


def test_sample_is_euler_on_the_sigma_grid():
    m = torch.randn(1, 4, 4, dtype=torch.float64)
    out = sample(_PointMassModel(m), 5, 7, 0, batch_size=2)
    # Euler is exact for this field: x_{i+1} - m = (x_i - m) s_{i+1} / s_i, ending at m
    assert out.shape == (5, 1, 4, 4)
    torch.testing.assert_close(out, m.expand(5, 1, 4, 4))
    with pytest.raises(ValueError, match="steps"):
        sample(_PointMassModel(m), 5, 0, 0)


def test_classifier_confident_on_digits_not_on_noise():
    d = load_dataset("digits", 8, seed=0)
    clf = digit_classifier(d.train, d.labels_train)
    flat = lambda x: x.reshape(len(x), -1).double().numpy()  # noqa: E731
    real = clf.predict_proba(flat(d.heldout)).max(1).mean()
    noise = clf.predict_proba(flat(torch.randn(256, 1, 8, 8).clamp(-1, 1))).max(1).mean()
    assert real > 0.85 and noise < real - 0.15
    assert (clf.predict(flat(d.heldout)) == d.labels_heldout.numpy()).mean() > 0.9


def test_quality_report_and_figure(tmp_path):
    out = train_model("digits", 8, None, tmp_path / "m", **TINY)  # the classifier fits the training split
    png = tmp_path / "q.png"
    r = quality_report(out, n_samples=16, steps=4, seed=0, out_png=png)
    assert png.is_file() and png.stat().st_size > 1000 and r["png"] == str(png)
    assert 0 < r["confidence_samples"] <= 1 and r["confidence_heldout"] > 0.85
    assert sum(r["sample_class_histogram"]) == 16 and r["nn_rms_heldout_to_train"] > 0
    json.dumps(r)
    with pytest.raises(ValueError, match="not a model trained by pfode"):
        quality_report(tmp_path, n_samples=4, steps=2)


def test_cli_hooks(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args([
        "--data", "faces", "--size", "8", "--train-images", "16", "--heldout-images", "8", "--out",
        str(tmp_path / "f"), "--steps", "3", "--batch-size", "4", "--num-layers", "1", "--num-heads", "2",
        "--head-dim", "8", "--no-progress", "--quality-samples", "8", "--sample-steps", "2",
    ])
    assert run_train(args) == 0
    text = capsys.readouterr().out
    assert str(tmp_path / "f") in text and "samples:" in text and (tmp_path / "f" / "samples.png").is_file()
    bad = parser.parse_args(["--data", "digits", "--size", "1", "--out", str(tmp_path / "g"), "--no-progress"])
    with pytest.raises(ValueError, match="size"):
        run_train(bad)


@pytest.mark.slow
def test_default_digits_model_makes_digits(tmp_path):
    """The default run (a few minutes): samples the classifier finds clearly more digit-like than noise."""
    out = cached_model("digits", 8, None, progress=False)
    r = quality_report(out, n_samples=256, steps=50, seed=0, out_png=tmp_path / "s.png")
    assert r["confidence_samples"] > r["confidence_noise"] + 0.1
    assert min(r["sample_class_histogram"]) > 0


def test_rgb_patches_model(tmp_path):
    out = train_model("patches", 8, 32, tmp_path / "p", **{**TINY, "heldout_images": 8})
    model = load_model(out, device="cpu", dtype="float32")
    assert model.image_channels == 3 and model.latent_shape() == (3, 8, 8)
    r = quality_report(out, n_samples=8, steps=2, seed=0, out_png=tmp_path / "p.png")
    assert "confidence_samples" not in r and (tmp_path / "p.png").is_file()
    assert torch.equal(model_dataset(out).heldout, load_dataset("patches", 8, train_images=32, heldout_images=8).heldout)
