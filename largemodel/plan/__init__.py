"""The cost plan of a large-model run: FLOPs, time per image and peak memory of each estimator.

Owns: ``arch`` (architectures, token counts, forward FLOPs), ``memory`` (the measured memory model in
``memory_model.json``, scaled), ``cost`` (the plan printed by ``--plan`` and the pre-run check).

May import: ``theory``, ``largemodel.models`` (configs), ``largemodel.study`` (its config). It loads no model and computes nothing on one.
"""
