"""PNG output shared by every package: lay out, write (creating the folder), close.

The bottom layer, so that ``theory.highdim.curves``, the simulator's experiments and the large-model
figures all save the same way; it imports matplotlib only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["save_png"]


def save_png(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """``fig.tight_layout()``, write ``fig`` to ``path`` as a PNG at ``dpi`` (parent folders created),
    close it (pyplot), return the path."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
