r"""``pfode largemodel train``: the flags, and the run that trains (or reuses) a model and prints it.

The training itself is ``largemodel.training.train`` (``train_model`` into ``--out``, or ``cached_model``
into the model cache); the quality numbers printed after it are ``largemodel.training.quality``'s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# torch-free at import (``pfode largemodel train --help`` answers at once); ``run_train`` imports the rest
from largemodel.training.datasets import DATASETS, DEFAULT_SIZE
from largemodel.training.options import DEFAULTS, SIGMA_SAMPLINGS

__all__ = ["add_train_arguments", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pfode largemodel train`` flags to ``parser``."""
    parser.add_argument("--data", choices=DATASETS, default="digits", help="training images (default digits)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: digits 8, faces 16, patches 16)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="training images (default: all not held out; patches 4096)")
    parser.add_argument("--heldout-images", type=int, default=None,
                        help="held-out images (default: 256; faces 20)")
    parser.add_argument("--out", default=None,
                        help="output model folder, new or pfode's (~ is expanded; default: the model cache, reused if already trained)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimiser steps (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default %(default)s)")
    parser.add_argument("--ema-decay", type=float, default=DEFAULTS["ema_decay"],
                        help="decay of the weights' exponential moving average, in [0, 1) (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the initial weights and batches (default %(default)s)")
    parser.add_argument("--data-seed", type=int, default=DEFAULTS["data_seed"], help="seed of the held-out split")
    parser.add_argument("--sigma-sampling", choices=SIGMA_SAMPLINGS, default=DEFAULTS["sigma_sampling"],
                        help="distribution of the training noise levels sigma (default %(default)s)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="pixels per token side (default: about 4 x 4 tokens, e.g. 8 px -> 2, 16 px -> 4)")
    parser.add_argument("--num-layers", type=int, default=DEFAULTS["num_layers"], help="transformer blocks (default %(default)s)")
    parser.add_argument("--num-heads", type=int, default=DEFAULTS["num_heads"], help="attention heads (default %(default)s)")
    parser.add_argument("--head-dim", type=int, default=DEFAULTS["head_dim"], help="width of each attention head (default %(default)s)")
    parser.add_argument("--class-conditional", action="store_true",
                        help="condition on the class (digits only), a learned embedding per class and a null one "
                             "(docs/theory.md section 10.9); load with --prompt 'digit 3'")
    parser.add_argument("--cond-dropout", type=float, default=None,
                        help="with --class-conditional: probability of training on the null class (default 0.1)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: none)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while training (default 1; 0: keep torch's setting)")
    parser.add_argument("--quality-samples", type=int, default=256, help="samples for the quality check (0: skip)")
    parser.add_argument("--sample-steps", type=int, default=50, help="Euler steps of the quality samples")
    parser.add_argument("--png", default=None, help="sample grid (default: <model folder>/samples.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Train (or reuse) the model ``args`` describe, print where it is and its quality; return 0.

    Raises:
        ValueError: invalid arguments (the message names the flag's parameter).
    """
    from largemodel.models.folder import PFODE_META_FILE
    from largemodel.training import train
    from largemodel.training.quality import quality_report
    from simulate.experiments.runner import torch_threads

    size = DEFAULT_SIZE[args.data] if args.size is None else args.size
    kwargs = dict(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay, seed=args.seed,
        data_seed=args.data_seed, heldout_images=args.heldout_images, sigma_sampling=args.sigma_sampling,
        patch_size=args.patch_size, num_layers=args.num_layers, num_heads=args.num_heads, head_dim=args.head_dim,
        class_conditional=args.class_conditional, cond_dropout=args.cond_dropout, progress=not args.no_progress, checkpoint_every=args.checkpoint_every,
        num_threads=None if args.threads == 0 else args.threads,
    )
    # looked up on the module at call time, so that ``largemodel.training.train`` is the one place to stub them
    if args.out is None:
        folder = train.cached_model(args.data, size, args.train_images, **kwargs)
    else:
        folder = train.train_model(args.data, size, args.train_images, args.out, **kwargs)
    meta = json.loads((folder / PFODE_META_FILE).read_text())
    print(f"model: {folder}")
    print(f"  {meta['data']} {meta['resolution']}px, {meta['train_images']} training images, {meta['steps']} steps, "
          f"{meta['train_seconds']:.0f} s; final loss {meta['final_loss']:.4f} "
          f"(EMA: train {meta['eval_loss_train']:.4f}, held-out {meta['eval_loss_heldout']:.4f})")
    if args.quality_samples:
        png = Path(args.png) if args.png else folder / "samples.png"
        with torch_threads(kwargs["num_threads"] or 0):  # None (--threads 0): torch's setting kept
            report = quality_report(folder, n_samples=args.quality_samples, steps=args.sample_steps,
                                    seed=args.seed, out_png=png)
        for line in report["summary"]:
            print(f"  {line}")
        print(f"  samples: {png}")
    return 0
