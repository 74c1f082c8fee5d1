"""The one "positive integer" rule of the option classes (``theory._validate.require_int``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from largemodel.experiments.explain import experiment as explain_study
from largemodel.experiments.failure import experiment as failure
from largemodel.experiments.fig4c import experiment as fig4c
from largemodel.study.config import StudyConfig
from largemodel.training.options import train_config
from simulate.experiments.fig3.options import make_options as fig3_options
from simulate.experiments.fig4.options import make_options as fig4_options
from simulate.experiments.lemma_d1.experiment import make_options as lemma_d1_options
from simulate.experiments.prop21.experiment import make_options as prop21_options
from simulate.experiments.thm31.experiment import make_options as thm31_options
from simulate.experiments.thm41.experiment import make_options as thm41_options
from simulate.experiments.thm42.options import make_options as thm42_options
from simulate.experiments.thm43.experiment import make_options as thm43_options
from theory._validate import require_int, require_ints


@given(st.integers(min_value=-10**6, max_value=10**6), st.integers(min_value=0, max_value=3))
def test_integers_pass_exactly_when_at_least_the_minimum(value: int, minimum: int) -> None:
    for v in (value, np.int64(value), float(value)):
        if value >= minimum:
            got = require_int("k", v, minimum)
            assert got == value and type(got) is int
        else:
            with pytest.raises(ValueError, match=rf"^k must be an integer >= {minimum}, got "):
                require_int("k", v, minimum)


@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (math.isfinite(x) and x.is_integer())))
def test_fractions_and_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="^n must be an integer >= 1"):
        require_int("n", value)


@pytest.mark.parametrize("value", [True, False, "3", None, [3], 3 + 0j])
def test_non_numbers_and_bools_are_refused(value) -> None:
    with pytest.raises(ValueError, match="^n must be an integer >= 0"):
        require_int("n", value, 0)


def test_require_ints_names_the_first_bad_field() -> None:
    @dataclasses.dataclass
    class Opts:
        a: object = 1
        b: object = 2.5
        c: object = -1

    with pytest.raises(ValueError, match=r"^b must be an integer >= 1, got 2.5$"):
        require_ints(Opts(), ("a", "b", "c"))
    require_ints(Opts(b=2, c=0), ("a", "b", "c"), minimum=0)  # the control: all whole and >= 0


@pytest.mark.parametrize("make, field, bad", [
    (fig3_options, "n_dirs", 0), (fig3_options, "density_n", 1), (fig4_options, "points", 2.5),
    (fig4_options, "num_perturbations", 0), (prop21_options, "line_points", 1), (prop21_options, "box_n", 0),
    (lemma_d1_options, "rk4_steps", 1), (thm31_options, "kappa_samples", 1), (thm41_options, "samples", 0),
    (thm42_options, "n_projections", 0), (thm43_options, "lln_nodes", -1), (thm43_options, "num_points", 1.5),
    (fig4c.make_options, "probes", 0), (explain_study.make_options, "power_iters", -1),
    (failure.make_options, "jvp_directions", -1), (failure.make_options, "n_boot", True),
])
def test_every_options_class_uses_the_rule(make, field, bad) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be an integer >= -?\d+, got {bad!r}"):
        make(**{field: bad})
    make()  # the defaults pass


@pytest.mark.parametrize("kwargs, field", [(dict(steps=0), "steps"), (dict(perturbations=-1), "perturbations"),
                                           (dict(images_per_batch=1.5), "images_per_batch")])
def test_study_config_and_training_use_the_rule(kwargs, field) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be an integer >= "):
        StudyConfig(**kwargs)
    with pytest.raises(ValueError, match="^num_heads must be an integer >= 1, got 0"):
        train_config("digits", 8, 10, num_heads=0)
    assert train_config("digits", 8, 10, steps=3.0)["steps"] == 3  # a whole float, kept as an int
