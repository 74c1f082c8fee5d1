"""The cost plan of a large-model run: FLOPs, time per image and peak memory of each estimator.

Owns: ``arch`` (architectures, token counts, forward FLOPs), ``memory`` (the measured memory model in
``memory_model.json``, scaled), ``cost`` (phases, prices, the table printed by ``--plan``), ``encoders`` (the text encoders' phase),
``commands`` (the plans and pre-run checks of ``study``, ``explain`` and ``rank``).

May import: ``theory``, ``largemodel.models`` (configs), ``largemodel.study`` (its config). It loads no model and computes nothing on one.
"""
