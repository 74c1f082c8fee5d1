"""The three models of the quick report, shipped with the package so that a first report trains nothing.

Each folder here, ``<data>-<size>px-<key>``, is the output of ``largemodel.training.train.train_model``
for one configuration (``key`` = ``options.config_key`` of its ``train_config``), produced by this
project's own training code with its fixed seeds:

* ``digits-8px-7dd8d9a9f037424d``: ``("digits", 8, 100 training images, 1000 steps)``;
* ``digits-16px-4bd7180b95311f95``: ``("digits", 16, 100 training images, 1000 steps)``;
* the class-conditional ``digits-8px-<key>`` (``SPECS``' third: 500 training images, 1000 steps,
  condition dropout 0.1; ``largemodel.training.classes``), the report's guidance section's model,

the specs of the report's quick scale (``largemodel.experiments.*``). ``cached_model`` returns a
shipped folder when its key matches the requested configuration, and trains (into the cache)
otherwise. The slow test ``tests/largemodel/test_lm_shipped.py`` retrains them and checks the
shipped weights are the ones the current code produces. A change to training bumps
``options.TRAIN_VERSION``, which changes every key: the shipped folders then stop matching and
are retrained into the cache (regenerate them with ``python -m largemodel.training.shipped WORK``).

May import: ``largemodel.training``.
"""

from __future__ import annotations

from pathlib import Path

# the lookup lives in ``cache`` (``train`` imports it; this package imports ``train`` to regenerate)
from largemodel.training.cache import FILES, SHIPPED_DIR, SPECS, shipped_files, shipped_model

__all__ = ["FILES", "SHIPPED_DIR", "SPECS", "regenerate", "shipped_files", "shipped_model"]


def regenerate(work: Path, dest: Path = SHIPPED_DIR) -> list[Path]:
    """Train the shipped configurations into ``work`` (``train_model``, the fixed seeds) and copy
    their :data:`FILES` into ``dest`` (``python -m largemodel.training.shipped WORK``); returns the
    folders written in ``dest``."""
    import shutil

    from largemodel.training.options import config_key, train_config
    from largemodel.training.train import train_model

    written = []
    for data, size, train_images, steps, classes in SPECS:
        extra = {"class_conditional": True} if classes else {}
        name = f"{data}-{size}px-{config_key(train_config(data, size, train_images, steps=steps, **extra))}"
        trained = train_model(data, size, train_images, Path(work) / name, steps=steps, progress=False, **extra)
        for rel in shipped_files(classes):
            (Path(dest) / name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trained / rel, Path(dest) / name / rel)
        written.append(Path(dest) / name)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m largemodel.training.shipped WORK_FOLDER")
    print(*regenerate(Path(sys.argv[1])), sep="\n")
