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

__all__ = ["save_png", "readable_log_ticks"]


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


def readable_log_ticks(axis: Any) -> None:
    """Tick labels a reader takes in at a glance on a log-scaled matplotlib ``axis`` (call after
    the data are drawn): plain numbers (``64``, ``0.5``, ``1e-05``; never ``6x10^1``), majors at
    1, 2, 5 x 10^k on an axis spanning under two decades (at 10^k otherwise), no minor labels (they
    overlap on short axes)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 and hi > 0 else math.inf
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())
