"""Assert the paper's bounds in your own tests (``numpy.testing`` style).

Assertions (pass silently, returning the underlying check, or raise ``AssertionError`` with the
bound, measured vs bound, the failing point and the tightness ``log(measured / bound)``):

* :func:`assert_theorem31` -- Theorem 3.1: inversion/reconstruction error within its bounds for any
  velocity field or model and solver;
* :func:`assert_proposition21` -- Proposition 2.1: ``mu_f -> lambda_f`` and the lower bound;
* :func:`assert_lemma_d1` -- Lemma D.1: the log-determinants agree (any batched map or field);
* :func:`assert_theorem41` -- Theorem 4.1 on samples (Clopper-Pearson at a confidence level);
* :func:`assert_theorem43_bounds_valid` -- Theorem 4.3's bounds in [0, 1] and monotone.

Hypothesis strategies for valid parameters are in :mod:`simulate.testing.strategies` (imported
on its own: it needs ``hypothesis``); pytest fixtures come from the opt-in ``pfode`` plugin
(``pytest --pfode-fixtures``, :mod:`largemodel.pytest_plugin`).
"""

from simulate.testing._bounds import assert_theorem41, assert_theorem43_bounds_valid
from simulate.testing.assertions import assert_lemma_d1, assert_proposition21, assert_theorem31

__all__ = [
    "assert_lemma_d1",
    "assert_proposition21",
    "assert_theorem31",
    "assert_theorem41",
    "assert_theorem43_bounds_valid",
]
