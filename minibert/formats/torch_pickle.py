"""pytorch_model.bin -> {name: NumPy array}, without torch, and without running the pickle.

torch.save (since torch 1.6) writes a zip archive:

    <archive>/data.pkl        the state dict, pickled (protocol 2); tensors are persistent ids
    <archive>/data/<key>      one uncompressed record of raw bytes per storage
    <archive>/byteorder       "little" or "big" (absent in old files: little)
    <archive>/version, .format_version, .storage_alignment, .data/serialization_id

A pickle is a program: its GLOBAL and REDUCE opcodes import and call any function, which is how
`torch.load` without weights_only has been exploited, and even torch's own allow-list had a
bypass (CVE-2025-32434). So data.pkl is not handed to `pickle`. `_unpickle` below is its own
opcode loop, written over the bytes, that knows only what a state dict needs:

- containers and scalars (dicts, lists, tuples, str, int, float, bool, None) and the memo;
- GLOBAL for the names in _ALLOWED_GLOBALS only: OrderedDict, torch._utils' _rebuild_tensor_v2 /
  _rebuild_parameter(_with_state), and the typed storage classes (torch.FloatStorage, ...);
- REDUCE on those callables only, and what it returns is an inert description (_Tensor), never
  the result of calling anything; BUILD only on an OrderedDict (the state dict's `_metadata`
  attribute, which is ignored); BINPERSID for torch's ('storage', type, key, location, numel).

Nothing is ever imported or called. Any other global, and the opcodes that make objects from
classes (STACK_GLOBAL, INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4), raise UnsafeCheckpointError, as
does a TorchScript archive (code/, constants.pkl): torch.jit.load would run its code. Legacy
formats (tar, a bare pickle) are refused with a ModelFormatError. Every size read from the file
is checked against the file before anything is allocated, and the loop caps its opcode count,
memo, stack and mark depth.

Storages are memory-mapped from the zip (records are stored uncompressed) and checked against
their CRC-32; tensors are strided views of them, bounds-checked against the storage.
"""

import io
import math
import re
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import ModelFormatError, UnsafeCheckpointError, show
from minibert.formats.tensors import (
    BFLOAT16,
    HalfTensor,
    check_shape,
    map_file,
)

MAX_PICKLE_BYTES = 100_000_000  # data.pkl of a 10,000-tensor state dict is about 2 MB
MAX_OPS = 10_000_000
MAX_MEMO = 1_000_000
MAX_STACK = 1_000_000
MAX_MARK_DEPTH = 100
MAX_STRING = 1_000_000


# --- what the pickle may name: the allow-list ----------------------------------------------

@dataclass(frozen=True)
class _Global:
    """An allowed global, as a name: nothing is imported."""
    module: str
    name: str
    dtype: object = None  # storage classes: the element type (a NumPy dtype, or BFLOAT16)

    def __str__(self):
        return f"{self.module}.{self.name}"


def _storage(name, dtype):
    return ("torch", name), _Global("torch", name, dtype if dtype == BFLOAT16 else np.dtype(dtype))


_ORDERED_DICT = _Global("collections", "OrderedDict")
_REBUILD_TENSOR_V2 = _Global("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = _Global("torch._utils", "_rebuild_parameter")
_REBUILD_PARAMETER_WITH_STATE = _Global("torch._utils", "_rebuild_parameter_with_state")

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ORDERED_DICT,
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR_V2,
    ("torch._utils", "_rebuild_parameter"): _REBUILD_PARAMETER,
    ("torch._utils", "_rebuild_parameter_with_state"): _REBUILD_PARAMETER_WITH_STATE,
    **dict([
        _storage("FloatStorage", "f4"), _storage("DoubleStorage", "f8"), _storage("HalfStorage", "f2"),
        _storage("BFloat16Storage", BFLOAT16), _storage("LongStorage", "i8"), _storage("IntStorage", "i4"),
        _storage("ShortStorage", "i2"), _storage("CharStorage", "i1"), _storage("ByteStorage", "u1"),
        _storage("BoolStorage", "?"),
    ]),
}


@dataclass(frozen=True, eq=False)
class _Storage:
    """A persistent id: storage record data/<key> holding `numel` elements of `dtype`."""
    dtype: object
    key: str
    numel: int


@dataclass(frozen=True, eq=False)
class _Tensor:
    """What _rebuild_tensor_v2 would build: a strided view of a storage (in elements)."""
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


# --- the archive ---------------------------------------------------------------------------

_TAR_MAGIC_OFFSET = 257
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a torch.save'd state dict: read-only views of the mapped file (bf16: a HalfTensor view)."""
    path = Path(path)
    data = map_file(path)
    _check_is_zip(data, path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else _MappedFile(data))
        with archive:
            prefix, infos = _archive_layout(archive, path)
            info = infos[prefix + "data.pkl"]
            if info.file_size > MAX_PICKLE_BYTES:
                raise ModelFormatError(f"{path}: data.pkl is {info.file_size} bytes, above the {MAX_PICKLE_BYTES}-byte limit")
            pickled = archive.read(info)
            byteorder = _byteorder(archive, infos, prefix, path)
    except ModelFormatError:
        raise
    except _ZIP_ERRORS as exc:
        raise ModelFormatError(f"{path}: cannot read PyTorch checkpoint: damaged zip archive: {exc}") from None

    state = _unpickle(pickled, f"{path}: data.pkl")
    tensors = _state_dict_tensors(state, path)
    storages = {}  # key -> (the first descriptor naming it, its array)
    out = {}
    for name, tensor in tensors.items():
        where = f"{path}: tensor {name!r}"
        storage = tensor.storage
        if storage.key not in storages:
            storages[storage.key] = storage, _storage_array(data, infos, prefix, storage, byteorder, where)
        first, array = storages[storage.key]
        if (first.dtype, first.numel) != (storage.dtype, storage.numel):
            raise ModelFormatError(
                f"{where}: storage {storage.key} is declared twice, as {first.numel} x {first.dtype} and as "
                f"{storage.numel} x {storage.dtype}")
        array = _tensor_array(array, tensor, where)
        out[name] = HalfTensor(array) if storage.dtype == BFLOAT16 else array
    return out


class _MappedFile(io.RawIOBase):
    """A seekable read-only file over an mmap, for zipfile (which then reads no more than it needs)."""

    def __init__(self, data):
        self._data, self._pos = data, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        base = (0, self._pos, len(self._data))[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the file")
        self._pos = base + offset
        return self._pos

    def tell(self):
        return self._pos

    def readinto(self, buffer):
        chunk = self._data[self._pos:self._pos + len(buffer)]
        buffer[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


# Everything zipfile raises on a damaged archive.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError, OSError,
               ValueError, NotImplementedError, RuntimeError, KeyError, IndexError, OverflowError)


def _check_is_zip(data, path):
    head = bytes(data[:_TAR_MAGIC_OFFSET + 8])
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return
    if head[_TAR_MAGIC_OFFSET:_TAR_MAGIC_OFFSET + 5] == b"ustar":
        raise ModelFormatError(
            f"{path}: a legacy tar checkpoint (torch.save before torch 0.4); minibert reads the zip format "
            "that torch.save writes since torch 1.6: re-save it with a current torch, or convert it to safetensors")
    if head[:1] == b"\x80":
        raise ModelFormatError(
            f"{path}: a legacy non-zip checkpoint (a bare pickle: torch.save before torch 1.6, or with "
            "_use_new_zipfile_serialization=False); minibert reads the zip format only: re-save it with a "
            "current torch, or convert it to safetensors")
    hint = ""
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < len(data):
        hint = "; it looks like a safetensors file: name it model.safetensors"
    raise ModelFormatError(f"{path}: not a PyTorch checkpoint (expected the zip archive torch.save writes){hint}")


def _archive_layout(archive: zipfile.ZipFile, path) -> tuple[str, dict]:
    """'<archive>/' and {record name: ZipInfo}; refuses TorchScript and ambiguous archives."""
    infos = {}
    for info in archive.infolist():
        if info.filename in infos:
            raise ModelFormatError(f"{path}: the zip archive holds two records named {info.filename!r}")
        infos[info.filename] = info
    parts = [name.split("/") for name in infos]  # [<archive>, ...]; the archive is named after the file
    if any(p[1:] in (["constants.pkl"], ["bytecode.pkl"]) or p[1:2] == ["code"] for p in parts):
        raise UnsafeCheckpointError(
            f"{path}: a TorchScript archive (it holds code/ or constants.pkl), not a state dict; loading it "
            "would run its code, so minibert refuses it. Save the state dict (model.state_dict()) or safetensors")
    pickles = [name for name in infos if re.fullmatch(r"[^/]+/data\.pkl", name)]
    if len(pickles) != 1:
        found = f"{len(pickles)}: {', '.join(pickles[:3])}" if pickles else "none"
        raise ModelFormatError(f"{path}: expected one <archive>/data.pkl record in the zip archive, found {found}")
    return pickles[0][:-len("data.pkl")], infos


def _byteorder(archive, infos, prefix, path) -> str:
    info = infos.get(prefix + "byteorder")
    if info is None:
        return "<"  # torch's default for files written before the byteorder record
    if info.file_size > 16:
        raise ModelFormatError(f"{path}: byteorder record of {info.file_size} bytes; expected 'little' or 'big'")
    value = archive.read(info)
    if value not in (b"little", b"big"):
        raise ModelFormatError(f"{path}: byteorder record is {value[:16]!r}; expected 'little' or 'big'")
    return "<" if value == b"little" else ">"


def _record_range(data, info: zipfile.ZipInfo, where) -> tuple[int, int]:
    """[start, end) of a stored (uncompressed) record's bytes in the file, from its local header."""
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise ModelFormatError(f"{where}: storage record {info.filename} is compressed; torch.save stores them uncompressed")
    if info.flag_bits & 0x1:
        raise ModelFormatError(f"{where}: storage record {info.filename} is encrypted")
    h = info.header_offset
    if h < 0 or h + 30 > len(data) or bytes(data[h:h + 4]) != b"PK\x03\x04":
        raise ModelFormatError(f"{where}: storage record {info.filename}: no local zip header at byte {h}")
    name_length, extra_length = struct.unpack("<HH", data[h + 26:h + 30])
    name = bytes(data[h + 30:h + 30 + name_length])
    if name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"):
        raise ModelFormatError(f"{where}: storage record {info.filename}: its local header names {name[:80]!r}")
    start = h + 30 + name_length + extra_length
    end = start + info.file_size
    if end > len(data):
        raise ModelFormatError(
            f"{where}: storage record {info.filename} runs past the end of the {len(data)}-byte file (truncated?)")
    return start, end


def _storage_array(data, infos, prefix, storage: _Storage, byteorder: str, where) -> np.ndarray:
    """The storage record as a 1-D array of `numel` elements: a view of the mapped file (bf16: its uint16 bits)."""
    name = f"{prefix}data/{storage.key}"
    info = infos.get(name)
    if info is None:
        raise ModelFormatError(f"{where}: its storage record {name} is not in the archive")
    itemsize = 2 if storage.dtype == BFLOAT16 else storage.dtype.itemsize
    if info.file_size != storage.numel * itemsize:
        raise ModelFormatError(
            f"{where}: storage record {name} holds {info.file_size} bytes; the pickle declares "
            f"{storage.numel} elements of {itemsize} bytes ({storage.numel * itemsize})")
    start, end = _record_range(data, info, where)
    with memoryview(data) as view:
        crc = zlib.crc32(view[start:end])
    if crc != info.CRC:
        raise ModelFormatError(f"{where}: storage record {name} fails its CRC-32 check (damaged file)")
    dtype = np.dtype(byteorder + ("u2" if storage.dtype == BFLOAT16 else storage.dtype.str[1:]))  # e.g. "<f4"
    if storage.numel == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=storage.numel, offset=start)


def _tensor_array(storage: np.ndarray, tensor: _Tensor, where) -> np.ndarray:
    """The tensor's strided view of its storage, after checking that every element is inside it."""
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    numel = math.prod(size)
    if numel == 0:
        return np.empty(size, dtype=storage.dtype)
    if numel > len(storage):
        raise ModelFormatError(
            f"{where}: {numel} elements from a storage of {len(storage)} (a broadcast view is not supported)")
    stride = tuple(st if n > 1 else 0 for n, st in zip(size, stride))  # a length-1 axis never steps
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= len(storage):
        raise ModelFormatError(
            f"{where}: size {list(size)}, stride {list(tensor.stride)} and offset {offset} reach element "
            f"{last} of a storage of {len(storage)}")
    if offset == 0 and numel == len(storage) and stride == _contiguous_strides(size):
        return storage.reshape(size)  # the common case: the tensor is its whole storage
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[st * storage.itemsize for st in stride], writeable=False)


def _contiguous_strides(size) -> tuple:
    """Row-major strides in elements, with 0 for length-1 axes (as normalized above)."""
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step if n > 1 else 0)
        step *= n
    return tuple(reversed(strides))


def _state_dict_tensors(state, path) -> dict[str, _Tensor]:
    if not isinstance(state, dict):
        raise ModelFormatError(f"{path}: data.pkl holds a {_kind(state)}; expected a state dict (name -> tensor)")
    for name, value in state.items():
        if not isinstance(name, str):
            raise ModelFormatError(f"{path}: state dict key {show(name)} is not a str")
        if not isinstance(value, _Tensor):
            raise ModelFormatError(
                f"{path}: state dict entry {name!r} is a {_kind(value)}, not a tensor (a nested checkpoint, "
                "such as {'state_dict': ...}, is not a HuggingFace pytorch_model.bin)")
    return state


def _kind(value) -> str:
    return {_Tensor: "tensor", _Storage: "storage", _Global: "global"}.get(type(value), type(value).__name__)


# --- the pickle machine --------------------------------------------------------------------

# The opcodes that build objects from classes (the way pickle calls code besides REDUCE).
_CLASS_OPCODES = {
    0x93: "STACK_GLOBAL", ord("i"): "INST", ord("o"): "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX",
    0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
}
_SCALARS = (str, int, float, bool, type(None))


class _Machine:
    """The pickle virtual machine, restricted to state dicts (see the module docstring).

    Like CPython's unpickler, MARK moves the current stack onto `metastack` and starts a new one,
    so that an opcode can never pop past a mark.
    """

    def __init__(self, data: bytes, where: str):
        self.data, self.where = data, where
        self.pos = 0
        self.stack: list = []
        self.metastack: list[list] = []
        self.memo: dict[int, object] = {}

    # reading the byte string

    def fail(self, message, error=ModelFormatError):
        return error(f"{self.where}: {message}")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"truncated: {n} bytes needed at byte {self.pos}, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def line(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + 257)
        if end < 0:
            raise self.fail(f"GLOBAL at byte {self.pos - 1}: no end of line within 256 bytes")
        text = self.data[self.pos:end].decode("utf-8", "backslashreplace")
        self.pos = end + 1
        return text

    def text(self, n: int) -> str:
        if n > MAX_STRING:
            raise self.fail(f"a string of {n} bytes at byte {self.pos}, above the {MAX_STRING}-byte limit")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"a string at byte {self.pos - n} is not valid UTF-8 ({exc.reason})") from None

    # the stacks

    def push(self, value):
        if len(self.stack) >= MAX_STACK:
            raise self.fail(f"stack deeper than {MAX_STACK}")
        self.stack.append(value)

    def pop(self):
        if not self.stack:
            raise self.fail(f"stack underflow at byte {self.op_at}")
        return self.stack.pop()

    def top(self):
        if not self.stack:
            raise self.fail(f"stack underflow at byte {self.op_at}")
        return self.stack[-1]

    def mark(self):
        if len(self.metastack) >= MAX_MARK_DEPTH:
            raise self.fail(f"more than {MAX_MARK_DEPTH} nested MARKs")
        self.metastack.append(self.stack)
        self.stack = []

    def pop_mark(self) -> list:
        if not self.metastack:
            raise self.fail(f"no MARK for the opcode at byte {self.op_at}")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def put(self, index: int):
        if index not in self.memo and len(self.memo) >= MAX_MEMO:
            raise self.fail(f"memo larger than {MAX_MEMO} entries")
        self.memo[index] = self.top()

    def get(self, index: int):
        if index not in self.memo:
            raise self.fail(f"memo entry {index} read at byte {self.op_at} was never written")
        self.push(self.memo[index])

    # objects

    def set_items(self, target, items: list):
        if type(target) not in (dict, OrderedDict):
            raise self.fail(f"SETITEM(S) at byte {self.op_at} on a {_kind(target)}, not a dict")
        if len(items) % 2:
            raise self.fail(f"SETITEMS at byte {self.op_at} with an odd number of items")
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, _SCALARS):
                raise self.fail(f"a dict key at byte {self.op_at} is a {_kind(key)}; expected a str or number")
            target[key] = value

    def append(self, target, items: list):
        if type(target) is not list:
            raise self.fail(f"APPEND(S) at byte {self.op_at} on a {_kind(target)}, not a list")
        target.extend(items)

    def global_(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise self.fail(
                f"refused: GLOBAL {show(module + '.' + name)} at byte {self.op_at} is not one of the names a "
                "state dict needs (OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage, ...); loading "
                "this file with torch.load could run code", UnsafeCheckpointError)
        self.push(allowed)

    def reduce(self, func, args):
        if func is _ORDERED_DICT:
            if args != ():
                raise self.fail(f"OrderedDict called with arguments at byte {self.op_at}; expected ()")
            return OrderedDict()
        if func is _REBUILD_TENSOR_V2:
            return self.rebuild_tensor(args)
        if func in (_REBUILD_PARAMETER, _REBUILD_PARAMETER_WITH_STATE):
            n = 3 if func is _REBUILD_PARAMETER else 4
            if not isinstance(args, tuple) or len(args) != n or not isinstance(args[0], _Tensor):
                raise self.fail(f"{func} at byte {self.op_at}: expected ({n} arguments, the first a tensor)")
            return args[0]  # a Parameter is its tensor; requires_grad, hooks and Python state are not weights
        what = f"global {func}" if isinstance(func, _Global) else f"a {_kind(func)}"
        raise self.fail(f"refused: REDUCE at byte {self.op_at} calls {what}, which is not an allowed callable",
                        UnsafeCheckpointError)

    def rebuild_tensor(self, args):
        # _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        at = f"_rebuild_tensor_v2 at byte {self.op_at}"
        if not isinstance(args, tuple) or len(args) not in (6, 7):
            raise self.fail(f"{at}: expected 6 or 7 arguments, found {len(args) if isinstance(args, tuple) else _kind(args)}")
        storage, offset, size, stride, _requires_grad, hooks = args[:6]
        if not isinstance(storage, _Storage):
            raise self.fail(f"{at}: the first argument is a {_kind(storage)}, not a storage")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise self.fail(f"{at}: storage offset {show(offset)} is not a non-negative integer")
        size = check_shape(size, f"{self.where}: {at}: size")
        stride = check_shape(stride, f"{self.where}: {at}: stride")
        if len(stride) != len(size):
            raise self.fail(f"{at}: size {list(size)} and stride {list(stride)} differ in length")
        if not isinstance(hooks, (dict, OrderedDict)) or hooks:
            raise self.fail(f"{at}: backward hooks must be an empty OrderedDict")
        if len(args) == 7 and args[6] not in (None, {}):
            raise self.fail(f"{at}: tensor metadata (conjugate or negative bits) is not supported")
        return _Tensor(storage, offset, size, stride)

    def persistent(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self.fail(f"BINPERSID at byte {self.op_at}: expected ('storage', type, key, location, numel)")
        _, storage_type, key, location, numel = pid
        if not (isinstance(storage_type, _Global) and storage_type.dtype is not None):
            raise self.fail(f"BINPERSID at byte {self.op_at}: storage type is a {_kind(storage_type)}, not a torch.*Storage")
        if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
            raise self.fail(f"BINPERSID at byte {self.op_at}: storage key {show(key)} is not a plain record name")
        if not isinstance(location, str):
            raise self.fail(f"BINPERSID at byte {self.op_at}: storage location is a {_kind(location)}")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise self.fail(f"BINPERSID at byte {self.op_at}: storage size {show(numel)} is not a non-negative integer")
        return _Storage(storage_type.dtype, key, numel)

    def build(self, state):
        target = self.top()
        if type(target) is not OrderedDict:
            what = f"global {target}" if isinstance(target, _Global) else f"a {_kind(target)}"
            raise self.fail(f"refused: BUILD at byte {self.op_at} sets the state of {what}; only an "
                            "OrderedDict's attributes (a state dict's _metadata) are allowed", UnsafeCheckpointError)
        if not isinstance(state, dict):
            raise self.fail(f"BUILD at byte {self.op_at}: OrderedDict state is a {_kind(state)}, not a dict")
        # The state is {'_metadata': ...}, module versions: not weights, so it is dropped.

    def run(self):
        for _ in range(MAX_OPS):
            self.op_at = self.pos
            op = self.take(1)[0]
            handler = _OPCODES.get(op)
            if handler is None:
                name = _CLASS_OPCODES.get(op)
                if name is not None:
                    raise self.fail(
                        f"refused: opcode {name} at byte {self.op_at} builds an object from a class, which could "
                        "run code; a state dict never needs it", UnsafeCheckpointError)
                raise self.fail(f"unsupported pickle opcode {bytes([op])!r} at byte {self.op_at}")
            if handler(self):  # STOP
                if self.metastack or len(self.stack) != 1:
                    raise self.fail("STOP with a MARK still open or more than one object on the stack")
                if self.pos != len(self.data):
                    raise self.fail(f"{len(self.data) - self.pos} bytes after STOP")
                return self.stack[0]
        raise self.fail(f"more than {MAX_OPS} opcodes")


def _sequence(m: _Machine, build):
    m.push(build(m.pop_mark()))


def _proto(m):
    version = m.uint(1)
    if version > 5:
        raise m.fail(f"pickle protocol {version} is not supported")


def _frame(m):
    n = m.uint(8)
    if n > len(m.data) - m.pos:
        raise m.fail(f"FRAME at byte {m.op_at} of {n} bytes runs past the end")


def _tuple_n(n):
    def op(m):
        items = [m.pop() for _ in range(n)][::-1]
        m.push(tuple(items))
    return op


def _dict_from_mark(m):
    items = m.pop_mark()
    target = {}
    m.set_items(target, items)
    m.push(target)


def _setitem(m):
    value, key = m.pop(), m.pop()
    m.set_items(m.top(), [key, value])


def _setitems(m):
    items = m.pop_mark()
    m.set_items(m.top(), items)


def _append(m):
    value = m.pop()
    m.append(m.top(), [value])


def _appends(m):
    items = m.pop_mark()
    m.append(m.top(), items)


def _global(m):
    module = m.line()
    name = m.line()
    m.global_(module, name)


def _reduce(m):
    args, func = m.pop(), m.pop()
    m.push(m.reduce(func, args))


def _build(m):
    m.build(m.pop())


def _persid(m):
    m.push(m.persistent(m.pop()))


def _pop(m):
    m.pop()


def _stop(m):
    return True


def _long1(m):
    m.push(int.from_bytes(m.take(m.uint(1)), "little", signed=True))


_OPCODES = {
    0x80: _proto,                                                  # PROTO
    0x95: _frame,                                                  # FRAME
    ord("."): _stop,                                               # STOP
    ord("("): lambda m: m.mark(),                                  # MARK
    ord("0"): _pop,                                                # POP
    ord("}"): lambda m: m.push({}),                                # EMPTY_DICT
    ord("d"): _dict_from_mark,                                     # DICT
    ord("]"): lambda m: m.push([]),                                # EMPTY_LIST
    ord("l"): lambda m: _sequence(m, list),                        # LIST
    ord(")"): lambda m: m.push(()),                                # EMPTY_TUPLE
    ord("t"): lambda m: _sequence(m, tuple),                       # TUPLE
    0x85: _tuple_n(1), 0x86: _tuple_n(2), 0x87: _tuple_n(3),       # TUPLE1, TUPLE2, TUPLE3
    ord("a"): _append, ord("e"): _appends,                         # APPEND, APPENDS
    ord("s"): _setitem, ord("u"): _setitems,                       # SETITEM, SETITEMS
    ord("J"): lambda m: m.push(int.from_bytes(m.take(4), "little", signed=True)),  # BININT
    ord("K"): lambda m: m.push(m.uint(1)),                         # BININT1
    ord("M"): lambda m: m.push(m.uint(2)),                         # BININT2
    0x8A: _long1,                                                  # LONG1
    ord("G"): lambda m: m.push(struct.unpack(">d", m.take(8))[0]),  # BINFLOAT
    ord("X"): lambda m: m.push(m.text(m.uint(4))),                 # BINUNICODE
    0x8C: lambda m: m.push(m.text(m.uint(1))),                     # SHORT_BINUNICODE
    0x8D: lambda m: m.push(m.text(m.uint(8))),                     # BINUNICODE8
    ord("N"): lambda m: m.push(None),                              # NONE
    0x88: lambda m: m.push(True), 0x89: lambda m: m.push(False),   # NEWTRUE, NEWFALSE
    ord("q"): lambda m: m.put(m.uint(1)),                          # BINPUT
    ord("r"): lambda m: m.put(m.uint(4)),                          # LONG_BINPUT
    0x94: lambda m: m.put(len(m.memo)),                            # MEMOIZE
    ord("h"): lambda m: m.get(m.uint(1)),                          # BINGET
    ord("j"): lambda m: m.get(m.uint(4)),                          # LONG_BINGET
    ord("c"): _global,                                             # GLOBAL (allow-listed names only)
    ord("R"): _reduce,                                             # REDUCE (allowed callables only)
    ord("Q"): _persid,                                             # BINPERSID (torch storages)
    ord("b"): _build,                                              # BUILD (OrderedDict only)
}


def _unpickle(data: bytes, where: str):
    """Run the restricted machine over a pickle; returns plain containers, _Tensor and _Storage."""
    return _Machine(data, where).run()
