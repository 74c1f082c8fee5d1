"""The ``pfode`` command line and the verification report (verdict table, ``results.json``).

Each claim of the paper gets one verdict, decided by a measurement; the mathematics behind each
claim is stated in docs/theory.md.

Modules:

* :mod:`reports.cli` -- ``main``: the ``pfode`` entry point; dispatches to ``theory``, ``simulate``,
  ``largemodel`` and ``report`` sub-commands; errors are one line and exit status 2.
* :mod:`reports.report_cli` -- the ``pfode report`` sub-command (options, scale, suites).
* :mod:`reports.cli_checks` -- argument checks shared by every ``pfode`` command (one line naming
  the flag).
* :mod:`reports.report` -- ``run_report``: runs the selected suites, writes ``report.md`` and
  ``results.json``.
* :mod:`reports.budget` -- the time budget: seconds planned per report section, printed next to
  the seconds spent.
* :mod:`reports.claims` -- the claim registry ``CLAIMS``: each ``Claim`` (id, text, paper section,
  docs/theory.md section) names the one function that decides it (``decided_by``, e.g.
  ``simulate.experiments.thm43.judge.judge``); ``ClaimRow`` is a row of the verdict table. The
  ``Verdict`` and its ``Status`` are defined once, in :mod:`simulate.verdict`.
* :mod:`reports.controls` -- negative controls: each claim's judge on an input where the claim is false
  (``Claim.controls`` names them; ``results.json`` rows carry ``controls``).
* :mod:`reports.identities` -- the "Checked identities" section (consistency checks, not findings).
* :mod:`reports.theory_suite` -- symbolic derivations, high-precision agreement, Theorem 4.3's
  bounds (docs/theory.md §8).
* :mod:`reports.simulate_suite` -- every experiment of ``simulate.experiments``, measured.
* :mod:`reports.largemodel_suite` -- runs :mod:`largemodel.experiments.fig4c.experiment` (the
  reconstruction-instability study on models trained here or the user's own folder: Fig. 4(c),
  Theorem 4.1 / 4.3 on trained models, Lemma D.1) and renders its verdicts.
* :mod:`reports.explain_suite` -- runs :mod:`largemodel.experiments.explain.experiment` (why images
  reconstruct badly, docs/theory.md §5.3) and renders it.
* :mod:`reports.failure_suite` -- runs :mod:`largemodel.experiments.failure.experiment` (which images fail,
  predicted from one inversion pass) and renders it.
* :mod:`reports.learned_suite` -- runs :mod:`largemodel.experiments.learned_vs_exact.experiment` (learned vs
  exact flows on known mixtures, docs/theory.md §10.8) and renders its row and section.

The suites measure nothing themselves: every experiment, its options and its judge live in
``simulate.experiments`` or ``largemodel.experiments``; the suites run them and render the rows.

Importing the package imports nothing heavy: submodules and the names in ``__all__`` are loaded on
first access (the loader is :func:`theory._lazy.lazy_package`, shared with ``largemodel``).
"""

from __future__ import annotations

from theory._lazy import lazy_package

#: public names, each loaded lazily from its module
_EXPORTS: dict[str, str] = {
    "main": "cli",
    "run_report": "report",
    "CLAIMS": "claims",
}

#: submodules reachable as attributes (``reports.report``) without an explicit import
_SUBMODULES: tuple[str, ...] = (
    "budget",
    "claims",
    "cli",
    "cli_checks",
    "controls",
    "explain_suite",
    "failure_suite",
    "identities",
    "largemodel_suite",
    "learned_suite",
    "report",
    "report_cli",
    "simulate_suite",
    "theory_suite",
)

__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS, _SUBMODULES)
