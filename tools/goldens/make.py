"""Rebuild minibert's test fixtures from transformers, or check that they reproduce.

    python tools/goldens/make.py                    # rebuild every fixture under tests/fixtures/
    python tools/goldens/make.py --check            # rebuild in a temp dir, compare with the committed files
    python tools/goldens/make.py --only bert xlmr-long   # some families or fixtures
    python tools/goldens/make.py --out DIR          # another fixtures root (DIR/goldens/<name>/, DIR/formats/)

Needs the `golden` extra (torch, transformers, tokenizers, sentencepiece; sentence-transformers for its
cross-check). The families are the spec modules next to this file, each defining FAMILY (a
core.Family): a new family is one new file. core.py says what a golden holds.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # tools/ is no package: the specs import core and each other by name

import core


def families() -> list[core.Family]:
    return [importlib.import_module(p.stem).FAMILY for p in sorted(HERE.glob("*.py")) if p.stem not in ("core", "make")]


if __name__ == "__main__":
    sys.exit(core.main(families(), sys.argv[1:]))
