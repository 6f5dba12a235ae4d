"""ELECTRA and DistilBERT configs, checkpoints and tokenizers: what is read, what is refused, and how
each refusal names the field, file or tensor. On copies of the golden fixtures; no torch needed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minibert import ConfigError, CrossEncoder, ModelFormatError
from minibert.models import config_from_dict, family_of
from minibert.runtime.load import load_config, load_params, load_tokenizer

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"


@pytest.fixture
def copy(tmp_path):
    def make(name: str) -> Path:
        directory = tmp_path / name
        shutil.copytree(GOLDENS / name, directory)
        return directory
    return make


def edit_config(directory: Path, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def edit_tensors(directory: Path, fn):
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


# --- configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, field, value, message", [
    ("electra-e24", "hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new'"),
    ("electra-e24", "position_embedding_type", "relative_key", "unsupported position_embedding_type 'relative_key'"),
    ("electra-e24", "embedding_size", 0, "'embedding_size' must be a positive integer"),
    ("electra-e24", "embedding_size", 24.0, "'embedding_size' must be a positive integer"),
    ("electra-e24", "hidden_size", 35, "hidden_size \\(35\\) must be divisible by num_attention_heads \\(3\\)"),
    ("distilbert-gelu", "activation", "tanh", "unsupported activation 'tanh'; minibert implements 'gelu', 'relu'"),
    ("distilbert-gelu", "activation", "gelu_new", "unsupported activation 'gelu_new'"),
    ("distilbert-gelu", "dim", 35, "dim \\(35\\) must be divisible by n_heads \\(3\\)"),
    ("distilbert-gelu", "hidden_dim", -1, "'hidden_dim' must be a positive integer"),
    ("distilbert-gelu", "n_layers", 0, "'n_layers' must be a positive integer"),
    ("distilbert-gelu", "sinusoidal_pos_embds", "yes", "'sinusoidal_pos_embds' must be true or false, found 'yes'"),
    ("distilbert-gelu", "sinusoidal_pos_embds", 1, "'sinusoidal_pos_embds' must be true or false, found 1"),
    ("distilbert-gelu", "hidden_size", 35, "dim \\(35\\) must be divisible"),  # the common name, mapped to dim
])
def test_bad_config_field_is_a_config_error_naming_field_and_file(copy, name, field, value, message):
    directory = copy(name)
    edit_config(directory, **{field: value})
    with pytest.raises(ConfigError, match=message) as excinfo:
        load_config(directory)
    assert str(directory / "config.json") in str(excinfo.value)


def test_unknown_model_type_names_the_families():
    with pytest.raises(ConfigError, match="model_type is 'albert'; minibert runs .*'distilbert'.*'electra'"):
        config_from_dict({"model_type": "albert"})


def test_defaults_are_each_config_class_s_own():
    electra = config_from_dict({"model_type": "electra"})  # ElectraConfig's defaults, not BertConfig's
    assert (electra.embedding_size, electra.hidden_size, electra.num_attention_heads, electra.intermediate_size) \
        == (128, 256, 4, 1024)
    assert family_of(electra).name == "ELECTRA" and electra.max_tokens == 512 and electra.type_vocab_size == 2
    distil = config_from_dict({"model_type": "distilbert"})
    assert (distil.dim, distil.n_layers, distil.n_heads, distil.hidden_dim, distil.activation) == (768, 6, 12, 3072, "gelu")
    assert (distil.hidden_size, distil.num_hidden_layers, distil.num_attention_heads) == (768, 6, 12)
    assert distil.type_vocab_size == 0 and distil.max_tokens == 512 and distil.layer_norm_eps == 1e-12
    assert distil.sinusoidal_pos_embds is False and family_of(distil).name == "DistilBERT"


def test_distilbert_common_names_win_over_its_own_as_in_transformers():
    # transformers' attribute_map: hidden_size, num_hidden_layers, num_attention_heads set dim, n_layers, n_heads
    c = config_from_dict({"model_type": "distilbert", "dim": 48, "hidden_size": 40, "num_hidden_layers": 3,
                          "n_heads": 2, "num_attention_heads": 5})
    assert (c.dim, c.hidden_size, c.n_layers, c.n_heads) == (40, 40, 3, 5)


# --- checkpoints ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, head", [("electra-e24", "classifier."), ("electra-h32", "classifier."),
                                        ("distilbert-gelu", "classifier."), ("distilbert-relu-sin", "")])
def test_checkpoint_without_its_head_is_not_a_cross_encoder(copy, name, head):
    directory = copy(name)
    prefixes = ("classifier.", "pre_classifier.") if name.startswith("distilbert") else ("classifier.",)
    edit_tensors(directory, lambda t: [t.pop(k) for k in list(t) if k.startswith(prefixes)])
    with pytest.raises(ModelFormatError, match="not a cross-encoder") as excinfo:
        CrossEncoder(directory)
    family = "ELECTRA" if name.startswith("electra") else "DistilBERT"
    assert f"bare {family} encoder" in str(excinfo.value)
    # ... but it is an encoder: loaded alone, for sentence embeddings
    params = load_params(directory, load_config(directory), head=False)
    assert len(params.layers) == load_config(directory).num_hidden_layers


@pytest.mark.parametrize("name, tensor, shape", [
    ("electra-e24", "electra.embeddings_project.weight", [36, 24]),
    ("electra-e24", "electra.embeddings.LayerNorm.bias", [24]),
    ("electra-h32", "classifier.out_proj.weight", [3, 32]),
    ("distilbert-gelu", "distilbert.transformer.layer.1.attention.k_lin.bias", [36]),
    ("distilbert-gelu", "pre_classifier.weight", [36, 36]),
    # sinusoidal_pos_embds: the table is a stored parameter; without it, refused (transformers would draw it)
    ("distilbert-relu-sin", "distilbert.embeddings.position_embeddings.weight", [64, 30]),
])
def test_missing_tensor_is_named(copy, name, tensor, shape):
    directory = copy(name)
    edit_tensors(directory, lambda t: t.pop(tensor))
    with pytest.raises(ModelFormatError, match=f"missing tensor {tensor}, expected shape \\{shape}"):
        CrossEncoder(directory)


def test_projection_where_embedding_size_equals_hidden_size_is_unexpected(copy):
    directory = copy("electra-h32")
    edit_tensors(directory, lambda t: t.update({"electra.embeddings_project.weight": np.zeros((32, 32), np.float32)}))
    with pytest.raises(ModelFormatError, match="unexpected tensor electra.embeddings_project.weight"):
        CrossEncoder(directory)


def test_wrong_embedding_size_names_every_wrong_shape(copy):
    directory = copy("electra-e24")
    edit_config(directory, embedding_size=36)  # then there is no projection either
    with pytest.raises(ModelFormatError) as excinfo:
        CrossEncoder(directory)
    message = str(excinfo.value)
    assert "tensor electra.embeddings.word_embeddings.weight: expected shape [1200, 36], found [1200, 24]" in message
    assert "unexpected tensor electra.embeddings_project.weight" in message


def test_distilbert_has_no_token_type_tensors_and_reads_none(copy):
    directory = copy("distilbert-relu-sin")
    edit_tensors(directory, lambda t: t.update(
        {"distilbert.embeddings.token_type_embeddings.weight": np.zeros((2, 30), np.float32)}))
    with pytest.raises(ModelFormatError, match="unexpected tensor distilbert.embeddings.token_type_embeddings.weight"):
        CrossEncoder(directory)


# --- tokenizers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, token_types", [
    ("electra-e24", True),          # tokenizer_class ElectraTokenizer: transformers 5 loads BertTokenizer
    ("electra-h32", True),          # no tokenizer_class: AutoTokenizer's BertTokenizer for electra
    ("distilbert-gelu", False),     # DistilBertTokenizer: model_input_names without token_type_ids
    ("distilbert-relu-sin", True),  # no tokenizer_class: BertTokenizer; the model never reads the types
])
def test_token_types_follow_the_tokenizer_class(name, token_types):
    directory = GOLDENS / name
    tokenizer = load_tokenizer(directory, load_config(directory))
    assert tokenizer.token_types is token_types
    (_, types), = tokenizer.encode_pairs([("a query", "a passage")])
    assert types[-1] == (1 if token_types else 0) and types[0] == 0  # [SEP] closing the passage


def test_distilbert_tokenizer_class_name_with_fast_suffix(copy):
    directory = copy("distilbert-relu-sin")
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "DistilBertTokenizerFast"}))
    tokenizer = load_tokenizer(directory, load_config(directory))
    assert tokenizer.token_types is False
