"""The reconstruction-instability study on a diffusion transformer (paper Fig. 4c, A1, App. F).

Owns: ``ode`` (Euler / Heun regeneration ``G`` and inversion ``F~`` on the model's sigma grid),
``instability`` (``mu_bar``, ``lambda_G``, ``||J_G||_2``, one-pass ``log Lambda_G``: adapters to
``theory.estimators``, docs/theory.md §10.4), ``config`` (``StudyConfig``, frozen and validated),
``jacobian`` (Jacobian products by the routes ``math-jvp`` / ``vjp-fd``, docs/theory.md §10.6), ``items`` (content-keyed images and records, per-image generators), ``runner`` (``run_study``, resumable),
``launch`` (several processes: run id, the lock owner checked on every rank, no barrier),
``stats`` (correlations with bootstrap intervals), ``plots`` (its figures), ``guidance`` (guidance as a
study axis: per image and (prompt mode, W), paired changes with sign-test and bootstrap intervals, its
figure; docs/theory.md §10.9). ``pfode largemodel study``
and ``gallery`` run here.

May import: ``theory``, ``simulate``, ``largemodel.models``.
"""

from largemodel.study.config import StudyConfig

__all__ = ["StudyConfig"]
