"""pytorch_model.bin is read without running its pickle: real attacks are refused, none runs.

Every payload below is a working exploit against `pickle.load` (and so against `torch.load`
without weights_only): each tries to create a canary file. The tests first show that the stdlib
unpickler really does create it (so that the test could fail), then that minibert refuses the
same bytes in a torch-format zip with an UnsafeCheckpointError that names the file and the
offending global or opcode, and that the canary never appears.

The .bin files here are made by hand (`state_dict_pickle`, `torch_zip`), mimicking torch.save;
with torch installed, one test checks that torch.load reads them as minibert does.
"""

import io
import os
import pickle
import shlex
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibert import ModelFormatError, UnsafeCheckpointError
from minibert.formats import torch_pickle
from minibert.formats.torch_pickle import read_torch_bin
from minibert.runtime.load import load_config, load_params

FIXTURES = Path(__file__).parent / "fixtures" / "formats"


# --- writing pickles and torch zips by hand --------------------------------------------------

def S(text: str) -> bytes:                      # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def I(n: int) -> bytes:                         # BININT, or LONG1 beyond 32 bits (as pickle writes them)
    if -2 ** 31 <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def G(module: str, name: str) -> bytes:         # GLOBAL
    return b"c" + f"{module}\n{name}\n".encode()


def T(*items: bytes) -> bytes:                  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


EMPTY_ORDERED_DICT = G("collections", "OrderedDict") + b")R"


def tensor_pickle(storage="FloatStorage", key="0", numel=4, offset=0, size=(4,), stride=(1,), extra=b"") -> bytes:
    """torch's _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks), as torch.save writes it."""
    storage_pid = T(S("storage"), G("torch", storage), S(key), S("cpu"), I(numel)) + b"Q"
    args = T(storage_pid, I(offset), T(*map(I, size)), T(*map(I, stride)), b"\x89", EMPTY_ORDERED_DICT, extra)
    return G("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict_pickle(tensors: dict[str, bytes]) -> bytes:
    items = b"".join(S(name) + value for name, value in tensors.items())
    return b"\x80\x02" + EMPTY_ORDERED_DICT + b"(" + items + b"u."


def torch_zip(path: Path, pickled: bytes, records: dict[str, bytes] | None = None,
              byteorder: bytes = b"little", compress: int = zipfile.ZIP_STORED) -> Path:
    """A torch.save-style zip archive: archive/data.pkl, archive/data/<key>, archive/byteorder."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", byteorder)
        for name, data in (records or {}).items():
            zf.writestr(zipfile.ZipInfo(f"archive/{name}"), data, compress_type=compress)
        zf.writestr("archive/version", b"3\n")
    return path


FOUR = np.array([1.0, -2.0, 0.5, 3.0], dtype="<f4")


def test_handmade_bin_reads_as_torch_reads_it(tmp_path):
    pickled = state_dict_pickle({
        "w": tensor_pickle(numel=4, size=(2, 2), stride=(1, 2)),           # a transposed view
        "b": tensor_pickle(numel=4, offset=1, size=(2,), stride=(2,)),      # offset and stride
        "h": tensor_pickle("HalfStorage", key="1", numel=2, size=(2,)),
        "z": tensor_pickle("BFloat16Storage", key="2", numel=2, size=(2,)),
    })
    path = torch_zip(tmp_path / "pytorch_model.bin", pickled, {
        "data/0": FOUR.tobytes(), "data/1": np.array([1.5, -0.25], "<f2").tobytes(),
        "data/2": np.array([0x3F80, 0xC040], "<u2").tobytes()})
    got = read_torch_bin(path)
    np.testing.assert_array_equal(got["w"], [[1.0, 0.5], [-2.0, 3.0]])
    np.testing.assert_array_equal(got["b"], [-2.0, 3.0])
    np.testing.assert_array_equal(got["h"], np.array([1.5, -0.25], np.float16))
    np.testing.assert_array_equal(got["z"], [1.0, -3.0])
    torch = pytest.importorskip("torch")
    expected = torch.load(path, weights_only=True)
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name].float().numpy(), err_msg=name)


# --- the payloads --------------------------------------------------------------------------

class Reduce:
    """An object whose pickle calls func(*args): how real malicious pickles are made."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(canary: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (data.pkl bytes that create `canary` under pickle.loads, what the refusal must name)."""
    shell = f"touch {shlex.quote(str(canary))}"
    code = f"open({str(canary)!r}, 'w').close()"
    expression = f"__import__('pathlib').Path({str(canary)!r}).touch()"
    return {
        "os.system": (b"\x80\x02" + G("os", "system") + T(S(shell)) + b"R.", "GLOBAL 'os.system'"),
        "posix.system": (pickle.dumps(Reduce(os.system, shell), protocol=2), "GLOBAL 'posix.system'"),
        "builtins.exec": (pickle.dumps(Reduce(exec, code), protocol=2, fix_imports=False), "GLOBAL 'builtins.exec'"),
        "builtins.eval": (pickle.dumps(Reduce(eval, expression), protocol=2, fix_imports=False),
                          "GLOBAL 'builtins.eval'"),
        # Protocol 2 writes Python 2 names (as torch.save's pickles do), which pickle maps back on load.
        "__builtin__.exec": (pickle.dumps(Reduce(exec, code), protocol=2), "GLOBAL '__builtin__.exec'"),
        "subprocess.Popen": (pickle.dumps(Reduce(subprocess.Popen, ["touch", str(canary)]), protocol=2,
                                          fix_imports=False), "GLOBAL 'subprocess.Popen'"),
        "commands.Popen": (pickle.dumps(Reduce(subprocess.Popen, ["touch", str(canary)]), protocol=2),
                           "GLOBAL 'commands.Popen'"),
        "protocol 4 STACK_GLOBAL": (pickle.dumps(Reduce(os.system, shell), protocol=4), "opcode STACK_GLOBAL"),
        "INST": (b"(" + S(shell) + b"ios\nsystem\n.", "opcode INST"),
        "OBJ with a harmful class": (b"(" + G("os", "system") + S(shell) + b"o.", "GLOBAL 'os.system'"),
        "REDUCE in a state dict value": (
            state_dict_pickle({"w": G("builtins", "exec") + T(S(code)) + b"R"}), "GLOBAL 'builtins.exec'"),
        "exec after a valid tensor": (
            state_dict_pickle({"ok": tensor_pickle(), "w": G("builtins", "exec") + T(S(code)) + b"R"}),
            "GLOBAL 'builtins.exec'"),
    }


def test_the_payloads_are_live(tmp_path):
    """Control: the stdlib unpickler runs every payload, so the canary checks below can fail."""
    for name, (pickled, _) in payloads(tmp_path / "canary").items():
        if name == "exec after a valid tensor":
            continue  # needs torch's persistent_load to get past the tensor
        canary = tmp_path / "canary"
        result = pickle.loads(pickled)
        if isinstance(result, subprocess.Popen):
            result.wait()
        assert canary.exists(), name
        canary.unlink()


@pytest.mark.parametrize("name", list(payloads(Path("canary"))))
def test_payload_is_refused_and_never_runs(tmp_path, name):
    canary = tmp_path / "canary"
    pickled, offence = payloads(canary)[name]
    model = tmp_path / "model"
    shutil.copytree(FIXTURES / "bin-f32", model)
    path = torch_zip(model / "pytorch_model.bin", pickled, {"data/0": FOUR.tobytes()})
    with pytest.raises(UnsafeCheckpointError) as excinfo:
        load_params(model, load_config(model))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: data.pkl: refused: "), message
    assert offence in message, message
    assert not canary.exists()


@pytest.mark.parametrize("module, name", [
    ("torch._utils", "os"),
    ("torch._utils", "system"),                          # "torch._utils\nsystem"
    ("torch._utils", "_rebuild_tensor_v2.__globals__"),
    ("torch._utils", "_rebuild_tensor"),                 # v1: not on the list
    ("torch._utils ", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v2 "),
    ("collections", "OrderedDict.__class__"),
    ("collections.OrderedDict", "__class__"),
    ("collections", "OrderedDict.__init__.__globals__"),
    ("torch", "FloatStorage.__init__"),
    ("torch", "load"),
    ("torch.jit", "load"),
    ("torch.serialization", "load"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("Torch", "FloatStorage"),
])
def test_allowed_looking_names_are_refused(tmp_path, module, name):
    pickled = b"\x80\x02" + G(module, name) + b")R."
    path = torch_zip(tmp_path / "pytorch_model.bin", pickled)
    with pytest.raises(UnsafeCheckpointError, match=f"refused: GLOBAL {module + '.' + name!r}"):
        read_torch_bin(path)


@pytest.mark.parametrize("pickled, offence", [
    (b"\x80\x02" + EMPTY_ORDERED_DICT[:-2] + b"(o.", "opcode OBJ"),
    (b"\x80\x02" + EMPTY_ORDERED_DICT[:-2] + b")\x81.", "opcode NEWOBJ"),
    (b"\x80\x04" + EMPTY_ORDERED_DICT[:-2] + b")}\x92.", "opcode NEWOBJ_EX"),
    (b"\x80\x02\x82\x01.", "opcode EXT1"),
    (b"\x80\x02\x83\x01\x00.", "opcode EXT2"),
    (b"\x80\x02\x84\x01\x00\x00\x00.", "opcode EXT4"),
    (b"\x80\x02" + G("torch", "FloatStorage") + T(I(10 ** 6)) + b"R.", r"REDUCE at byte \d+ calls global torch.FloatStorage"),
    (b"\x80\x02" + S("os.system") + T(S("ls")) + b"R.", r"REDUCE at byte \d+ calls a str"),
    (b"\x80\x02" + G("collections", "OrderedDict") + b"}" + S("__setstate__") + S("x") + b"sb.",
     r"BUILD at byte \d+ sets the state of global collections.OrderedDict"),
    (b"\x80\x02" + EMPTY_ORDERED_DICT + b"]b.", None),  # BUILD on an OrderedDict with a list state: malformed
])
def test_class_building_opcodes_are_refused(tmp_path, pickled, offence):
    path = torch_zip(tmp_path / "pytorch_model.bin", pickled)
    if offence is None:
        with pytest.raises(ModelFormatError, match="OrderedDict state is a list"):
            read_torch_bin(path)
        return
    with pytest.raises(UnsafeCheckpointError, match=f"{path}: data.pkl: refused: {offence}"):
        read_torch_bin(path)


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", state_dict_pickle({"w": tensor_pickle()}))
        zf.writestr("archive/constants.pkl", b"\x80\x02).")
        zf.writestr("archive/code/__torch__/model.py", "def forward(self, x):\n    return x\n")
        zf.writestr("archive/data/0", FOUR.tobytes())
    with pytest.raises(UnsafeCheckpointError, match=f"{path}: a TorchScript archive"):
        read_torch_bin(path)


def test_a_state_dict_archive_named_code_is_not_torchscript(tmp_path):
    path = tmp_path / "code.bin"  # torch.save names the archive after the file: code/data.pkl
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("code/data.pkl", state_dict_pickle({"w": tensor_pickle()}))
        zf.writestr("code/data/0", FOUR.tobytes())
    np.testing.assert_array_equal(read_torch_bin(path)["w"], FOUR)


def test_real_torchscript_archive_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(path))
    with pytest.raises(UnsafeCheckpointError, match="a TorchScript archive"):
        read_torch_bin(path)


# --- legacy and foreign files --------------------------------------------------------------

def test_legacy_formats_are_refused_clearly(tmp_path):
    canary = tmp_path / "canary"
    raw = tmp_path / "raw.bin"  # a bare pickle (the pre-1.6 format starts with one); this one is an exploit
    raw.write_bytes(pickle.dumps(Reduce(os.system, f"touch {shlex.quote(str(canary))}"), protocol=2))
    with pytest.raises(ModelFormatError, match="a legacy non-zip checkpoint .*re-save it"):
        read_torch_bin(raw)
    tar = tmp_path / "tar.bin"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("sys_info")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ModelFormatError, match="a legacy tar checkpoint"):
        read_torch_bin(tar)
    (tmp_path / "text.bin").write_text("hello")
    with pytest.raises(ModelFormatError, match=r"not a PyTorch checkpoint \(expected the zip archive torch.save writes\)$"):
        read_torch_bin(tmp_path / "text.bin")
    shutil.copy(FIXTURES.parent / "goldens" / "tiny-l1" / "model.safetensors", tmp_path / "renamed.bin")
    with pytest.raises(ModelFormatError, match="it looks like a safetensors file: name it model.safetensors"):
        read_torch_bin(tmp_path / "renamed.bin")
    assert not canary.exists()


def test_real_legacy_torch_save_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFormatError, match="a legacy non-zip checkpoint"):
        read_torch_bin(path)


# --- sizes and bounds ----------------------------------------------------------------------

@pytest.mark.parametrize("tensor, records, message", [
    (tensor_pickle(numel=4, size=(5,)), {"data/0": FOUR.tobytes()}, "5 elements from a storage of 4"),
    (tensor_pickle(numel=4, size=(2,), offset=3), {"data/0": FOUR.tobytes()},
     r"size \[2\], stride \[1\] and offset 3 reach element 4 of a storage of 4"),
    (tensor_pickle(numel=4, size=(2, 2), stride=(3, 1)), {"data/0": FOUR.tobytes()}, "reach element 4"),
    (tensor_pickle(numel=4, size=(8,), stride=(0,)), {"data/0": FOUR.tobytes()}, "a broadcast view is not supported"),
    (tensor_pickle(numel=5), {"data/0": FOUR.tobytes()},
     "storage record archive/data/0 holds 16 bytes; the pickle declares 5 elements of 4 bytes"),
    (tensor_pickle(numel=2 ** 40), {"data/0": FOUR.tobytes()}, "the pickle declares 1099511627776 elements"),
    (tensor_pickle(key="7"), {"data/0": FOUR.tobytes()}, "its storage record archive/data/7 is not in the archive"),
    (tensor_pickle(key="../0"), {"data/0": FOUR.tobytes()}, "storage key '../0' is not a plain record name"),
    (tensor_pickle(size=(2, 2), stride=(1,)), {"data/0": FOUR.tobytes()}, r"size \[2, 2\] and stride \[1\] differ"),
    (tensor_pickle(size=(-4,)), {"data/0": FOUR.tobytes()}, "size: shape must hold non-negative integers"),
    (tensor_pickle(offset=-1), {"data/0": FOUR.tobytes()}, "storage offset -1 is not a non-negative integer"),
    (tensor_pickle(storage="ComplexFloatStorage"), {"data/0": FOUR.tobytes()}, None),
    (tensor_pickle(extra=b"}" + S("conj") + b"\x88s"), {"data/0": FOUR.tobytes()}, "tensor metadata"),
])
def test_tensor_geometry_is_checked_against_its_storage(tmp_path, tensor, records, message):
    path = torch_zip(tmp_path / "pytorch_model.bin", state_dict_pickle({"w": tensor}), records)
    if message is None:  # a storage type minibert does not know is a global it refuses
        with pytest.raises(UnsafeCheckpointError, match="GLOBAL 'torch.ComplexFloatStorage'"):
            read_torch_bin(path)
        return
    with pytest.raises(ModelFormatError, match=message) as excinfo:
        read_torch_bin(path)
    assert str(path) in str(excinfo.value) and not isinstance(excinfo.value, UnsafeCheckpointError)


def test_names_sharing_a_storage_share_its_memory(tmp_path):
    # A small file naming one bfloat16 storage many times must not make many copies of it: every tensor is a
    # HalfTensor viewing the one mapped storage.
    tensors = {f"w{i}": tensor_pickle("BFloat16Storage", numel=4) for i in range(1000)}
    tensors["view"] = tensor_pickle("BFloat16Storage", numel=4, offset=2, size=(2,))
    path = torch_zip(tmp_path / "pytorch_model.bin", state_dict_pickle(tensors),
                     {"data/0": np.array([0x3F80, 0x4000, 0x4040, 0x4080], "<u2").tobytes()})
    got = read_torch_bin(path)
    np.testing.assert_array_equal(got["w999"], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(got["view"], [3.0, 4.0])
    assert all(np.shares_memory(got["w0"].stored, array.stored) for array in got.values())


def test_one_storage_declared_with_two_types(tmp_path):
    pickled = state_dict_pickle({"a": tensor_pickle(), "b": tensor_pickle("IntStorage")})
    path = torch_zip(tmp_path / "pytorch_model.bin", pickled, {"data/0": FOUR.tobytes()})
    with pytest.raises(ModelFormatError, match="tensor 'b': storage 0 is declared twice, as 4 x float32 and as 4 x int32"):
        read_torch_bin(path)


def test_compressed_and_damaged_storage_records(tmp_path):
    pickled = state_dict_pickle({"w": tensor_pickle()})
    path = torch_zip(tmp_path / "a.bin", pickled, {"data/0": FOUR.tobytes()}, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFormatError, match="tensor 'w': storage record archive/data/0 is compressed"):
        read_torch_bin(path)
    path = torch_zip(tmp_path / "b.bin", pickled, {"data/0": FOUR.tobytes()})
    raw = bytearray(path.read_bytes())
    at = raw.find(FOUR.tobytes())
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="storage record archive/data/0 fails its CRC-32 check"):
        read_torch_bin(path)


def test_big_endian_storages_are_byte_swapped(tmp_path):
    path = torch_zip(tmp_path / "pytorch_model.bin", state_dict_pickle({"w": tensor_pickle()}),
                     {"data/0": FOUR.astype(">f4").tobytes()}, byteorder=b"big")
    np.testing.assert_array_equal(read_torch_bin(path)["w"], FOUR)
    path = torch_zip(tmp_path / "odd.bin", state_dict_pickle({"w": tensor_pickle()}),
                     {"data/0": FOUR.tobytes()}, byteorder=b"middle")
    with pytest.raises(ModelFormatError, match="byteorder record is b'middle'"):
        read_torch_bin(path)


@pytest.mark.parametrize("pickled, message", [
    (b"\x80\x02" + b"(" * 101, "more than 100 nested MARKs"),
    (b"\x80\x02h\x05.", "memo entry 5 read at byte 2 was never written"),
    (b"\x80\x02R.", "stack underflow"),
    (b"\x80\x02(t)." , "STOP with a MARK still open or more than one object"),
    (b"\x80\x02}", "truncated"),
    (b"\x80\x02}.junk", "4 bytes after STOP"),
    (b"\x80\x02X\xff\xff\xff\x7fabc.", "a string of 2147483647 bytes"),
    (b"\x80\x02X\x03\x00\x00\x00a\xffb.", "not valid UTF-8"),
    (b"\x80\x02I1\n.", "unsupported pickle opcode b'I'"),
    (b"\x80\x02}]]s.", "a dict key at byte 5 is a list"),
    (b"\x80\x02" + EMPTY_ORDERED_DICT + b".", None),  # an empty state dict: fine
    (b"\x80\x02].", "data.pkl holds a list; expected a state dict"),
    (b"\x80\x02}" + S("nested") + b"}s.", "entry 'nested' is a dict, not a tensor"),
    (b"\x80\x02c" + b"x" * 300 + b"\n.", "no end of line within 256 bytes"),
    (b"\x80\x06.", "pickle protocol 6 is not supported"),
])
def test_malformed_pickles(tmp_path, pickled, message):
    path = torch_zip(tmp_path / "pytorch_model.bin", pickled)
    if message is None:
        assert read_torch_bin(path) == {}
        return
    with pytest.raises(ModelFormatError, match=message):
        read_torch_bin(path)


def test_opcode_and_stack_caps(tmp_path, monkeypatch):
    path = torch_zip(tmp_path / "pytorch_model.bin", b"\x80\x02" + b"N0" * 200 + b"}.")
    monkeypatch.setattr(torch_pickle, "MAX_OPS", 100)
    with pytest.raises(ModelFormatError, match="more than 100 opcodes"):
        read_torch_bin(path)
    monkeypatch.setattr(torch_pickle, "MAX_STACK", 10)
    path = torch_zip(tmp_path / "deep.bin", b"\x80\x02" + b"N" * 11 + b".")
    with pytest.raises(ModelFormatError, match="stack deeper than 10"):
        read_torch_bin(path)
    monkeypatch.setattr(torch_pickle, "MAX_MEMO", 3)
    path = torch_zip(tmp_path / "memo.bin", b"\x80\x02N" + b"".join(b"q" + bytes([i]) for i in range(4)) + b".")
    with pytest.raises(ModelFormatError, match="memo larger than 3 entries"):
        read_torch_bin(path)


def test_archive_layout_problems(tmp_path):
    path = tmp_path / "two.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/data.pkl", b"\x80\x02}.")
        zf.writestr("b/data.pkl", b"\x80\x02}.")
    with pytest.raises(ModelFormatError, match="expected one <archive>/data.pkl record .* found 2"):
        read_torch_bin(path)
    path = tmp_path / "dup.bin"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a/data.pkl", b"\x80\x02}.")
        zf.writestr("a/data.pkl", b"\x80\x02" + G("os", "system") + b")R.")
    with pytest.raises(ModelFormatError, match="two records named 'a/data.pkl'"):
        read_torch_bin(path)
    path = tmp_path / "cut.bin"
    path.write_bytes((FIXTURES / "bin-f32" / "pytorch_model.bin").read_bytes()[:5000])
    with pytest.raises(ModelFormatError, match="damaged zip archive"):
        read_torch_bin(path)


# --- fuzzing: damaged files only ever raise ModelFormatError -------------------------------

VALID_BIN = (FIXTURES / "bin-f32" / "pytorch_model.bin").read_bytes()
with zipfile.ZipFile(io.BytesIO(VALID_BIN)) as _zf:
    _pkl = _zf.getinfo("pytorch_model/data.pkl")
    PICKLE_START = _pkl.header_offset + 30 + len(_pkl.filename) + len(_pkl.extra)
    PICKLE_END = PICKLE_START + _pkl.file_size
    DIRECTORY_START = _zf.start_dir
VALID_PICKLE = VALID_BIN[PICKLE_START:PICKLE_END]

# Positions that matter most: the pickle, the central directory, and everything else.
positions = st.one_of(st.integers(PICKLE_START, PICKLE_END - 1), st.integers(DIRECTORY_START, len(VALID_BIN) - 1),
                      st.integers(0, len(VALID_BIN) - 1))


def read_or_refuse(path: Path):
    try:
        read_torch_bin(path)
    except ModelFormatError:
        pass


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, len(VALID_BIN))))
def test_mutated_bin_only_raises_model_format_errors(tmp_path, mutations, cut):
    data = bytearray(VALID_BIN)
    for at, value in mutations:
        data[at] = value
    path = tmp_path / "fuzz.bin"
    path.write_bytes(bytes(data[:cut]))
    read_or_refuse(path)


@settings(max_examples=500, deadline=2000)
@given(mutations=st.lists(st.tuples(st.integers(0, len(VALID_PICKLE) - 1), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, len(VALID_PICKLE))))
def test_mutated_pickle_only_raises_model_format_errors(mutations, cut):
    data = bytearray(VALID_PICKLE)
    for at, value in mutations:
        data[at] = value
    try:
        torch_pickle._unpickle(bytes(data[:cut]), "fuzz")
    except ModelFormatError:
        pass


@settings(max_examples=300, deadline=2000)
@given(st.binary(max_size=200))
def test_random_bytes_as_a_pickle(data):
    try:
        torch_pickle._unpickle(b"\x80\x02" + data, "fuzz")
    except ModelFormatError:
        pass


@settings(max_examples=200, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_safetensors_header_only_raises_model_format_errors(tmp_path, mutations):
    from minibert.formats.safetensors import read_safetensors

    data = bytearray((Path(__file__).parent / "fixtures" / "goldens" / "tiny-l1" / "model.safetensors").read_bytes())
    for at, value in mutations:
        data[at] = value
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(data))
    try:
        read_safetensors(path)
    except ModelFormatError:
        pass


def test_refusals_import_nothing(tmp_path):
    """The reader neither imports nor calls: refusing every payload leaves sys.modules as it was."""
    read_torch_bin(FIXTURES / "bin-f32" / "pytorch_model.bin")  # whatever a first read imports, lazily
    before = set(sys.modules)
    for name, (pickled, _) in payloads(tmp_path / "canary").items():
        path = torch_zip(tmp_path / "pytorch_model.bin", pickled, {"data/0": FOUR.tobytes()})
        with pytest.raises(UnsafeCheckpointError):
            read_torch_bin(path)
    assert set(sys.modules) == before
    assert not (tmp_path / "canary").exists()
