"""Checkpoint files -> {HuggingFace tensor name: NumPy array}, for every format transformers saves.

A model directory holds one of these, looked for in this order (transformers' order: safetensors
first):

    model.safetensors                  one safetensors file (safetensors.py)
    model.safetensors.index.json       safetensors shards, listed by a "weight_map"
    pytorch_model.bin                  torch.save's zip format, read without torch (torch_pickle.py)
    pytorch_model.bin.index.json       .bin shards, listed by a "weight_map"

Files are memory-mapped: the arrays returned here are read-only views of the file (bfloat16 as a
HalfTensor of its bits, a view too). The parameter tree copies a float32 checkpoint's weights once
(models/params.py), so the file can be replaced after loading; a bfloat16 or float16 checkpoint's
matrices stay views of the mapped file unless widened at load, so while they are in use its file
may be replaced (a new file renamed over it) but not rewritten in place.
"""

import json
from pathlib import Path, PurePosixPath

import numpy as np

from minibert.errors import ModelFormatError, show
from minibert.formats.safetensors import no_duplicate_keys, read_safetensors
from minibert.formats.torch_pickle import read_torch_bin

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
CHECKPOINT_NAMES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)  # priority order

FETCH_RECORD = ".minibert-fetch.json"  # written by `minibert fetch` (minibert/formats/fetch.py)


def check_fetch_complete(model_dir: Path):
    """A folder `minibert fetch` is still filling (or was killed filling) is refused, not half loaded."""
    path = model_dir / FETCH_RECORD
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, too-long int, too deep
        return  # not ours to judge: the model files are checked on their own
    if isinstance(record, dict) and record.get("complete") is False:
        raise ModelFormatError(
            f"{model_dir}: an unfinished `minibert fetch` ({FETCH_RECORD} says complete: false); "
            "run the same fetch again to finish it")


def find_checkpoint(model_dir: Path) -> Path:
    """The checkpoint file (or shard index) of `model_dir`, in transformers' order of preference."""
    check_fetch_complete(model_dir)
    for name in CHECKPOINT_NAMES:
        path = model_dir / name
        if path.is_file():
            return path
    present = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
    others = [n for n in present if n.endswith((".bin", ".safetensors", ".index.json", ".pt", ".pth", ".ckpt"))]
    hint = f" (found {', '.join(others)}, not one of these)" if others else ""
    raise ModelFormatError(f"{model_dir}: no checkpoint: expected {', '.join(CHECKPOINT_NAMES)}{hint}")


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint file found by find_checkpoint, by name."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        if path.name.startswith("pytorch_model"):
            return read_sharded(path, ".bin", read_torch_bin)
        return read_sharded(path, ".safetensors", read_safetensors)
    if path.suffix == ".bin":
        return read_torch_bin(path)
    return read_safetensors(path)


def read_sharded(index_path: Path, suffix: str, read_shard) -> dict[str, np.ndarray]:
    """All tensors of a sharded checkpoint: the index's "weight_map" names each tensor's shard.

    Every shard must be a plain file name in the index's directory (no paths: "../x" is refused),
    must exist, and must hold exactly the tensors the index gives it: a tensor in two shards,
    or in a shard the index does not say, is an error.
    """
    index_path = Path(index_path)
    try:
        text = index_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{index_path}: cannot read: {exc}") from None
    try:
        index = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{index_path}: not valid JSON: {exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFormatError(f"{index_path}: expected a non-empty \"weight_map\" object (tensor name -> shard file)")

    shard_names = []
    for tensor, shard in weight_map.items():
        _check_shard_name(shard, suffix, f"{index_path}: tensor {tensor!r}")
        if shard not in shard_names:
            shard_names.append(shard)
    missing = [s for s in shard_names if not (index_path.parent / s).is_file()]
    if missing:
        raise ModelFormatError(f"{index_path}: shard file(s) not found: {', '.join(missing)}")

    tensors: dict[str, np.ndarray] = {}
    found_in: dict[str, str] = {}
    for shard in shard_names:
        for name, array in read_shard(index_path.parent / shard).items():
            if name in found_in:
                raise ModelFormatError(f"{index_path}: tensor {name!r} is in two shards, {found_in[name]} and {shard}")
            if weight_map.get(name) != shard:
                listed = f"lists it in {weight_map[name]}" if name in weight_map else "does not list it"
                raise ModelFormatError(f"{index_path}: tensor {name!r} is in shard {shard}, but the index {listed}")
            tensors[name], found_in[name] = array, shard
    absent = [name for name in weight_map if name not in tensors]
    if absent:
        raise ModelFormatError(
            f"{index_path}: tensor {absent[0]!r} is listed in shard {weight_map[absent[0]]}, which does not "
            f"hold it" + (f" ({len(absent) - 1} more such tensors)" if len(absent) > 1 else ""))
    return tensors


def _check_shard_name(shard, suffix: str, what: str):
    if not isinstance(shard, str) or not shard:
        raise ModelFormatError(f"{what}: shard must be a file name, found {show(shard)}")
    pure = PurePosixPath(shard)
    if "\\" in shard or ":" in shard or len(pure.parts) != 1 or pure.name in (".", "..") or pure.is_absolute():
        raise ModelFormatError(
            f"{what}: shard {shard!r} is not a plain file name in the model directory (paths are refused)")
    if not shard.endswith(suffix):
        raise ModelFormatError(f"{what}: shard {shard!r} is not a {suffix} file")
