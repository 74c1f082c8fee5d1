"""Models and their inputs: local diffusers folders loaded as a ``FlowModel``, images read from a folder.

Owns: ``load`` (``load_model``: a local SD3 / SD3.5 / FLUX folder, offline, safetensors only),
``flow_model`` (``FlowModel``: the velocity field ``u(x, sigma)`` of the PF-ODE, docs/theory.md §10.1),
``conditioning`` (``Conditioning``: prompt, unconditional embeddings, guidance scale, §10.7), ``prompts``
(each prompt encoded once by the folder's text encoders, cached), ``pipeline`` (``from_pipeline``: a
loaded diffusers pipeline object as a ``FlowModel``),
``folder`` (reading and writing model folders), ``weights`` (complete models only: the tensors the
configs define, present, shaped, floating, finite; the declared size within memory), ``transformer_configs`` (the one ``build_transformer``
and the configs kept in ``configs/``), ``tiny`` / ``fullsize`` (random models from configs for tests and
benchmarks), ``images`` (listing, seeded subsets, loading), ``routes`` (``--jacobian-route`` and
``--fd-scheme`` names and the finite-difference steps, torch-free).

May import: ``theory``, ``simulate``. Nothing else in ``largemodel``: every other subpackage builds on this one.
"""
