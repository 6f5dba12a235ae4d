"""DeBERTa-v2 / v3 without torch: config parsing and its errors, the tensor table's errors, the
tokenizer's errors, and that the goldens do test the disentangled attention (a change to the
relative embeddings fails them). The numbers themselves: tests/test_goldens.py and tests/parity/test_deberta_v2.py."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minibert import CrossEncoder
from minibert.errors import ConfigError, ModelFormatError
from minibert.formats.checkpoint import find_checkpoint, read_checkpoint
from minibert.models import Batch, config_from_dict, family_of, forward
from minibert.models.params import params_from_tensors
from minibert.ops import NUMPY
from minibert.runtime.load import load_config

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
V3, V2 = GOLDENS / "deberta-v3", GOLDENS / "deberta-v2"


def from_tensors(tensors, config, source, head=True):
    """The tensors mapped onto the config's family's parameter tree."""
    return params_from_tensors(tensors, family_of(config), config, source, head)


def raw_config(path: Path = V3) -> dict:
    return json.loads((path / "config.json").read_text(encoding="utf-8"))


def with_fields(**fields):
    return config_from_dict({**raw_config(), **fields}, source="x/config.json")


def test_the_goldens_config_reads_as_deberta_v3():
    c = load_config(V3)
    assert (c.model_type, c.type_vocab_size, c.position_biased_input, c.share_att_key) == ("deberta-v2", 0, False, True)
    assert c.pos_att_type == ("p2c", "c2p") and c.norm_rel_ebd == ("layer_norm",)
    assert c.span == c.position_buckets == 16 and c.max_tokens == c.max_position_embeddings


def test_pos_att_type_string_and_list_forms():
    assert with_fields(pos_att_type="P2C | c2p").pos_att_type == ("p2c", "c2p")   # lowercased, split at "|"
    assert with_fields(pos_att_type=["c2p"]).pos_att_type == ("c2p",)
    assert with_fields(pos_att_type=None).pos_att_type == ()


def test_max_relative_positions_minus_one_means_max_position_embeddings():
    c = with_fields(position_buckets=-1, max_relative_positions=-1)
    assert c.span == c.max_position_embeddings
    assert with_fields(position_buckets=0, max_relative_positions=20).span == 20


@pytest.mark.parametrize("fields, named", [
    ({"pos_att_type": ["c2p", "p2p"]}, "'p2p'"),
    ({"pos_att_type": "c2p|p2c|c2c"}, "'c2c'"),
    ({"pos_att_type": ["C2P"]}, "'C2P'"),          # transformers would silently ignore it
    ({"pos_att_type": 3}, "pos_att_type"),
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
    ({"pooler_hidden_act": "relu"}, "pooler_hidden_act 'relu'"),
    ({"norm_rel_ebd": "batch_norm"}, "norm_rel_ebd 'batch_norm'"),
    ({"conv_kernel_size": 3, "conv_groups": 2}, "conv_groups 2"),
    ({"conv_kernel_size": 3, "conv_act": "swish"}, "conv_act 'swish'"),
    ({"conv_kernel_size": 4}, "conv_kernel_size 4"),
    ({"pooler_hidden_size": 16}, "pooler_hidden_size 16"),
    ({"attention_head_size": 4}, "attention_head_size 4"),
    ({"embedding_size": None}, "embedding_size"),
    ({"relative_attention": "yes"}, "relative_attention"),
    ({"position_buckets": 1}, "position_buckets 1"),
    ({"hidden_size": 30}, "divisible"),
])
def test_unsupported_options_are_config_errors_naming_them(fields, named):
    with pytest.raises(ConfigError) as err:
        with_fields(**fields)
    assert named in str(err.value) and "x/config.json" in str(err.value), str(err.value)


def tensors(path: Path = V3) -> dict:
    return dict(read_checkpoint(find_checkpoint(path)))


def test_a_checkpoint_without_its_head_is_not_a_cross_encoder():
    bare = {k: v for k, v in tensors().items() if not k.startswith(("classifier.", "pooler."))}
    with pytest.raises(ModelFormatError, match="not a cross-encoder"):
        from_tensors(bare, load_config(V3), source="m.safetensors")
    # ... but it is an encoder (a bare DebertaV2Model saves no "deberta." prefix)
    params = from_tensors({k[len("deberta."):]: v for k, v in bare.items()}, load_config(V3), "m", head=False)
    assert params.classifier is None and len(params.layers) == 2


@pytest.mark.parametrize("path, name", [
    (V3, "deberta.encoder.layer.1.attention.self.query_proj.weight"),
    (V3, "deberta.encoder.rel_embeddings.weight"),
    (V3, "deberta.encoder.LayerNorm.bias"),                       # norm_rel_ebd layer_norm
    (V2, "deberta.encoder.layer.0.attention.self.pos_key_proj.weight"),   # share_att_key false
    (V2, "deberta.encoder.layer.1.attention.self.pos_query_proj.bias"),
    (V2, "deberta.embeddings.embed_proj.weight"),                # embedding_size != hidden_size
    (V2, "deberta.embeddings.position_embeddings.weight"),       # position_biased_input
    (V2, "deberta.encoder.conv.conv.weight"),
    (V2, "pooler.dense.weight"),
])
def test_a_missing_tensor_is_named(path, name):
    t = tensors(path)
    assert name in t
    del t[name]
    with pytest.raises(ModelFormatError, match=f"missing tensor {name}, expected shape"):
        from_tensors(t, load_config(path), source="m.safetensors")


def test_unused_absolute_positions_are_ignored_as_transformers_does_but_other_extras_are_named():
    c = load_config(V3)
    t = tensors()
    t["deberta.embeddings.position_embeddings.weight"] = np.ones((c.max_position_embeddings, c.hidden_size), np.float32)
    from_tensors(t, c, source="m.safetensors")  # v3: position_biased_input false, the table is unused
    t["deberta.encoder.layer.0.attention.self.pos_key_proj.weight"] = np.ones((c.hidden_size,) * 2, np.float32)
    with pytest.raises(ModelFormatError, match="unexpected tensor deberta.encoder.layer.0.attention.self.pos_key_proj"):
        from_tensors(t, c, source="m.safetensors")


def test_a_wrong_shape_is_named():
    t = tensors()
    t["deberta.encoder.rel_embeddings.weight"] = t["deberta.encoder.rel_embeddings.weight"][:-2]
    with pytest.raises(ModelFormatError, match=r"tensor deberta.encoder.rel_embeddings.weight: expected shape \[32, 32\]"):
        from_tensors(t, load_config(V3), source="m.safetensors")


def golden_batch(path: Path):
    """The golden file of a fixture, its model (NumPy ops) and its pairs packed as one batch."""
    golden = np.load(path / "golden.npz")
    offsets = np.concatenate([[0], np.cumsum(golden["lengths"])])
    pairs = [(golden["input_ids"][a:b], golden["token_type_ids"][a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    return golden, CrossEncoder(path, ops=NUMPY), Batch.pack(pairs)


def test_the_goldens_see_the_relative_positions():
    """Shifting the relative embeddings by one row fails the goldens from layer_0 on: the c2p / p2c
    terms are in the numbers the goldens check, not only the content term."""
    golden, ce, batch = golden_batch(V3)
    _, stages = forward(ce.params, ce.config, batch, NUMPY, return_stages=True)
    assert np.allclose(stages["layer_0"], golden["layer_0"], atol=1e-5, rtol=1e-5)
    shifted = dataclasses.replace(ce.params, rel_embeddings=np.roll(ce.params.rel_embeddings, 1, axis=0))
    _, stages = forward(shifted, ce.config, batch, NUMPY, return_stages=True)
    assert np.allclose(stages["embeddings"], golden["embeddings"], atol=1e-5, rtol=1e-5)
    assert not np.allclose(stages["layer_0"], golden["layer_0"], atol=1e-3, rtol=1e-3)


def test_type_vocab_size_zero_takes_the_tokenizers_token_types_and_ignores_them():
    ce = CrossEncoder(V3, ops=NUMPY)
    (ids, types), = ce.tokenizer.encode_pairs([("a query", "a passage")])
    assert ce.config.type_vocab_size == 0 and types.max() == 1   # as DebertaV2Tokenizer makes them
    assert ce.params.embeddings.token_type is None


def test_only_an_spm_model_is_a_clear_error(tmp_path):
    shutil.copy(V3 / "config.json", tmp_path / "config.json")
    shutil.copy(V3 / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    (tmp_path / "spm.model").write_bytes(b"\x00")
    with pytest.raises(ModelFormatError, match="only a SentencePiece model .spm.model., no tokenizer.json"):
        CrossEncoder(tmp_path)


def test_a_tokenizer_json_that_is_not_unigram_is_named(tmp_path):
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        shutil.copy(V3 / name, tmp_path / name)
    tj = json.loads((V3 / "tokenizer.json").read_text(encoding="utf-8"))
    tj["model"] = {"type": "WordPiece", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    with pytest.raises(ModelFormatError, match="Unigram.*found model type 'WordPiece'"):
        CrossEncoder(tmp_path)


@pytest.mark.parametrize("path", [V3, V2])
def test_a_pair_scored_in_blocks_of_queries_gives_the_same_numbers(path, monkeypatch):
    """Blocks of 2 queries (SCORE_BLOCK_ELEMENTS at 2 x heads x length): every block's relative positions, c2p and
    p2c terms must be those of its own rows, as in one block."""
    from minibert.models import deberta_v2

    golden, ce, batch = golden_batch(path)
    whole = forward(ce.params, ce.config, batch, NUMPY)
    monkeypatch.setattr(deberta_v2, "SCORE_BLOCK_ELEMENTS", 2 * ce.config.num_attention_heads * int(golden["lengths"].max()))
    # within float32 rounding (BLAS sums a product of fewer rows in another order); a block misplaced is ~1e-2 off
    np.testing.assert_allclose(forward(ce.params, ce.config, batch, NUMPY), whole, atol=1e-5, rtol=1e-5)
