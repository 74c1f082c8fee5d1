"""One image policy (issue 30): study, gallery, rank and explain skip an unreadable image (zero bytes,
truncated, over the decompression-bomb limit) with one warning line and a record, and handle a file
name that is not UTF-8, shown escaped; the readable images are studied as usual (the control)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from reports.cli import main
from lm_fixtures import tiny  # noqa: F401  (shared fixtures)

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.usefixtures("single_thread")]

BAD = ("zero.png", "truncated.png", "bomb.png")


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(root / f"im{i}.png")
    (root / "zero.png").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "im0.png").read_bytes()[:120])
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(root / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 > 1000 pixels: a "bomb"; 16 x 16 is not
    escaped = os.fsdecode(os.fsencode(root) + b"/caf\xe9.png")  # a name that is not UTF-8
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(escaped, format="PNG")
    return root


@pytest.mark.parametrize("command, records", [
    (["study", "--n-images", "7"], "records.jsonl"),
    (["gallery", "--n-images", "7", "--top", "2"], "records.jsonl"),
    (["rank", "--gallery", "2"], "scores.jsonl"),
    (["explain", "--n-images", "7", "--power-iters", "0", "--budgets", "1", "--causal-directions", "1",
      "--sizes", "1e-3,1e-2", "--perturbations", "2", "--resolutions", "16"], "explain.jsonl"),
])
def test_every_subcommand_skips_bad_images_and_reads_escaped_names(command, records, folder, tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["largemodel", *command, "--model", str(tiny), "--images", str(folder), "--out", str(out),
               "--steps", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    warned = [line for line in err.splitlines() if line.startswith("pfode: warning: skipped")]
    assert sorted(w.split()[3].rstrip(":") for w in warned) == sorted(BAD)  # one line per bad image
    values = [json.loads(line)["value"] for line in (out / records).read_text().splitlines()[1:]]
    skipped = [v for v in values if "skipped" in v]
    assert len(skipped) == len(BAD)
    names = json.dumps(values) if records != "scores.jsonl" else (out / "ranking.csv").read_text()
    assert ("caf\\\\xe9.png" if records != "scores.jsonl" else "caf\\xe9.png") in names  # studied, shown escaped
    assert len(values) - len(skipped) == 4  # the three readable images and the escaped one
