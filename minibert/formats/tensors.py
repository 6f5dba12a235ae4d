"""What every tensor file reader shares: memory-mapping a file, bfloat16, and checking a shape.

The readers (safetensors.py, torch_pickle.py) return arrays that are read-only views of the
memory-mapped file. bfloat16, which NumPy lacks, comes back as a `HalfTensor`: its uint16 bits, a view of
the file too, widened to float32 when it is read (np.asarray, or an integer index such as table[ids]).
"""

import math
import mmap
from pathlib import Path

import numpy as np

from minibert.errors import ModelFormatError, show
from minibert.ops.reference import widen

MAX_NDIM = 64
MAX_ELEMENTS = 2 ** 40           # per tensor, zero-size dimensions aside: far beyond any BERT

BFLOAT16 = "bfloat16"  # NumPy has no bfloat16 dtype; readers return these as HalfTensor (uint16 bits)


def map_file(path: Path):
    """The whole file, memory-mapped read-only (b"" for an empty file, which mmap refuses)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc}") from None


class HalfTensor:
    """A bfloat16 or float16 tensor kept at its stored precision (2 bytes an element), often a view of the
    memory-mapped checkpoint. `stored` holds the elements as stored: the uint16 bits of bfloat16 (NumPy has
    no bfloat16), or float16.

    Reading it widens to float32, exactly (every bfloat16 and float16 is a float32): np.asarray(t) widens the
    whole tensor; an integer index (t[ids], t[3], t[[5, 7]]) widens the rows it gathers, as an embedding
    lookup reads a table; a slice (t[a:b]) is a HalfTensor view of those rows, still at stored precision.
    A product with a kept matrix widens the matrix just for that product: models/params.linear.
    """

    __slots__ = ("stored",)
    __array_ufunc__ = None  # no arithmetic on it as is: x + t raises, rather than widening the whole tensor

    def __init__(self, stored: np.ndarray):
        if stored.dtype.kind not in "uf" or stored.dtype.itemsize != 2:
            raise TypeError(f"HalfTensor holds uint16 bfloat16 bits or float16, not {stored.dtype}")
        if not stored.dtype.isnative:  # a big-endian file: a native copy, still 2 bytes an element
            stored = stored.astype(stored.dtype.newbyteorder("="))
        self.stored = stored

    @property
    def dtype_name(self) -> str:
        """"bfloat16" or "float16": what the two bytes of an element are."""
        return BFLOAT16 if self.stored.dtype.kind == "u" else "float16"

    shape = property(lambda self: self.stored.shape)
    ndim = property(lambda self: self.stored.ndim)
    nbytes = property(lambda self: self.stored.nbytes)   # in memory (or in the mapped file): 2 per element

    def __len__(self):
        return len(self.stored)

    def __getitem__(self, index):
        """A slice of rows: a HalfTensor view; anything else (integers, integer arrays): float32, widened."""
        if isinstance(index, slice):
            return HalfTensor(self.stored[index])
        return widen(self.stored[index])

    def __array__(self, dtype=None, copy=None):
        """The whole tensor widened to float32 (a new array: the stored elements are not float32)."""
        if copy is False:
            raise ValueError("a HalfTensor cannot be read as float32 without a copy")
        out = widen(self.stored)
        return out if dtype is None else out.astype(dtype, copy=False)

    def nonfinite(self, rows: int = 65536) -> int:
        """How many elements are NaN or infinite (all exponent bits set), counted a block of rows at a time."""
        mask = np.uint16(0x7F80 if self.stored.dtype.kind == "u" else 0x7C00)
        flat = self.stored.reshape(len(self.stored), -1) if self.ndim else self.stored.reshape(1, 1)
        return sum(int(np.count_nonzero((flat[i:i + rows].view(np.uint16) & mask) == mask))
                   for i in range(0, len(flat), rows))

    def __repr__(self):
        return f"HalfTensor({self.dtype_name}, shape={list(self.shape)})"


def release_pages(array: np.ndarray) -> None:
    """Once a tensor read from a memory-mapped file has been copied, let the kernel drop the file's pages it
    touched from this process's resident memory (madvise MADV_DONTNEED: the file is read-only and unchanged, so
    a later read of them simply maps them again). Without it, loading a float32 checkpoint holds every weight
    twice at its peak, the file's pages and their copies. Anything not backed by a mapped file: nothing."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    mapped = base.obj if isinstance(base, memoryview) else base
    if not isinstance(mapped, mmap.mmap) or array.nbytes == 0 or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = array.__array_interface__["data"][0] - np.frombuffer(mapped, np.uint8, count=1).__array_interface__["data"][0]
    first = start - start % mmap.PAGESIZE
    end = min(len(mapped), start + array.nbytes)   # a C-contiguous or transposed tensor: its bytes in one range
    mapped.madvise(mmap.MADV_DONTNEED, first, end - first)


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
