"""One Markdown table cell for GitHub: the escaping every table pfode writes goes through."""

from __future__ import annotations

import re

__all__ = ["table_cell"]


def table_cell(text: str) -> str:
    """``text`` safe inside a GitHub-flavoured Markdown table cell: ``|`` escaped (also inside
    backticks, where GFM honours ``\\|`` too), line breaks as spaces, empty as ``-``."""
    text = " ".join(str(text).split())
    return re.sub(r"(?<!\\)\|", r"\\|", text) or "-"
