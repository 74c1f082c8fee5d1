"""The README's simulate API example (the block after ``<!-- api-example -->``) runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"



def test_readme_python_api_example_runs_and_its_comment_holds() -> None:
    """The README's simulate API example (after ``<!-- api-example -->``) runs; its last line's
    comment ("~0.63 (seed 0)": log error tracks log mu across 512 points) is what it computes."""
    import torch

    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no ```python block after <!-- api-example -->"
    lines = match.group(1).strip().splitlines()
    assert "~0.63 (seed 0)" in lines[-1]
    scope: dict = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile("\n".join(lines[:-1]), "README.md", "exec"), scope)
        corr = float(eval(lines[-1].split("#")[0], scope))
    finally:
        torch.set_num_threads(before)
    assert abs(corr - 0.63) < 0.01, corr
    assert scope["log_Lam"].shape == (512,) and bool(torch.isfinite(scope["log_Lam"]).all())
