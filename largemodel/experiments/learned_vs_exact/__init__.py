"""Learned vs exact flows on known mixtures: does a trained network inherit its data law's instability? (issue 28)

Owns: ``experiment`` (options, regimes, units, run), ``model`` (the MLP velocity net as a simulator field),
``training`` (training on samples of ``p_g``, cached by content, resumable), ``shipped`` (the quick scale's
nets shipped as package data in ``shipped_nets/``, and their regeneration), ``measure`` (one field at given
points with given noise), ``judge`` (inherits / damps / exaggerates / undetermined, the claim, the control),
``figures``. Mathematics: docs/theory.md §10.8.
May import: everything in ``largemodel`` below ``experiments``, ``simulate``, ``theory``.
"""
