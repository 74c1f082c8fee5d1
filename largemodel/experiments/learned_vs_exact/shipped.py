"""The quick scale's learned nets, shipped with the package so that a first quick report trains nothing.

:data:`.training.SHIPPED_DIR` holds one folder ``learned-<regime>-n<n>-<key>`` per regime and ``n`` of
:data:`.experiment.FAST` (``key``: :func:`.training.folder_name`), the output of :func:`.training.trained_nets`'
training for that configuration (its fixed seeds) with the files of :func:`.training.shipped_files`: the EMA weights
at each budget (``budget-<steps>.safetensors``) and ``meta.json``. :func:`.training.trained_nets` loads a shipped
folder when its key matches the requested configuration and trains (into the cache) otherwise. The slow test
``tests/largemodel/test_learned_vs_exact.py::test_retraining_reproduces_the_shipped_nets`` retrains them and checks
that the shipped weights are the ones the current code produces. Regenerate them with
``python -m largemodel.experiments.learned_vs_exact.shipped WORK`` (after a change that bumps
:data:`.training.TRAIN_VERSION`, or to the quick scale's options).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["shipped_configs", "regenerate"]


def shipped_configs() -> list[tuple[str, int]]:
    """The ``(regime, n)`` whose nets are shipped: every cell of :data:`.experiment.FAST`."""
    from largemodel.experiments.learned_vs_exact.experiment import FAST

    return [(regime, n) for regime in FAST.regimes for n in FAST.ns]


def regenerate(work: Path, dest: Path | None = None) -> list[Path]:
    """Train the nets of :func:`shipped_configs` into ``work`` (the training of :mod:`.training`, its fixed seeds;
    one thread) and copy their :func:`.training.shipped_files` into ``dest`` (default
    :data:`.training.SHIPPED_DIR`); return the folders written in ``dest``."""
    import shutil

    import torch

    from largemodel.experiments.learned_vs_exact import training
    from largemodel.experiments.learned_vs_exact.experiment import FAST, exact_field

    dest = Path(dest) if dest is not None else training.SHIPPED_DIR
    spec, threads, written = FAST.net_spec(), torch.get_num_threads(), []
    torch.set_num_threads(1)  # as the report trains them (the experiment's ``threads``)
    try:
        for regime, n in shipped_configs():
            field = exact_field(regime, n, FAST)
            folder, key = training.cache_folder(field, spec, regime, cache_dir=work)
            if not training._finished(folder, key):
                training._train(field, spec, folder, key, checkpoint_every=0)
            (dest / folder.name).mkdir(parents=True, exist_ok=True)
            for name in training.shipped_files(spec):
                shutil.copyfile(folder / name, dest / folder.name / name)
            written.append(dest / folder.name)
    finally:
        torch.set_num_threads(threads)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m largemodel.experiments.learned_vs_exact.shipped WORK_FOLDER")
    print(*regenerate(Path(sys.argv[1])), sep="\n")
