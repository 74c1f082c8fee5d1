"""The large-model figures redrawn for issue 31 are large enough to read and free of cache keys:
drawn from synthetic numbers (seconds), each PNG at least 600 x 300 pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_trend_calibration_and_scatter_figures_are_readable(tmp_path) -> None:
    from largemodel.diagnose.predict import calibration_figure
    from largemodel.experiments.fig4c.figures import draw_figures
    from largemodel.study.plots import scatter_instability
    from largemodel.study.stats import correlate

    trend = [{"n": n, "P_inst": 0.0, "p1": 1.0, "p2": p2, "median_z2_over_n": z, "median_log_Lambda": ll}
             for n, p2, z, ll in ((64, 1.0, 7.3, -2.8), (256, 1.0, 2.4, -3.5))]
    (name,) = draw_figures(tmp_path, trend)
    rng = np.random.default_rng(0)
    labels = (rng.random(60) < 0.1).astype(int)
    score = rng.random(60) + labels
    result = {"labels": labels, "fraction": 0.1, "error_key": "mse_latent",
              "scores": {"velocity_change": {"auroc": 0.8}, "combined_logistic": {"auroc": 0.7}},
              "values": {"velocity_change": score, "combined_logistic": np.clip(0.05 + 0.2 * score * rng.random(60), 0, 1)}}
    roc = calibration_figure(result, tmp_path / "roc_calibration.png", title="which images fail")
    mu = rng.uniform(0.3, 0.7, 48)
    err = np.exp(5 * mu - 8 + rng.normal(0, 0.5, 48))
    scatter = scatter_instability([{"mu_bar": a, "mse_latent": b} for a, b in zip(mu, err)], "mu_bar", "mse_latent",
                                  tmp_path / "scatter.png", title="Fig. 4(c)",
                                  stats=correlate(np.log(mu), np.log(err), n_boot=100, seed=0))
    for path in (tmp_path / name, roc, scatter):
        width, height = _size(path)
        assert width >= 600 and height >= 300, (path.name, width, height)


def test_log_ticks_are_plain_numbers() -> None:
    """``readable_log_ticks``: 64 reads as 64 (control: matplotlib's default log formatter writes
    a mathtext power for it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from theory.figures import readable_log_ticks

    fig, ax = plt.subplots()
    ax.plot([40, 600], [1, 2])
    ax.set_xscale("log")
    fig.canvas.draw()
    default = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    readable_log_ticks(ax.xaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert any("times" in t for t in default)  # control: 6x10^1 style labels without the helper
    assert labels and all("$" not in t and "times" not in t for t in labels), labels
    assert {"50", "100", "200", "500"} <= set(labels) and minor == []
