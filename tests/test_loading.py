"""Loading a model directory: config validation and the checkpoint -> parameter tree mapping."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minibert import ConfigError, CrossEncoder, ModelFormatError
from minibert.models import config_from_dict
from minibert.runtime.load import load_config, load_params


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    """A writable copy of the tiny num_labels=1 checkpoint."""
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir(num_labels=1), directory)
    return directory


def edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def edit_tensors(directory, fn):
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


# --- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 30, "divisible by num_attention_heads"),
    ("hidden_size", 32.0, "'hidden_size' must be a positive integer"),
    ("num_hidden_layers", 0, "'num_hidden_layers' must be a positive integer"),
    ("intermediate_size", True, "'intermediate_size' must be a positive integer"),
    ("hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new'"),
    ("hidden_act", "relu", "unsupported hidden_act 'relu'"),
    ("layer_norm_eps", 0, "'layer_norm_eps' must be a positive finite number"),
    ("layer_norm_eps", "1e-12", "'layer_norm_eps' must be a positive finite number"),
    ("position_embedding_type", "relative_key", "unsupported position_embedding_type"),
    ("model_type", "gpt2", "model_type is 'gpt2'"),
    ("is_decoder", True, "is_decoder is true"),
    ("pad_token_id", 10_000, "'pad_token_id' must be an integer"),
])
def test_bad_config_field_is_a_config_error_naming_field_and_file(model_copy, field, value, message):
    edit_config(model_copy, **{field: value})
    with pytest.raises(ConfigError, match=message) as excinfo:
        load_config(model_copy)
    assert "config.json" in str(excinfo.value)


def test_config_not_json(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        CrossEncoder(model_copy)


def test_missing_fields_take_bertconfig_defaults():
    config = config_from_dict({"hidden_size": 64, "num_attention_heads": 4, "id2label": {"0": "relevance"}})
    assert config.num_hidden_layers == 12 and config.layer_norm_eps == 1e-12 and config.hidden_act == "gelu"
    assert config.num_labels == 1 and config.id2label == {0: "relevance"}


def test_num_labels_follows_transformers():
    assert config_from_dict({}).num_labels == 2  # transformers' default when nothing is said
    assert config_from_dict({"num_labels": 3}).num_labels == 3
    assert config_from_dict({"id2label": {"0": "a", "1": "b", "2": "c"}}).num_labels == 3
    with pytest.raises(ConfigError, match="num_labels is 2 but id2label has 3"):
        config_from_dict({"num_labels": 2, "id2label": {"0": "a", "1": "b", "2": "c"}})


def test_config_is_frozen(model_copy):
    config = load_config(model_copy)
    with pytest.raises(AttributeError):
        config.hidden_size = 8


# --- weights --------------------------------------------------------------------------------

def test_keys_with_and_without_bert_prefix_load_the_same(model_copy, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_copy, bare)
    edit_tensors(bare, lambda t: t.update({k.removeprefix("bert."): t.pop(k) for k in list(t)}))
    config = load_config(model_copy)
    a, b = load_params(model_copy, config), load_params(bare, config)
    np.testing.assert_array_equal(a.layers[1].ffn_out.weight, b.layers[1].ffn_out.weight)
    np.testing.assert_array_equal(a.classifier.bias, b.classifier.bias)


def test_position_ids_buffer_is_ignored_and_gamma_beta_are_renamed(model_copy):
    def legacy(t):
        t["bert.embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
        t["bert.embeddings.LayerNorm.gamma"] = t.pop("bert.embeddings.LayerNorm.weight")
        t["bert.embeddings.LayerNorm.beta"] = t.pop("bert.embeddings.LayerNorm.bias")
    reference = load_params(model_copy, load_config(model_copy))
    edit_tensors(model_copy, legacy)
    params = load_params(model_copy, load_config(model_copy))
    np.testing.assert_array_equal(params.embeddings.norm.weight, reference.embeddings.norm.weight)


def test_every_missing_unexpected_and_misshapen_tensor_is_named_at_once(model_copy):
    def damage(t):
        del t["bert.encoder.layer.1.attention.self.key.bias"]
        del t["bert.pooler.dense.weight"]
        t["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((5, 32), np.float32)
        t["cls.predictions.bias"] = np.zeros(3, np.float32)
    edit_tensors(model_copy, damage)
    with pytest.raises(ModelFormatError) as excinfo:
        CrossEncoder(model_copy)
    message = str(excinfo.value)
    assert "model.safetensors" in message
    assert "missing tensor bert.encoder.layer.1.attention.self.key.bias" in message
    assert "missing tensor bert.pooler.dense.weight" in message
    assert "tensor bert.encoder.layer.0.intermediate.dense.weight: expected shape [64, 32], found [5, 32]" in message
    assert "unexpected tensor cls.predictions.bias" in message


def test_num_labels_disagreeing_with_classifier_is_named(model_copy):
    edit_config(model_copy, id2label={"0": "a", "1": "b"}, label2id=None)
    with pytest.raises(ModelFormatError, match=r"classifier.weight: expected shape \[2, 32\], found \[1, 32\]"):
        CrossEncoder(model_copy)


def test_bare_bert_model_is_refused_as_not_a_cross_encoder(model_copy):
    edit_tensors(model_copy, lambda t: [t.pop(k) for k in ("classifier.weight", "classifier.bias")])
    with pytest.raises(ModelFormatError, match="bare BERT encoder .*not a cross-encoder"):
        CrossEncoder(model_copy)


def test_float16_checkpoint_widened_at_load_is_upcast_to_float32(model_copy):
    reference = load_params(model_copy, load_config(model_copy))
    edit_tensors(model_copy, lambda t: t.update({k: v.astype(np.float16) for k, v in t.items()}))
    params = load_params(model_copy, load_config(model_copy), widen=True)
    assert params.layers[0].qkv.weight.dtype == np.float32
    np.testing.assert_array_equal(params.layers[0].qkv.weight,
                                  reference.layers[0].qkv.weight.astype(np.float16).astype(np.float32))


def test_integer_tensor_is_refused(model_copy):
    edit_tensors(model_copy, lambda t: t.update({"bert.pooler.dense.bias": np.zeros(32, np.int32)}))
    with pytest.raises(ModelFormatError, match="pooler.dense.bias has dtype int32"):
        CrossEncoder(model_copy)


def test_missing_directory_and_files(tmp_path, model_copy):
    with pytest.raises(ModelFormatError, match="no such model directory"):
        CrossEncoder(tmp_path / "nowhere")
    (model_copy / "model.safetensors").rename(model_copy / "model.ckpt")
    with pytest.raises(ModelFormatError, match=r"no checkpoint: expected model.safetensors.*\(found model.ckpt"):
        CrossEncoder(model_copy)
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelFormatError, match="no config.json"):
        CrossEncoder(model_copy)


def test_truncated_safetensors_file(model_copy):
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match="model.safetensors: cannot read safetensors file"):
        CrossEncoder(model_copy)


def test_missing_tokenizer(model_copy):
    (model_copy / "vocab.txt").unlink()
    with pytest.raises(ModelFormatError, match="no tokenizer: expected tokenizer.json or vocab.txt"):
        CrossEncoder(model_copy)


def test_vocab_without_special_tokens(model_copy):
    path = model_copy / "vocab.txt"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if line != "[SEP]") + "\n")
    with pytest.raises(ModelFormatError, match=r"special token '\[SEP\]' is not in the vocabulary"):
        CrossEncoder(model_copy)


def test_one_token_type_is_refused_for_a_cross_encoder(model_copy):
    edit_config(model_copy, type_vocab_size=1)
    edit_tensors(model_copy, lambda t: t.update(
        {"bert.embeddings.token_type_embeddings.weight": t["bert.embeddings.token_type_embeddings.weight"][:1]}))
    assert load_config(model_copy).type_vocab_size == 1  # fine for an encoder alone
    with pytest.raises(ConfigError, match="needs at least 2 token types"):
        CrossEncoder(model_copy)


def test_an_unfinished_fetch_is_refused_not_half_loaded(model_copy):
    record = model_copy / ".minibert-fetch.json"
    record.write_text(json.dumps({"complete": False, "repo": "owner/name"}))
    with pytest.raises(ModelFormatError, match="unfinished `minibert fetch`.*run the same fetch again"):
        CrossEncoder(model_copy)
    record.write_text(json.dumps({"complete": True, "repo": "owner/name"}))
    assert CrossEncoder(model_copy).predict([("a", "b")]).shape == (1,)
