"""A class-conditional model trained here (``largemodel.training.classes``, docs/theory.md §10.9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from largemodel.training.classes import drop_labels
from largemodel.training.options import config_key, train_config


def test_class_conditioning_changes_the_key_and_nothing_else() -> None:
    plain = train_config("digits", 8, 100, steps=1000)
    assert "class_conditional" not in plain and config_key(plain) == "7dd8d9a9f037424d"  # the shipped key kept
    cc = train_config("digits", 8, 100, steps=1000, class_conditional=True)
    assert cc["cond_dropout"] == 0.1 and config_key(cc) != config_key(plain)
    assert config_key(train_config("digits", 8, 100, steps=1000, class_conditional=True, cond_dropout=0.2)) != config_key(cc)
    with pytest.raises(ValueError, match="cond_dropout applies to a class-conditional"):
        train_config("digits", 8, 100, cond_dropout=0.2)
    with pytest.raises(ValueError, match=r"cond_dropout must be a number in \[0, 1\)"):
        train_config("digits", 8, 100, class_conditional=True, cond_dropout=1.0)
    with pytest.raises(ValueError, match="only digits has"):
        train_config("faces", 16, None, class_conditional=True)


def test_condition_dropout_rate() -> None:
    """The null class replaces a label with probability p: 20000 draws within 4 standard errors."""
    labels = torch.arange(20000) % 10
    out = drop_labels(labels, 0.1, torch.Generator().manual_seed(0), 10)
    frac = float((out == 10).double().mean())
    assert abs(frac - 0.1) < 4 * (0.1 * 0.9 / 20000) ** 0.5
    assert torch.equal(out[out != 10], labels[out != 10])  # kept labels unchanged
    assert bool((drop_labels(labels, 0.0, torch.Generator().manual_seed(0), 10) == labels).all())


def test_a_trained_class_model_loads_by_class_prompt(tmp_path: Path, single_thread) -> None:
    """Two steps of training write the class table; ``load_model(prompt="digit 3")`` uses its row, the
    null prompt is the learned null class, and an unknown prompt is refused naming the classes."""
    from safetensors.torch import load_file

    from largemodel.models.load import load_model
    from largemodel.models.prompts import read_class_prompts
    from largemodel.training.train import train_model

    folder = train_model("digits", 8, 40, tmp_path / "m", steps=2, heldout_images=8, class_conditional=True,
                         progress=False, checkpoint_every=0)
    table = read_class_prompts(folder / "class_prompts.safetensors")
    assert list(table) == [f"digit {c}" for c in range(10)]
    model = load_model(folder, device="cpu", dtype="float32", prompt="digit 3", guidance_scale=2.0)
    assert torch.equal(model.conditioning.prompt_embeds, table["digit 3"][0])
    null = load_file(folder / "null_prompt.safetensors")
    assert torch.equal(model.conditioning.negative_prompt_embeds, null["prompt_embeds"])
    assert not torch.equal(null["prompt_embeds"], table["digit 3"][0])
    with pytest.raises(ValueError, match="cannot encode 'seven'"):
        load_model(folder, device="cpu", dtype="float32", prompt="seven")
