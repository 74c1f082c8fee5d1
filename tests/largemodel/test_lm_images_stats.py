"""Image folder loading, correlation statistics and study plots of the large-model study (fast, CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from largemodel.models.images import center_crop_box, list_images, load_image, select_images, to_uint8
from largemodel.study.plots import failure_gallery, multi_scatter, scatter_instability
from largemodel.study.stats import correlate, format_correlation, linear_fit_loglog

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """RGB, grayscale, RGBA and non-square images, one nested, one corrupt, one non-image file."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8), "L").save(tmp_path / "gray.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 50, 3), dtype=np.uint8), "RGB").save(tmp_path / "wide.PNG")
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8), "RGBA").save(tmp_path / "alpha.webp")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (60, 16, 3), dtype=np.uint8), "RGB").save(tmp_path / "sub" / "deeper" / "tall.bmp")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_list_images_recursive_sorted_and_filtered(image_folder: Path) -> None:
    found = list_images(image_folder)
    names = [p.relative_to(image_folder).as_posix() for p in found]
    assert names == sorted(names)
    assert set(names) == {"alpha.webp", "corrupt.jpg", "gray.jpg", "rgb.png", "sub/deeper/tall.bmp", "wide.PNG"}
    assert [p.name for p in list_images(image_folder, extensions=("png",))] == ["rgb.png", "wide.PNG"]


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="no images in"):
        list_images(tmp_path / "empty")


@pytest.mark.parametrize("name", ["rgb.png", "gray.jpg", "wide.PNG", "alpha.webp", "sub/deeper/tall.bmp"])
@pytest.mark.parametrize("channels", [3, 1])
def test_load_image_shape_and_range(image_folder: Path, name: str, channels: int) -> None:
    image = load_image(image_folder / name, 16, channels=channels)
    assert image.shape == (channels, 16, 16)
    assert image.dtype == torch.float32
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0
    assert float(image.std()) > 0.0


def test_load_image_upscales(image_folder: Path) -> None:
    assert load_image(image_folder / "rgb.png", 64).shape == (3, 64, 64)


def test_load_image_exact_values_without_resize(tmp_path: Path) -> None:
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    Image.fromarray(pixels, "RGB").save(tmp_path / "exact.png")
    image = load_image(tmp_path / "exact.png", 4)
    assert torch.allclose(image, torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1.0)
    assert np.array_equal(to_uint8(image), pixels)


def test_centre_crop_is_centred(tmp_path: Path) -> None:
    # 30 x 10 strips: black | white | black; the centred 10 x 10 square is all white
    strip = np.zeros((10, 30), dtype=np.uint8)
    strip[:, 10:20] = 255
    Image.fromarray(strip, "L").save(tmp_path / "strips.png")
    assert torch.all(load_image(tmp_path / "strips.png", 10, channels=1) == 1.0)
    # a 2:1 image whose left and right halves differ crops to the middle half: half dark, half light
    halves = np.zeros((40, 80, 3), dtype=np.uint8)
    halves[:, 40:] = 200
    Image.fromarray(halves, "RGB").save(tmp_path / "halves.png")
    image = load_image(tmp_path / "halves.png", 8)
    ringing = 4 / 127.5  # Lanczos overshoot next to the edge
    assert torch.allclose(image[:, :, :3], torch.full((3, 8, 3), -1.0), atol=ringing)
    assert torch.allclose(image[:, :, 5:], torch.full((3, 8, 3), 200 / 127.5 - 1.0), atol=ringing)
    # same for a tall image (top and bottom differ)
    Image.fromarray(np.ascontiguousarray(halves.transpose(1, 0, 2)), "RGB").save(tmp_path / "tall.png")
    tall = load_image(tmp_path / "tall.png", 8)
    assert torch.allclose(tall[:, :3, :], torch.full((3, 3, 8), -1.0), atol=ringing)
    assert torch.allclose(tall[:, 5:, :], torch.full((3, 3, 8), 200 / 127.5 - 1.0), atol=ringing)
    assert center_crop_box(80, 40) == (20, 0, 60, 40)
    assert center_crop_box(40, 81) == (0, 20, 40, 60)


def test_load_image_errors(image_folder: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read image .*corrupt\.jpg"):
        load_image(image_folder / "corrupt.jpg", 16)
    with pytest.raises(ValueError, match=r"cannot read image .*nothing\.png"):
        load_image(image_folder / "nothing.png", 16)
    truncated = image_folder / "truncated.png"
    truncated.write_bytes((image_folder / "rgb.png").read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cannot read image .*truncated\.png"):
        load_image(truncated, 16)
    with pytest.raises(ValueError, match="channels"):
        load_image(image_folder / "rgb.png", 16, channels=4)
    with pytest.raises(ValueError, match="resolution"):
        load_image(image_folder / "rgb.png", 0)


def test_load_16bit_grayscale(tmp_path: Path) -> None:
    wide = np.full((8, 8), 65535, dtype=np.uint16)
    wide[:, :4] = 0
    Image.fromarray(wide).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png", 8, channels=1)
    assert torch.all(image[:, :, :4] == -1.0) and torch.all(image[:, :, 4:] == 1.0)


def test_select_images_stable_and_prefix() -> None:
    paths = [Path(f"img_{i:03d}.png") for i in range(50)]
    ten = select_images(paths, 10, seed=3)
    assert len(ten) == 10 and len(set(ten)) == 10
    assert select_images(list(reversed(paths)), 10, seed=3) == ten  # input order does not matter
    assert select_images(paths, 30, seed=3)[:10] == ten
    assert select_images(paths, 10, seed=4) != ten
    everything = select_images(paths, 500, seed=3)
    assert sorted(everything) == paths and everything[:10] == ten
    with pytest.raises(ValueError, match="positive"):
        select_images(paths, 0, seed=3)
    with pytest.raises(ValueError, match="no images"):
        select_images([], 3, seed=3)


def test_select_from_folder(image_folder: Path) -> None:
    chosen = select_images(list_images(image_folder), 3, seed=0)
    assert chosen == select_images(list_images(image_folder), 3, seed=0)
    assert all(p.is_file() for p in chosen)


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


def test_correlate_perfect_monotone() -> None:
    x = np.linspace(0.1, 5.0, 40)
    result = correlate(x, np.exp(x), n_boot=300)
    assert result["spearman_rho"] == pytest.approx(1.0)
    assert result["spearman_ci"] == pytest.approx((1.0, 1.0))
    assert 0.5 < result["pearson_r"] < 1.0
    assert result["pearson_ci"][0] <= result["pearson_r"] <= result["pearson_ci"][1]
    assert result["reason"] is None and result["n"] == 40 and result["n_dropped"] == 0
    assert "Spearman" in format_correlation(result)


def test_correlate_independent_covers_zero() -> None:
    rng = np.random.default_rng(1)
    result = correlate(rng.normal(size=200), rng.normal(size=200), n_boot=500)
    for key in ("pearson_ci", "spearman_ci"):
        low, high = result[key]
        assert low < 0.0 < high
    assert result["pearson_p"] > 0.05 and result["spearman_p"] > 0.05


def test_correlate_bivariate_normal_known_rho() -> None:
    rng = np.random.default_rng(2)
    sample = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.6], [0.6, 1.0]], size=2000)
    result = correlate(sample[:, 0], sample[:, 1], n_boot=500, seed=5)
    low, high = result["pearson_ci"]
    assert low < result["pearson_r"] < high
    assert low < 0.6 < high
    assert high - low < 0.1
    assert result["pearson_ci_method"] == "BCa"
    # Spearman's rho of a bivariate normal is (6 / pi) asin(rho / 2)
    s_low, s_high = result["spearman_ci"]
    assert s_low < 6 / math.pi * math.asin(0.3) < s_high
    assert result["pearson_p"] < 1e-100
    # the seed fixes the intervals
    assert correlate(sample[:, 0], sample[:, 1], n_boot=500, seed=5)["pearson_ci"] == result["pearson_ci"]


def test_correlate_drops_nan_and_inf() -> None:
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0, np.inf])
    y = np.array([2.0, 1.0, 3.0, np.nan, 5.0, 7.0, 1.0])
    result = correlate(x, y, n_boot=200)
    assert result["n"] == 4 and result["n_dropped"] == 3
    clean = correlate([1.0, 2.0, 5.0, 6.0], [2.0, 1.0, 5.0, 7.0], n_boot=200)
    assert result["pearson_r"] == pytest.approx(clean["pearson_r"])
    assert np.isfinite(result["pearson_ci"]).all()  # small-n fallback to finite resamples


def test_correlate_constant_and_errors() -> None:
    result = correlate([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], n_boot=100)
    assert result["reason"] == "x is constant"
    assert math.isnan(result["pearson_r"]) and math.isnan(result["spearman_rho"])
    assert correlate([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], n_boot=100)["reason"] == "y is constant"
    with pytest.raises(ValueError, match="at least 3"):
        correlate([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="length"):
        correlate([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        correlate([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], confidence=1.5)


def test_linear_fit_loglog() -> None:
    rng = np.random.default_rng(3)
    x = np.exp(rng.uniform(0.0, 5.0, size=300))
    y = 2.0 * x**1.5 * np.exp(rng.normal(scale=0.2, size=300))
    fit = linear_fit_loglog(np.append(x, [-1.0, np.nan]), np.append(y, [1.0, 1.0]))
    assert fit["n"] == 300 and fit["n_dropped"] == 2
    assert fit["slope_ci"][0] < 1.5 < fit["slope_ci"][1]
    assert fit["intercept_ci"][0] < math.log10(2.0) < fit["intercept_ci"][1]
    assert linear_fit_loglog([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["reason"] == "x is constant"
    with pytest.raises(ValueError, match="at least 3"):
        linear_fit_loglog([1.0, 2.0, 0.0], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def _records(n: int = 40, seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    kappa = np.exp(rng.uniform(0.0, 6.0, size=n))
    error = 0.01 * kappa**0.5 * np.exp(rng.normal(scale=0.3, size=n))
    return [{"name": f"img{i}", "kappa": float(k), "mse": float(e), "psnr": float(-10 * np.log10(e)),
             "subset": "faces" if i % 2 else "scenes"} for i, (k, e) in enumerate(zip(kappa, error))]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_scatter_instability_writes_png(tmp_path: Path) -> None:
    records = _records()
    records[0]["mse"] = float("nan")
    records[1]["kappa"] = 0.0
    stats = correlate([r["kappa"] for r in records], [r["mse"] for r in records], n_boot=200)
    out = scatter_instability(records, "kappa", "mse", tmp_path / "figs" / "fig4c.png", title="Fig. 4c",
                              stats=stats, xlabel="averaged instability coefficient", ylabel="MSE")
    assert out == tmp_path / "figs" / "fig4c.png" and _is_png(out)
    assert _is_png(scatter_instability(records, "kappa", "psnr", tmp_path / "hue_cat.png", title="t",
                                       logy=False, hue_key="subset"))
    assert _is_png(scatter_instability(records, "kappa", "mse", tmp_path / "hue_num.png", title="t",
                                       logx=False, hue_key="psnr", stats={**stats, "reason": "x is constant"}))
    with pytest.raises(ValueError, match="no key 'missing'"):
        scatter_instability(records, "missing", "mse", tmp_path / "bad.png", title="t")


def test_multi_scatter_writes_png(tmp_path: Path) -> None:
    panels = [{"records": _records(seed=s), "x_key": "kappa", "y_key": "mse", "title": name}
              for s, name in enumerate(["SD3.5 Medium", "SD3.5 Large", "FLUX"])]
    panels[1]["stats"] = correlate([r["kappa"] for r in panels[1]["records"]],
                                   [r["mse"] for r in panels[1]["records"]], n_boot=100)
    out = multi_scatter(panels, tmp_path / "figA1.png", suptitle="Fig. A1")
    assert _is_png(out)
    with pytest.raises(ValueError, match="lacks"):
        multi_scatter([{"records": _records()}], tmp_path / "bad.png")


def test_failure_gallery_writes_png(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = torch.rand(3, 16, 16) * 2 - 1
    items = [
        {"name": "cat.png", "original": original, "reconstruction": (original + 0.1 * torch.randn(3, 16, 16)).clamp(-1, 1),
         "numbers": {"PSNR": 21.3, "kappa": 4.1e3}},
        {"name": "gray.png", "original": original[:1], "reconstruction": -original[:1], "numbers": {"PSNR": 3.2}},
    ]
    assert _is_png(failure_gallery(items, tmp_path / "gallery.png", title="largest instability"))
    assert _is_png(failure_gallery(items[:1], tmp_path / "gallery2.png", n_cols=2))
    with pytest.raises(ValueError, match="differ in shape"):
        failure_gallery([{"name": "x", "original": original, "reconstruction": original[:1]}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="n_cols"):
        failure_gallery(items, tmp_path / "bad.png", n_cols=4)


# ---------------------------------------------------------------------------------------------
# one correlation code for Fig. 4(b) and Fig. 4(c) (docs/theory.md §9.6)
# ---------------------------------------------------------------------------------------------


def test_fig4b_and_fig4c_share_one_correlation_code() -> None:
    """largemodel.study.stats and the fig4 experiment use simulate.stats; their formats agree where they should."""
    import largemodel.study.stats as lm_stats
    import simulate.stats as S
    from simulate.experiments.fig4 import experiment as fig4

    assert lm_stats.correlate is S.correlate and lm_stats.bootstrap_ci is S.bootstrap_ci
    assert fig4.correlation_summary is S.correlation_summary and fig4.classify_correlation is S.classify_correlation
    rng = np.random.default_rng(11)
    x = np.exp(rng.normal(size=150))
    y = x * np.exp(rng.normal(size=150))
    summary = S.correlation_summary(x, y, seed=4, n_resamples=400)
    on_logs = S.correlate(np.log(x), np.log(y), seed=4, n_boot=400)  # Fig. 4(b): Pearson on the logs, seed
    ranks = S.correlate(x, y, seed=5, n_boot=400)  # Fig. 4(b): Spearman on the values, seed + 1
    assert summary["pearson_r"] == on_logs["pearson_r"] and summary["pearson_ci"] == list(on_logs["pearson_ci"])
    assert summary["spearman_rho"] == ranks["spearman_rho"] and summary["spearman_ci"] == list(ranks["spearman_ci"])
    # the one documented difference that shows: an undefined BCa interval (every resample rho = 1)
    t = np.arange(1.0, 41.0)
    assert S.correlation_summary(t, 3 * t + 2, n_resamples=300)["spearman_ci"] == [None, None]
    c = S.correlate(t, 3 * t + 2, n_boot=300)
    assert c["spearman_ci"] == (1.0, 1.0) and c["spearman_ci_method"].startswith("percentile")


def test_bootstrap_batches_do_not_change_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory bound (resamples drawn in batches) draws the same indices as one scipy call."""
    from scipy import stats as sps

    import simulate.stats as S

    rng = np.random.default_rng(2)
    x = rng.normal(size=120)
    y = x + rng.normal(size=120)
    direct = sps.bootstrap((x, y), S.pearson_vectorized, paired=True, vectorized=True, n_resamples=500,
                           method="BCa", **S._rng_kwargs(3)).confidence_interval
    whole = S.bootstrap_ci(x, y, S.pearson_vectorized, n_boot=500, seed=3, confidence=0.95)
    monkeypatch.setattr(S, "_BATCH_ELEMENTS", 120 * 7)  # batches of 7 resamples
    batched = S.bootstrap_ci(x, y, S.pearson_vectorized, n_boot=500, seed=3, confidence=0.95)
    assert whole == batched == ((float(direct.low), float(direct.high)), "BCa")
