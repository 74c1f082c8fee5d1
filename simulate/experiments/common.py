"""Shared machinery of the experiments: results folders, resumable records, verdicts, figures.

Conventions every experiment follows:

* ``run(out_dir, *, full=False, seed=0, progress=True, **overrides)`` writes into ``out_dir``:
  ``result.json`` (parameters, seed, numbers, verdict) and PNG figures; the fast default runs in
  seconds to a minute on a laptop CPU, ``full=True`` is the larger scale.
* Shape: a frozen ``<Exp>Options`` dataclass validated on construction (``FAST``, ``FULL``,
  ``make_options(full, **overrides)`` through :func:`replace_options`; ``params`` in ``result.json``
  is ``{"full", "seed", **asdict(options)}``), units of work computed by ``compute_unit``, a
  ``judge`` returning :class:`Judged`, figures in ``<exp>_figures``; ``run`` only sweeps
  (:func:`simulate.experiments.runner.sweep`), judges, draws and writes.
* Long sweeps write one JSON line per finished unit of work to ``records.jsonl`` through
  :class:`RecordStore` as they go; a rerun with the same parameters skips the units already
  recorded (an interrupted sweep resumes where it stopped, nothing is lost or repeated).
  A rerun with different parameters starts a fresh store (the old one is moved aside).
  ``RecordStore`` and ``json_ready`` live in :mod:`simulate.store` (re-exported here).
* The verdict comes from the measurement: ``verified``, ``holds in regime ...`` or ``refuted``,
  with the evidence as a sentence and the key number.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from simulate.store import RecordStore, atomic_write_text, json_ready
from simulate.verdict import Verdict  # the one Verdict (re-exported here)
from theory.figures import save_png

__all__ = [
    "Verdict",
    "Judged",
    "ExperimentResult",
    "RecordStore",
    "write_result",
    "progress_iter",
    "json_ready",
    "savefig",
    "replace_options",
]

_Options = TypeVar("_Options")


def replace_options(base: _Options, overrides: dict[str, Any]) -> _Options:
    """``base`` (a frozen options dataclass) with the fields in ``overrides`` replaced.

    Lists become tuples; the dataclass's ``__post_init__`` validates the result. Unknown names raise
    ``ValueError`` listing the valid ones (before anything is built).
    """
    valid = [f.name for f in dataclasses.fields(base)]  # type: ignore[arg-type]
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ValueError(f"unknown option(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
    return dataclasses.replace(base, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()})  # type: ignore[type-var]


@dataclass
class Judged:
    """What an experiment's ``judge`` returns: the overall verdict, per-claim verdicts (when one
    experiment checks several claims) and the numbers the judgement produced (for ``result.json``)."""

    overall: Verdict
    numbers: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Verdict] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """What an experiment returns (and writes as ``result.json``)."""

    name: str
    claim_ids: list[str]
    verdict: Verdict
    params: dict[str, Any]
    numbers: dict[str, Any]
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    claim_verdicts: dict[str, Verdict] = field(default_factory=dict)
    """Per-claim verdicts when one experiment checks several claims (else ``verdict`` serves all)."""

    def verdict_for(self, claim_id: str) -> Verdict:
        """The verdict on ``claim_id`` (its own if given, else the experiment's)."""
        return self.claim_verdicts.get(claim_id, self.verdict)

    def as_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))


def write_result(out_dir: Path, result: ExperimentResult) -> Path:
    """Write ``result.json`` atomically (temp file + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out_dir / "result.json", json.dumps(result.as_dict(), indent=1))


def progress_iter(items: Iterable[Any], desc: str, enabled: bool = True, total: int | None = None) -> Iterator[Any]:
    """``tqdm`` progress bar on stderr when enabled (and a terminal or explicitly asked)."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)


def savefig(fig: Any, out_dir: Path, name: str) -> str:
    """Save a matplotlib figure as ``out_dir/name`` (PNG, 110 dpi), close it, return the file name."""
    save_png(fig, Path(out_dir) / name)
    return name
