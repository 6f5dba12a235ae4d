"""The safetensors format: minibert's own reader, strict, and a small writer (for trace files).

The reader enforces every rule the reference implementation enforces before any array is made,
and each failure names the file and the tensor. Layout: 8 bytes little-endian N, N bytes of JSON
header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
the byte buffer that the offsets point into (relative to its start). Tensors come back as
read-only views of the memory-mapped file (bfloat16 as a HalfTensor of its bits, a view too).
"""

import json
import math
import os
from pathlib import Path

import numpy as np

from minibert.errors import ModelFormatError, show
from minibert.formats.tensors import (
    BFLOAT16,
    HalfTensor,
    check_shape,
    map_file,
)

MAX_HEADER_BYTES = 100_000_000   # the reference implementation's cap on a safetensors header

# safetensors dtype -> NumPy dtype (little-endian, as the format is).
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": BFLOAT16,
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# Known to safetensors, but with no NumPy equivalent and no use in a BERT checkpoint.
_UNSUPPORTED_SAFETENSORS_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file: read-only views of the mapped file (bf16: a HalfTensor view)."""
    path = Path(path)
    where = f"{path}: cannot read safetensors file"
    data = map_file(path)
    entries, buffer_start = _safetensors_header(data, where)
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        stored = np.dtype("<u2") if dtype == BFLOAT16 else dtype
        count = (end - begin) // stored.itemsize
        array = np.frombuffer(data, dtype=stored, count=count, offset=buffer_start + begin) if count \
            else np.empty(0, dtype=stored)
        tensors[name] = HalfTensor(array.reshape(shape)) if dtype == BFLOAT16 else array.reshape(shape)
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
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"), object_pairs_hook=no_duplicate_keys)
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
        raise ModelFormatError(f"{what}: unknown dtype {show(tag)}; expected one of {', '.join(_SAFETENSORS_DTYPES)}")
    dtype = _SAFETENSORS_DTYPES[tag]
    shape = check_shape(info["shape"], what)
    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        raise ModelFormatError(f"{what}: data_offsets must be two non-negative integers, found {show(offsets)}")
    begin, end = offsets
    if begin > end:
        raise ModelFormatError(f"{what}: data_offsets [{begin}, {end}] end before they begin")
    itemsize = 2 if dtype == BFLOAT16 else dtype.itemsize
    if math.prod(shape) * itemsize != end - begin:
        raise ModelFormatError(
            f"{what}: shape {list(shape)} of {tag} needs {math.prod(shape) * itemsize} bytes, "
            f"but data_offsets [{begin}, {end}] hold {end - begin}")
    return name, dtype, shape, begin, end


def no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def read_header(path: Path) -> tuple[dict, dict]:
    """(__metadata__, {tensor name: dtype tag}) of a safetensors file that read_safetensors has checked."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n).decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    return metadata, {name: info["dtype"] for name, info in header.items()}


_WRITE_TAGS = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64", np.dtype("<i4"): "I32"}


def write_safetensors(path, tensors: dict, metadata: dict) -> None:
    """A safetensors file (8-byte header length, JSON header, data), written whole then renamed into place.
    Arrays of float32, float16, int64 and int32 (what trace files hold), and HalfTensor (BF16 or F16)."""
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        tag = None
        if isinstance(array, HalfTensor):   # its stored elements, as they are
            tag, array = ("BF16" if array.dtype_name == BFLOAT16 else "F16"), array.stored
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": tag or _WRITE_TAGS[array.dtype.newbyteorder("<")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-aligned, as safetensors' own writer does
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for data in chunks:
                f.write(data)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
