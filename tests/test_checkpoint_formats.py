"""Every checkpoint format transformers saves loads to the numbers transformers computes from it.

- pytorch_model.bin (f32, f16, bf16, sharded, non-contiguous views): committed fixtures written by
  tools/goldens/formats.py with transformers' logits for each file, so the torch-free reader is
  checked without torch; with torch installed, also live (transformers' logits and torch.load's
  tensors, bit for bit).
- safetensors (f32, f16, bf16, sharded): built at test time by transformers' save_pretrained.
  They need torch, which CI installs; the reader itself is also checked against hand-made files.

Logits are compared with |minibert - transformers| <= RTOL * (|transformers| + max |transformers|):
relative, with the logit scale as the floor for logits near zero. For f16/bf16 files the reference
is transformers' float32 model loaded from the same file (from_pretrained(dir, dtype=float32)).
`pytest -s` prints the measured differences.
"""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minibert import ModelFormatError
from minibert.formats.checkpoint import (
    CHECKPOINT_NAMES,
    find_checkpoint,
    read_checkpoint,
)
from minibert.formats.safetensors import read_safetensors
from minibert.formats.tensors import owns_memory
from minibert.formats.torch_pickle import read_torch_bin
from minibert.models import Batch, forward
from minibert.ops import NUMPY
from minibert.ops.reference import widen
from minibert.runtime.load import load_config, load_params

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))
BIN_VARIANTS = sorted(GOLDEN["variants"])
RTOL = 2e-5


def golden_batch() -> Batch:
    b = {k: np.array(v, dtype=np.int64) for k, v in GOLDEN["batch"].items()}
    lengths = b["attention_mask"].sum(axis=1)
    return Batch.pack([(b["input_ids"][i, :n], b["token_type_ids"][i, :n]) for i, n in enumerate(lengths)])


def minibert_logits(model_dir: Path) -> np.ndarray:
    config = load_config(model_dir)
    return forward(load_params(model_dir, config), config, golden_batch(), ops=NUMPY)


def assert_logits_close(actual, reference, label):
    actual, reference = np.asarray(actual, np.float32), np.asarray(reference, np.float32)
    scale = float(np.abs(reference).max())
    diff = np.abs(actual - reference)
    worst = float((diff / (np.abs(reference) + scale)).max())
    print(f"{label}: max |diff| {diff.max():.3g}, max |diff| / logit scale {diff.max() / scale:.3g}, "
          f"max |diff| / |logit| {(diff / np.abs(reference)).max():.3g}")
    assert worst <= RTOL, f"{label}: logits differ from transformers' by {worst:.3g} (relative) > {RTOL}"


# --- pytorch_model.bin: committed fixtures ------------------------------------------------

@pytest.mark.parametrize("variant", BIN_VARIANTS)
def test_bin_fixture_gives_transformers_logits(variant):
    reference = GOLDEN["variants"][variant]["logits"]
    assert_logits_close(minibert_logits(FIXTURES / variant), reference, variant)


def test_the_tolerance_tells_the_formats_apart():
    # f16 and bf16 weights give other logits than f32: a reader that mixed them up would fail.
    logits = {v: np.array(GOLDEN["variants"][v]["logits"]) for v in ("bin-f32", "bin-f16", "bin-bf16")}
    scale = np.abs(logits["bin-f32"]).max()
    for a, b in (("bin-f32", "bin-f16"), ("bin-f32", "bin-bf16"), ("bin-f16", "bin-bf16")):
        assert np.abs(logits[a] - logits[b]).max() > 20 * RTOL * scale, (a, b)


def test_bin_half_precision_is_the_rounded_float32():
    full = read_torch_bin(FIXTURES / "bin-f32" / "pytorch_model.bin")
    half = read_torch_bin(FIXTURES / "bin-f16" / "pytorch_model.bin")
    brain = read_torch_bin(FIXTURES / "bin-bf16" / "pytorch_model.bin")
    assert set(full) == set(half) == set(brain)
    for name, w in full.items():
        assert half[name].dtype == np.float16 and brain[name].dtype_name == "bfloat16", name
        assert brain[name].stored.dtype == np.uint16 and not brain[name].stored.flags.owndata, name  # the file's bits
        np.testing.assert_array_equal(half[name], w.astype(np.float16), err_msg=name)
        np.testing.assert_array_equal(brain[name], round_to_bfloat16(w), err_msg=name)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even), as float32: what torch's .to(bfloat16) does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return widen(rounded)


def test_bin_views_and_shards_hold_the_same_weights_as_the_plain_file():
    plain = read_torch_bin(FIXTURES / "bin-f32" / "pytorch_model.bin")
    views = read_torch_bin(FIXTURES / "bin-views" / "pytorch_model.bin")
    sharded = read_checkpoint(find_checkpoint(FIXTURES / "bin-sharded"))
    assert not views["bert.encoder.layer.0.attention.self.query.weight"].flags.c_contiguous
    assert views["bert.embeddings.LayerNorm.weight"].strides == (8,)
    np.testing.assert_array_equal(views["bert.embeddings.position_ids"], np.arange(32)[None])
    for name, w in plain.items():
        np.testing.assert_array_equal(views[name], w, err_msg=name)
        np.testing.assert_array_equal(sharded[name], w, err_msg=name)
    assert set(sharded) == set(plain) and set(views) == set(plain) | {"bert.embeddings.position_ids"}


def test_bfloat16_bits_convert_exactly():
    bits = np.array([0x3F80, 0xC000, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x7F7F, 0x3EAB], dtype=np.uint16)
    got = widen(bits)
    expected = [1.0, -2.0, 0.0, -0.0, np.inf, -np.inf, 2.0 ** -133, 3.3895313892515355e38, 0.333984375]
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))
    assert np.signbit(got[3]) and got.flags.owndata
    assert np.isnan(widen(np.array([0x7FC0], dtype=np.uint16)))[0]


# --- live against torch and transformers --------------------------------------------------

@pytest.mark.parametrize("variant", BIN_VARIANTS)
def test_bin_reader_matches_torch_load_bit_for_bit(variant):
    torch = pytest.importorskip("torch")
    for path in sorted((FIXTURES / variant).glob("*.bin")):
        expected = torch.load(path, weights_only=True, map_location="cpu")
        got = read_torch_bin(path)
        assert list(got) == list(expected), path
        for name, tensor in expected.items():
            reference = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
            array = np.asarray(got[name])   # a bfloat16 HalfTensor: widened
            assert array.dtype == reference.dtype and array.shape == reference.shape, name
            np.testing.assert_array_equal(array, reference, err_msg=f"{path}: {name}")


def transformers_logits(model_dir: Path) -> np.ndarray:
    torch = pytest.importorskip("torch")
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    b = {k: torch.tensor(v) for k, v in GOLDEN["batch"].items()}
    with torch.no_grad():
        return model(**b).logits.numpy()


@pytest.mark.parametrize("variant", BIN_VARIANTS)
def test_bin_fixture_against_live_transformers(variant):
    assert_logits_close(minibert_logits(FIXTURES / variant), transformers_logits(FIXTURES / variant),
                        f"{variant} (live)")


@pytest.fixture(scope="module")
def saved_by_transformers(tmp_path_factory):
    """The fixtures' model, saved by save_pretrained as f32, f16, bf16 and sharded safetensors."""
    torch = pytest.importorskip("torch")
    from transformers import BertForSequenceClassification

    def model():
        return BertForSequenceClassification.from_pretrained(FIXTURES / "bin-f32", dtype=torch.float32).eval()

    root = tmp_path_factory.mktemp("saved-by-transformers")
    model().save_pretrained(root / "st-f32")
    model().save_pretrained(root / "st-sharded", max_shard_size="20KB")
    model().half().save_pretrained(root / "st-f16")
    model().to(torch.bfloat16).save_pretrained(root / "st-bf16")
    return root


@pytest.mark.parametrize("variant, checkpoint", [
    ("st-f32", "model.safetensors"), ("st-f16", "model.safetensors"), ("st-bf16", "model.safetensors"),
    ("st-sharded", "model.safetensors.index.json"),
])
def test_safetensors_saved_by_transformers_gives_its_logits(saved_by_transformers, variant, checkpoint):
    directory = saved_by_transformers / variant
    assert find_checkpoint(directory).name == checkpoint
    if variant == "st-sharded":
        assert len(list(directory.glob("model-*-of-*.safetensors"))) > 2
    assert_logits_close(minibert_logits(directory), transformers_logits(directory), variant)


def test_safetensors_f16_and_bf16_are_exact_upcasts(saved_by_transformers):
    full = read_safetensors(saved_by_transformers / "st-f32" / "model.safetensors")
    half = read_safetensors(saved_by_transformers / "st-f16" / "model.safetensors")
    brain = read_safetensors(saved_by_transformers / "st-bf16" / "model.safetensors")
    for name, w in full.items():
        np.testing.assert_array_equal(half[name], w.astype(np.float16), err_msg=name)
        np.testing.assert_array_equal(brain[name], round_to_bfloat16(w), err_msg=name)


# --- which file is read --------------------------------------------------------------------

def test_checkpoint_priority_is_transformers(tmp_path):
    for name in CHECKPOINT_NAMES:
        (tmp_path / name).write_bytes(b"")
    for name in CHECKPOINT_NAMES:  # safetensors, its index, .bin, its index
        assert find_checkpoint(tmp_path) == tmp_path / name
        (tmp_path / name).unlink()
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"no checkpoint: expected model.safetensors, .*pytorch_model.bin.*"
                                               r"\(found model.pt, not one of these\)"):
        find_checkpoint(tmp_path)


def test_params_own_their_memory_so_the_file_can_be_replaced(tiny_model_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), directory)
    views = read_safetensors(directory / "model.safetensors")
    word = views["bert.embeddings.word_embeddings.weight"]
    assert not word.flags.owndata and not word.flags.writeable  # a view of the mapped file
    params = load_params(directory, load_config(directory))
    before = params.embeddings.word.copy()
    assert params.embeddings.word.flags.owndata and params.embeddings.word.dtype == np.float32
    del views, word
    tensors = load_file(str(directory / "model.safetensors"))
    save_file({k: v + 1 for k, v in tensors.items()}, str(directory / "model.safetensors"))  # same inode
    np.testing.assert_array_equal(params.embeddings.word, before)


def test_loading_holds_a_float32_checkpoint_once_not_twice(tmp_path):
    """The file's pages are let go as each block of rows is copied (formats/tensors.release_pages): loading 128 MiB of
    float32 weights raises the peak resident memory by about 128 MiB and a block (with every page of the file kept
    as well: 256 MiB and more)."""
    import subprocess
    import sys

    save_file({"w": np.ones((8192, 4096), np.float32)}, str(tmp_path / "w.safetensors"))
    code = ("import numpy as np\n"
            "from minibert.formats.checkpoint import read_checkpoint\n"
            "from minibert.models.params import Spec, tree_from_tensors\n"
            "def peak():\n"
            "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024\n"
            f"tensors = read_checkpoint({str(tmp_path / 'w.safetensors')!r})\n"
            "before = peak()\n"
            "w = tree_from_tensors(tensors, Spec('w', (8192, 4096)), 'w.safetensors')\n"
            "assert w.flags.owndata and float(w.sum()) == 8192 * 4096\n"
            "print(peak() - before)\n")
    grew = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 128 <= grew < 240, f"loading 128 MiB of float32 weights raised the peak RSS by {grew} MiB"


@pytest.mark.parametrize("variant", BIN_VARIANTS)
def test_params_are_private_writable_float32(variant):
    # A float32 checkpoint's always; a half-precision one's widened at load (kept: tests/test_precision.py).
    params = load_params(FIXTURES / variant, load_config(FIXTURES / variant), widen=True)
    for array in (params.embeddings.word, params.embeddings.norm.weight, params.layers[0].qkv.weight,
                  params.classifier.weight, params.classifier.bias):
        assert array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
        assert owns_memory(array)  # not a view of the mapped file


def test_own_safetensors_reader_agrees_with_the_safetensors_package(tiny_model_dir, tmp_path):
    reference = load_file(str(tiny_model_dir() / "model.safetensors"))
    mixed = {k: v.astype(np.float16) if i % 3 == 1 else v.astype(np.float64) if i % 3 == 2 else v
             for i, (k, v) in enumerate(reference.items())}
    mixed["bert.embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
    mixed["empty"] = np.zeros((0, 5), np.float32)
    save_file(mixed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    got = read_safetensors(tmp_path / "model.safetensors")
    assert set(got) == set(mixed)
    for name, value in mixed.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# --- safetensors: the reader's validation -----------------------------------------------------

def write_safetensors(path: Path, header: dict, buffer: bytes, length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + buffer)
    return path


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


def test_handmade_bfloat16_safetensors(tmp_path):
    bits = np.array([0x3F80, 0xC040, 0x0000, 0xBF00], dtype="<u2")
    path = write_safetensors(tmp_path / "bf.safetensors", {"w": {"dtype": "BF16", "shape": [2, 2],
                                                                 "data_offsets": [0, 8]}}, bits.tobytes())
    np.testing.assert_array_equal(read_safetensors(path)["w"], [[1.0, -3.0], [0.0, -0.5]])


@pytest.mark.parametrize("header, buffer, length, message", [
    ({"w": F32_2x2}, bytes(16), 10 ** 6, r"header length 1000000 runs past the end of the \d+-byte file"),
    ({"w": F32_2x2}, bytes(16), 100_000_001, "header length 100000001 is above the 100000000-byte limit"),
    ({"w": F32_2x2}, bytes(10), None, r"tensor 'w': data_offsets \[0, 16\] run past the end of the 10-byte "
                                      r"data buffer \(truncated\?\)"),
    ({"w": {**F32_2x2, "dtype": "F33"}}, bytes(16), None, "tensor 'w': unknown dtype 'F33'"),
    ({"w": {**F32_2x2, "dtype": "F8_E4M3"}}, bytes(16), None, "tensor 'w': dtype F8_E4M3 is not supported"),
    ({"w": {**F32_2x2, "shape": [2, 3]}}, bytes(16), None,
     r"tensor 'w': shape \[2, 3\] of F32 needs 24 bytes, but data_offsets \[0, 16\] hold 16"),
    ({"w": {**F32_2x2, "shape": [2, -2]}}, bytes(16), None, r"tensor 'w': shape must hold non-negative integers"),
    ({"w": {**F32_2x2, "shape": [2, 2.0]}}, bytes(16), None, r"tensor 'w': shape must hold non-negative integers"),
    ({"w": {**F32_2x2, "shape": [True, 4]}}, bytes(16), None, r"tensor 'w': shape must hold non-negative integers"),
    ({"w": {**F32_2x2, "shape": "2x2"}}, bytes(16), None, r"tensor 'w': shape must be a list"),
    ({"w": {**F32_2x2, "shape": [2 ** 21, 2 ** 21, 0]}}, b"", None, r"tensor 'w': shape .* is too large"),
    ({"w": {**F32_2x2, "data_offsets": [0, 1.6e1]}}, bytes(16), None,
     "tensor 'w': data_offsets must be two non-negative integers"),
    ({"w": {**F32_2x2, "data_offsets": [16, 0]}}, bytes(16), None, r"tensor 'w': data_offsets \[16, 0\] end before"),
    ({"w": {"dtype": "F32", "shape": [2, 2]}}, bytes(16), None, "tensor 'w': no 'data_offsets' field"),
    ({"w": [1, 2]}, bytes(16), None, "tensor 'w': expected an object with dtype, shape and data_offsets"),
    ({"w": {**F32_2x2, "shape": [10 ** 6, 10 ** 6], "data_offsets": [0, 4 * 10 ** 12]}}, bytes(16), None,
     r"tensor 'w': data_offsets \[0, 4000000000000\] run past the end of the 16-byte data buffer"),
    ({"a": F32_2x2, "b": {**F32_2x2, "data_offsets": [8, 24]}}, bytes(24), None,
     r"tensor 'b': data_offsets \[8, 24\] overlap tensor 'a'"),
    ({"a": F32_2x2, "b": {**F32_2x2, "data_offsets": [20, 36]}}, bytes(36), None,
     r"tensor 'b': data_offsets \[20, 36\] leave bytes \[16, 20\) of the buffer to no tensor"),
    ({"w": F32_2x2}, bytes(20), None, "the tensors end at byte 16 of the data buffer, but the file holds 20"),
    ({"w": F32_2x2, "__metadata__": {"format": 1}}, bytes(16), None, "__metadata__ must be an object of strings"),
])
def test_bad_safetensors_is_refused_naming_file_and_tensor(tmp_path, header, buffer, length, message):
    path = write_safetensors(tmp_path / "model.safetensors", header, buffer, length)
    with pytest.raises(ModelFormatError, match=message) as excinfo:
        read_safetensors(path)
    assert str(excinfo.value).startswith(f"{path}: cannot read safetensors file: ")


@pytest.mark.parametrize("raw, message", [
    (b"\x05\x00\x00", "3 bytes, too short for the 8-byte header length"),
    (struct.pack("<Q", 9) + b"{not json", "header is not valid JSON"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "header is not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "header must be a JSON object, found list"),
    (struct.pack("<Q", 32) + b'{"a": {}, "a": {"dtype": "F32"}}', "duplicate key 'a'"),
])
def test_unreadable_safetensors_header(tmp_path, raw, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ModelFormatError, match=message):
        read_safetensors(path)


# --- shards --------------------------------------------------------------------------------

@pytest.fixture
def sharded_dir(tiny_model_dir, tmp_path):
    """The tiny model as three safetensors shards + model.safetensors.index.json, as transformers writes."""
    tensors = load_file(str(tiny_model_dir() / "model.safetensors"))
    directory = tmp_path / "sharded"
    shutil.copytree(tiny_model_dir(), directory)
    (directory / "model.safetensors").unlink()
    weight_map = {}
    names = sorted(tensors)
    for k in range(3):
        shard = f"model-{k + 1:05d}-of-00003.safetensors"
        save_file({n: tensors[n] for n in names[k::3]}, str(directory / shard))
        weight_map.update({n: shard for n in names[k::3]})
    write_index(directory, weight_map)
    return directory


def write_index(directory: Path, weight_map: dict, name: str = "model.safetensors.index.json"):
    (directory / name).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


def read_weight_map(directory: Path) -> dict:
    return json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]


def test_sharded_safetensors_load_like_the_single_file(sharded_dir, tiny_model_dir):
    config = load_config(sharded_dir)
    single = load_params(tiny_model_dir(), config)
    sharded = load_params(sharded_dir, config)
    np.testing.assert_array_equal(sharded.layers[1].ffn_in.weight, single.layers[1].ffn_in.weight)
    np.testing.assert_array_equal(sharded.classifier.bias, single.classifier.bias)


def test_missing_shard(sharded_dir):
    (sharded_dir / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelFormatError, match=r"model.safetensors.index.json: shard file\(s\) not found: "
                                               r"model-00002-of-00003.safetensors"):
        read_checkpoint(find_checkpoint(sharded_dir))


@pytest.mark.parametrize("shard, message", [
    ("../model-00001-of-00003.safetensors", "is not a plain file name in the model directory"),
    ("/etc/passwd.safetensors", "is not a plain file name in the model directory"),
    ("sub/model-00001-of-00003.safetensors", "is not a plain file name in the model directory"),
    ("..\\model-00001-of-00003.safetensors", "is not a plain file name in the model directory"),
    ("..", "is not a plain file name in the model directory"),
    ("pytorch_model.bin", "is not a .safetensors file"),
    (7, "shard must be a file name, found 7"),
])
def test_shard_outside_the_model_directory_is_refused(sharded_dir, shard, message):
    weight_map = read_weight_map(sharded_dir)
    weight_map["classifier.bias"] = shard
    write_index(sharded_dir, weight_map)
    (sharded_dir.parent / "model-00001-of-00003.safetensors").write_bytes(
        (sharded_dir / "model-00001-of-00003.safetensors").read_bytes())  # exists, outside the directory
    with pytest.raises(ModelFormatError, match=f"tensor 'classifier.bias': .*{message}"):
        read_checkpoint(find_checkpoint(sharded_dir))


def test_tensor_in_two_shards(sharded_dir):
    path = sharded_dir / "model-00003-of-00003.safetensors"
    tensors = load_file(str(path))
    name, shard = next((n, s) for n, s in read_weight_map(sharded_dir).items() if s.startswith("model-00001"))
    tensors[name] = load_file(str(sharded_dir / shard))[name]
    save_file(tensors, str(path))
    with pytest.raises(ModelFormatError, match=f"tensor '{name}' is in two shards, model-00001-of-00003.safetensors "
                                               "and model-00003-of-00003.safetensors"):
        read_checkpoint(find_checkpoint(sharded_dir))


def test_index_and_shards_disagree(sharded_dir):
    weight_map = read_weight_map(sharded_dir)
    name = next(n for n, s in weight_map.items() if s.startswith("model-00002"))
    weight_map[name] = "model-00001-of-00003.safetensors"
    write_index(sharded_dir, weight_map)
    with pytest.raises(ModelFormatError, match=f"tensor '{name}' is in shard model-00002-of-00003.safetensors, "
                                               "but the index lists it in model-00001-of-00003.safetensors"):
        read_checkpoint(find_checkpoint(sharded_dir))
    del weight_map[name]
    write_index(sharded_dir, weight_map)
    with pytest.raises(ModelFormatError, match=f"tensor '{name}' .* but the index does not list it"):
        read_checkpoint(find_checkpoint(sharded_dir))


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"weight_map": {}}', 'expected a non-empty "weight_map" object'),
    ('{"metadata": {}}', 'expected a non-empty "weight_map" object'),
    ('{"weight_map": {"a": "model-00001-of-00003.safetensors", "a": "model-00002-of-00003.safetensors"}}',
     "duplicate key 'a'"),
])
def test_bad_index_file(sharded_dir, text, message):
    (sharded_dir / "model.safetensors.index.json").write_text(text)
    with pytest.raises(ModelFormatError, match=f"model.safetensors.index.json: .*{message}"):
        read_checkpoint(find_checkpoint(sharded_dir))


def test_bin_index_names_a_missing_shard(tmp_path):
    directory = tmp_path / "bin-sharded"
    shutil.copytree(FIXTURES / "bin-sharded", directory)
    (directory / "pytorch_model-00003-of-00003.bin").unlink()
    with pytest.raises(ModelFormatError, match=r"pytorch_model.bin.index.json: shard file\(s\) not found: "
                                               r"pytorch_model-00003-of-00003.bin"):
        load_params(directory, load_config(directory))
