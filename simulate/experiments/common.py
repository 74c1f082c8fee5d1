"""Shared machinery of the experiments: results folders, resumable records, verdicts, figures.

Conventions every experiment follows:

* ``run(out_dir, *, full=False, seed=0, progress=True)`` writes into ``out_dir``:
  ``result.json`` (parameters, seed, numbers, verdict) and PNG figures; the fast default runs in
  seconds to a minute on a laptop CPU, ``full=True`` is the larger scale.
* Long sweeps write one JSON line per finished unit of work to ``records.jsonl`` through
  :class:`RecordStore` as they go; a rerun with the same parameters skips the units already
  recorded (an interrupted sweep resumes where it stopped, nothing is lost or repeated).
  A rerun with different parameters starts a fresh store (the old one is moved aside).
* The verdict comes from the measurement: ``verified``, ``holds in regime ...`` or ``refuted``,
  with the evidence as a sentence and the key number.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

__all__ = [
    "Verdict",
    "ExperimentResult",
    "RecordStore",
    "write_result",
    "progress_iter",
    "json_ready",
    "savefig",
    "resolve_options",
]


def resolve_options(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``overrides``; unknown keys raise ``ValueError`` listing the valid ones.

    Lists become tuples, so that options hash and compare the same whichever way they were given.
    """
    bad = sorted(set(overrides) - set(defaults))
    if bad:
        raise ValueError(f"unknown option(s) {', '.join(bad)}; valid: {', '.join(sorted(defaults))}")
    opts = dict(defaults)
    opts.update(overrides)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()}


@dataclass
class Verdict:
    """The measured verdict on one claim."""

    status: str  # "verified", "holds in regime: ...", "refuted"
    key_number: str
    evidence: str

    def __post_init__(self) -> None:
        if not self.status.startswith(("verified", "holds in regime", "refuted")):
            raise ValueError(f"status must start with verified / holds in regime / refuted, got {self.status!r}")


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


def json_ready(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, Paths and non-finite floats to JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_result(out_dir: Path, result: ExperimentResult) -> Path:
    """Write ``result.json`` atomically (temp file + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=1))
    os.replace(tmp, path)
    return path


class RecordStore:
    """Append-only JSON-lines store of finished work units, keyed, tied to a parameter hash.

    ``store.done(key)`` tells whether a unit is recorded; ``store.add(key, record)`` appends it
    and flushes to disk at once, so an interruption loses at most the unit in progress.
    """

    def __init__(self, out_dir: Path, params: dict[str, Any], name: str = "records.jsonl") -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / name
        self.signature = hashlib.sha256(json.dumps(json_ready(params), sort_keys=True).encode()).hexdigest()[:16]
        self._records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):  # drop a last line cut by an interruption
                text = text[: text.rfind("\n") + 1]
                self.path.write_text(text)
            lines = text.splitlines()
            header = json.loads(lines[0]) if lines else {}
            if header.get("signature") != self.signature:
                self.path.rename(self.path.with_name(f"{self.path.stem}.stale-{int(time.time())}.jsonl"))
            else:
                for line in lines[1:]:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by an interruption
                        continue
                    self._records[rec["key"]] = rec["value"]
        if not self.path.exists():
            self.path.write_text(json.dumps({"signature": self.signature, "params": json_ready(params)}) + "\n")

    def done(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any]:
        return self._records[key]

    def add(self, key: str, value: dict[str, Any]) -> None:
        if key in self._records:
            raise ValueError(f"key {key!r} is already recorded")
        value = json_ready(value)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"key": key, "value": value}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._records[key] = value

    def values(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


def progress_iter(items: Iterable[Any], desc: str, enabled: bool = True, total: int | None = None) -> Iterator[Any]:
    """``tqdm`` progress bar on stderr when enabled (and a terminal or explicitly asked)."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)


def savefig(fig: Any, out_dir: Path, name: str) -> str:
    """Save a matplotlib figure as ``out_dir/name`` (PNG, 110 dpi), close it, return the file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name
