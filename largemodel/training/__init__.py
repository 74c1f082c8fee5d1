"""Small flow-matching transformers trained here, offline: data, objective, options, training loop, cache.

Owns: ``train`` (the training loop, cached models), ``options`` (a run's frozen configuration and cache
key), ``objective`` (the conditional flow-matching loss, docs/theory.md §10.5), ``cache`` (model cache,
checkpoints loaded with ``weights_only=True``, finished folders), ``data`` (digits, faces, photo patches; their names in ``datasets``),
``quality`` (sample quality, measured), ``classes`` (a class-conditional model: learned class
embeddings, condition dropout, docs/theory.md §10.9), ``cli`` (``pfode largemodel train``), ``shipped`` (the quick
report's three trained models, package data, returned by ``cached_model`` when their key matches).

May import: ``theory``, ``simulate``, ``largemodel.models``.
"""
