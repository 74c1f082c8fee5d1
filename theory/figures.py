"""PNG output shared by every package: lay out, write (creating the folder), close.

The bottom layer, so that ``theory.highdim.curves``, the simulator's experiments and the large-model
figures all save the same way; it imports matplotlib only when called. The PNG is written by
``theory.output.files.write_bytes`` (atomically, recorded in the run folder's manifest, no link
followed).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from theory.output.files import write_bytes

__all__ = ["save_png"]


def save_png(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """``fig.tight_layout()``, write ``fig`` to ``path`` as a PNG at ``dpi`` (parent folders created),
    close it (pyplot), return the path."""
    import matplotlib.pyplot as plt

    out = Path(path)
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return write_bytes(out, buf.getvalue())
