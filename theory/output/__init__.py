"""What pfode writes and deletes in an output folder (issue 30), for every package.

Owns: ``files`` (folder claims and kinds, the manifest in ``.pfode-owned``, ``--out`` rules, the
one file writer: atomic, recorded, no link followed, umask modes), ``removal`` (``--fresh`` and a
model folder's replacement: exactly the files the manifest records as pfode's and unchanged).
The bottom of the bottom layer, so that ``theory.figures`` and ``theory.highdim.curves`` write the
same way as the simulator and the large-model commands (``simulate.store`` re-exports it).

May import: nothing of pfode (the standard library only).
"""
