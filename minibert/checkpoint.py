"""Checkpoint files -> {HuggingFace tensor name: NumPy array}, for every format transformers saves.

A model directory holds one of these, looked for in this order (transformers' order: safetensors
first):

    model.safetensors                  one safetensors file
    model.safetensors.index.json       safetensors shards, listed by a "weight_map"
    pytorch_model.bin                  torch.save's zip format, read without torch (torch_pickle.py)
    pytorch_model.bin.index.json       .bin shards, listed by a "weight_map"

Files are memory-mapped: the arrays returned here are read-only views of the file (bfloat16, which
NumPy lacks, is converted to float32 at once). The parameter tree copies what it keeps
(weights._as_float32), so each weight is copied once, and the file can be replaced after loading.

The safetensors reader is minibert's own, and strict: every rule the reference implementation
enforces is checked before any array is made, and each failure names the file and the tensor.
Layout: 8 bytes little-endian N, N bytes of JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the byte buffer that the offsets point into (relative to its start).
"""

import json
import math
import mmap
from pathlib import Path, PurePosixPath

import numpy as np

from minibert.config import show
from minibert.errors import ModelFormatError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
CHECKPOINT_NAMES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)  # priority order

MAX_HEADER_BYTES = 100_000_000   # the reference implementation's cap on a safetensors header
MAX_NDIM = 64
MAX_ELEMENTS = 2 ** 40           # per tensor, zero-size dimensions aside: far beyond any BERT

BFLOAT16 = "bfloat16"  # NumPy has no bfloat16 dtype; readers convert these to float32

# safetensors dtype -> NumPy dtype (little-endian, as the format is).
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": BFLOAT16,
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# Known to safetensors, but with no NumPy equivalent and no use in a BERT checkpoint.
_UNSUPPORTED_SAFETENSORS_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64")


FETCH_RECORD = ".minibert-fetch.json"  # written by `minibert fetch` (minibert/fetch.py)


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
    from minibert.torch_pickle import read_torch_bin  # the .bin reader is only needed for .bin

    path = Path(path)
    if path.name.endswith(".index.json"):
        if path.name.startswith("pytorch_model"):
            return read_sharded(path, ".bin", read_torch_bin)
        return read_sharded(path, ".safetensors", read_safetensors)
    if path.suffix == ".bin":
        return read_torch_bin(path)
    return read_safetensors(path)


# --- memory mapping and dtypes ---------------------------------------------------------------

def map_file(path: Path):
    """The whole file, memory-mapped read-only (b"" for an empty file, which mmap refuses)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc}") from None


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits -> float32, exactly: a bfloat16 is the top half of a float32.

    The result owns its memory (uint32(bits) << 16, viewed as float32).
    """
    out = np.empty(bits.shape, dtype=np.float32)
    as_int = out.view(np.uint32)
    as_int[...] = bits
    as_int <<= 16
    return out


def owns_memory(array: np.ndarray) -> bool:
    """True when the array's memory is a NumPy allocation (a converted tensor), not the mapped file."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.base is None


def check_shape(shape, what: str) -> tuple[int, ...]:
    """A tensor shape: a list of non-negative integers of sane size; `what` names file and tensor."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM:
        raise ModelFormatError(f"{what}: shape must be a list of at most {MAX_NDIM} integers, found {short_repr(shape)}")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ModelFormatError(f"{what}: shape must hold non-negative integers, found {short_repr(shape)}")
    if math.prod(max(dim, 1) for dim in shape) > MAX_ELEMENTS:
        raise ModelFormatError(f"{what}: shape {list(shape)} is too large (more than 2**40 elements)")
    return tuple(shape)


short_repr = show  # bounded, and safe for any JSON value (config.show)


# --- safetensors ---------------------------------------------------------------------------

def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file: read-only views of the mapped file (bf16 -> float32)."""
    path = Path(path)
    where = f"{path}: cannot read safetensors file"
    data = map_file(path)
    entries, buffer_start = _safetensors_header(data, where)
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        if dtype == BFLOAT16:
            bits = np.frombuffer(data, dtype="<u2", count=(end - begin) // 2, offset=buffer_start + begin)
            tensors[name] = bfloat16_to_float32(bits).reshape(shape)
        else:
            count = (end - begin) // dtype.itemsize
            array = np.frombuffer(data, dtype=dtype, count=count, offset=buffer_start + begin) if count \
                else np.empty(0, dtype=dtype)
            tensors[name] = array.reshape(shape)
    return tensors


def _safetensors_header(data, where: str):
    """Validate the header against the file: [(name, dtype, shape, begin, end)], buffer start.

    The rules are the reference implementation's: a JSON object after an 8-byte length; every
    tensor's byte size equal to product(shape) * itemsize; offsets that tile the buffer exactly,
    in order, with no overlap and no gap, up to the end of the file.
    """
    size = len(data)
    if size < 8:
        raise ModelFormatError(f"{where}: {size} bytes, too short for the 8-byte header length (truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise ModelFormatError(f"{where}: header length {n} is above the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > size:
        raise ModelFormatError(f"{where}: header length {n} runs past the end of the {size}-byte file (truncated?)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{where}: header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{where}: header must be a JSON object, found {type(header).__name__}")

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFormatError(f"{where}: __metadata__ must be an object of strings")

    entries = [_safetensors_entry(name, info, f"{where}: tensor {name!r}") for name, info in header.items()]
    buffer_size = size - 8 - n
    expected = 0  # the next tensor must start where the previous one ended
    previous = None
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if end > buffer_size:
            raise ModelFormatError(
                f"{where}: tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the "
                f"{buffer_size}-byte data buffer (truncated?)")
        if begin < expected:
            raise ModelFormatError(
                f"{where}: tensor {name!r}: data_offsets [{begin}, {end}] overlap tensor {previous!r}")
        if begin > expected:
            raise ModelFormatError(
                f"{where}: tensor {name!r}: data_offsets [{begin}, {end}] leave bytes [{expected}, {begin}) "
                "of the buffer to no tensor")
        expected, previous = end, name
    if expected != buffer_size:
        raise ModelFormatError(
            f"{where}: the tensors end at byte {expected} of the data buffer, but the file holds "
            f"{buffer_size} bytes there ({buffer_size - expected} bytes that belong to no tensor)")
    return entries, 8 + n


def _safetensors_entry(name: str, info, what: str):
    if not isinstance(info, dict):
        raise ModelFormatError(f"{what}: expected an object with dtype, shape and data_offsets, "
                               f"found {type(info).__name__}")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise ModelFormatError(f"{what}: no {field!r} field")
    tag = info["dtype"]
    if tag in _UNSUPPORTED_SAFETENSORS_DTYPES:
        raise ModelFormatError(f"{what}: dtype {tag} is not supported (no NumPy equivalent)")
    if not isinstance(tag, str) or tag not in _SAFETENSORS_DTYPES:
        raise ModelFormatError(f"{what}: unknown dtype {short_repr(tag)}; expected one of {', '.join(_SAFETENSORS_DTYPES)}")
    dtype = _SAFETENSORS_DTYPES[tag]
    shape = check_shape(info["shape"], what)
    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        raise ModelFormatError(f"{what}: data_offsets must be two non-negative integers, found {short_repr(offsets)}")
    begin, end = offsets
    if begin > end:
        raise ModelFormatError(f"{what}: data_offsets [{begin}, {end}] end before they begin")
    itemsize = 2 if dtype == BFLOAT16 else dtype.itemsize
    if math.prod(shape) * itemsize != end - begin:
        raise ModelFormatError(
            f"{what}: shape {list(shape)} of {tag} needs {math.prod(shape) * itemsize} bytes, "
            f"but data_offsets [{begin}, {end}] hold {end - begin}")
    return name, dtype, shape, begin, end


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


# --- shards --------------------------------------------------------------------------------

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
        index = json.loads(text, object_pairs_hook=_no_duplicate_keys)
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
        raise ModelFormatError(f"{what}: shard must be a file name, found {short_repr(shard)}")
    pure = PurePosixPath(shard)
    if "\\" in shard or ":" in shard or len(pure.parts) != 1 or pure.name in (".", "..") or pure.is_absolute():
        raise ModelFormatError(
            f"{what}: shard {shard!r} is not a plain file name in the model directory (paths are refused)")
    if not shard.endswith(suffix):
        raise ModelFormatError(f"{what}: shard {shard!r} is not a {suffix} file")
