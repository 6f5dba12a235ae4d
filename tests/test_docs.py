"""The walk-through in docs/ runs: its Python blocks, in order, in one namespace, from the repository root."""

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "how-a-cross-encoder-scores.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_walkthrough_code_runs():
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    namespace, cwd = {"__name__": "walkthrough"}, os.getcwd()
    os.chdir(ROOT)
    try:
        for number, block in enumerate(blocks, start=1):
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(block, f"{DOC.name}, block {number}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert abs(namespace["score"] - namespace["logit"][0]) < 1e-4


def test_walkthrough_names_real_files():
    """Every minibert/ file the page follows exists."""
    named = set(re.findall(r"`(minibert/[\w/]+\.py)`", DOC.read_text(encoding="utf-8")))
    assert {"minibert/formats/tokenizer.py", "minibert/models/batch.py", "minibert/models/bert.py",
            "minibert/ops/reference.py"} <= named
    assert all((ROOT / path).is_file() for path in named), named
