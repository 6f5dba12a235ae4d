"""What every tensor file reader shares: memory-mapping a file, bfloat16, and checking a shape.

The readers (safetensors.py, torch_pickle.py) return arrays that are read-only views of the
memory-mapped file; bfloat16, which NumPy lacks, is converted to float32 at once (owning its memory).
"""

import math
import mmap
from pathlib import Path

import numpy as np

from minibert.errors import ModelFormatError, show

MAX_NDIM = 64
MAX_ELEMENTS = 2 ** 40           # per tensor, zero-size dimensions aside: far beyond any BERT

BFLOAT16 = "bfloat16"  # NumPy has no bfloat16 dtype; readers convert these to float32


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
        raise ModelFormatError(f"{what}: shape must be a list of at most {MAX_NDIM} integers, found {show(shape)}")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise ModelFormatError(f"{what}: shape must hold non-negative integers, found {show(shape)}")
    if math.prod(max(dim, 1) for dim in shape) > MAX_ELEMENTS:
        raise ModelFormatError(f"{what}: shape {list(shape)} is too large (more than 2**40 elements)")
    return tuple(shape)
