"""jina-reranker-v2's XLM-RoBERTa (minibert/models/jina.py): what the shared harnesses do not cover.

- dispatch: its config.json has no model_type; the registry finds it by auto_map["AutoConfig"], and a config.json
  without a model_type and without a known auto_map still reads as BERT;
- config: XLMRobertaFlashConfig's fields and defaults, the kernel-only options accepted, the options that change
  the maths refused with a ConfigError naming the field and the file;
- checkpoints: the bfloat16 pytorch_model.bin (read without torch), bfloat16 and float32 model.safetensors load
  to the same numbers; the tensor names are jina's own;
- the cross-check vLLM's serving implies: the same weights renamed into XLM-RoBERTa's names run through
  minibert's XLM-R path give the goldens' numbers; transformers' XLM-RoBERTa on them gives the attention explain
  shows (the reference has no output_attentions).
The numbers themselves (every stage against the model repository's own code) are tests/test_goldens.py's.
"""

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from minibert import ConfigError, CrossEncoder, ModelFormatError
from minibert.formats.checkpoint import find_checkpoint, read_checkpoint
from minibert.formats.safetensors import write_safetensors
from minibert.models import Batch, config_from_dict, family_of, find_family, forward
from minibert.models.jina import JinaConfig
from minibert.oracle.explain import explain
from minibert.runtime.load import load_config

pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
BIN, SAFETENSORS = "jina-bf16-bin", "jina-f32-safetensors"
JINA_AUTO_CONFIG = "configuration_xlm_roberta.XLMRobertaFlashConfig"
# jinaai/jina-reranker-v2-base-multilingual's config.json (1,102 bytes, unchanged since 67b96c4).
HUB_CONFIG = {
    "_name_or_path": "jinaai/jina-reranker-v2-base-multilingual",
    "architectures": ["XLMRobertaForSequenceClassification"], "attention_probs_dropout_prob": 0.1,
    "auto_map": {"AutoConfig": JINA_AUTO_CONFIG, "AutoModel": "modeling_xlm_roberta.XLMRobertaModel",
                 "AutoModelForSequenceClassification": "modeling_xlm_roberta.XLMRobertaForSequenceClassification"},
    "bos_token_id": 0, "classifier_dropout": None, "emb_pooler": None, "eos_token_id": 2, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "num_labels": 1, "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02, "intermediate_size": 3072, "label2id": {"LABEL_0": 0}, "layer_norm_eps": 1e-5,
    "max_position_embeddings": 1026, "num_attention_heads": 12, "num_hidden_layers": 12, "output_past": True,
    "pad_token_id": 1, "position_embedding_type": "absolute", "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0", "type_vocab_size": 1, "use_cache": False, "use_flash_attn": True,
    "vocab_size": 250002,
}


def family_name(raw: dict) -> str:
    return family_of(config_from_dict(raw)).name


@pytest.fixture
def copy(tmp_path):
    def make(name: str, as_name: str | None = None) -> Path:
        directory = tmp_path / (as_name or name)
        shutil.copytree(GOLDENS / name, directory)
        return directory
    return make


def edit_config(directory: Path, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")


def golden(name: str):
    meta = json.loads((GOLDENS / name / "golden.json").read_text(encoding="utf-8"))
    with np.load(GOLDENS / name / "golden.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    batch = Batch.pack([(arrays["input_ids"][a:b], arrays["token_type_ids"][a:b]) for a, b in itertools.pairwise(bounds)])
    return meta, arrays, batch


# --- dispatch -----------------------------------------------------------------------------------

def test_the_hub_config_reads_as_jina_and_one_without_a_known_auto_map_as_bert():
    assert family_name(HUB_CONFIG) == "jina-reranker-v2 XLM-RoBERTa"
    bare = {k: v for k, v in HUB_CONFIG.items() if k != "auto_map"}
    assert family_name(bare) == "BERT" and type(config_from_dict(bare)).__name__ == "BertConfig"  # today's default
    other = {**HUB_CONFIG, "auto_map": {"AutoConfig": "configuration_bert.JinaBertConfig"}}   # jina-embeddings-v2's
    assert family_name(other) == "BERT"
    assert family_name({**HUB_CONFIG, "auto_map": "not a mapping"}) == "BERT"


def test_auto_map_as_a_fine_tune_saves_it_and_model_type_first():
    prefixed = {**HUB_CONFIG, "auto_map": {"AutoConfig": f"jinaai/jina-reranker-v2-base-multilingual--{JINA_AUTO_CONFIG}"}}
    assert family_name(prefixed) == "jina-reranker-v2 XLM-RoBERTa"
    # another repository's class of the same name (jina-embeddings-v3's rotary XLM-R) is not this code
    v3 = {**HUB_CONFIG, "auto_map": {"AutoConfig": f"jinaai/xlm-roberta-flash-implementation--{JINA_AUTO_CONFIG}"}}
    assert family_name(v3) == "BERT"
    # auto_map is consulted only when there is no model_type: a model_type always decides
    assert family_name({**HUB_CONFIG, "model_type": "xlm-roberta"}) == "XLM-RoBERTa"
    with pytest.raises(ConfigError, match="model_type is ''"):
        config_from_dict({**HUB_CONFIG, "model_type": ""})


def test_the_registry_maps_a_jina_config_back_to_its_family():
    config = JinaConfig()   # built, not read: model_type "" and no auto_map; its class says which family
    assert config.model_type == "" and family_of(config).name == "jina-reranker-v2 XLM-RoBERTa"
    assert find_family(None, JINA_AUTO_CONFIG) is family_of(config)
    assert find_family(None, None) is None and find_family("", "configuration_x.Unknown") is None
    for name in (BIN, SAFETENSORS):
        assert family_of(load_config(GOLDENS / name)) is family_of(config)


# --- config -------------------------------------------------------------------------------------

def test_the_hub_config_and_xlm_roberta_flash_config_defaults():
    c = config_from_dict(HUB_CONFIG)
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.head_dim) == (250002, 768, 12, 12, 64)
    assert (c.layer_norm_eps, c.type_vocab_size, c.pad_token_id, c.num_labels, c.max_tokens) == (1e-5, 1, 1, 1, 1024)
    assert c.use_flash_attn is True and c.hidden_act == "gelu"
    # XLMRobertaFlashConfig's defaults, not RoBERTa's (vocab_size 50265) nor BERT's (pad_token_id 0)
    d = config_from_dict({"auto_map": {"AutoConfig": JINA_AUTO_CONFIG}})
    assert (d.vocab_size, d.layer_norm_eps, d.type_vocab_size, d.pad_token_id, d.max_position_embeddings,
            d.max_tokens, d.hidden_act) == (30522, 1e-12, 2, 1, 512, 510, "gelu")
    # the fixture that leaves layer_norm_eps, type_vocab_size and hidden_act out gets them, as its reference did
    f = load_config(GOLDENS / SAFETENSORS)
    raw = json.loads((GOLDENS / SAFETENSORS / "config.json").read_text(encoding="utf-8"))
    assert not {"layer_norm_eps", "type_vocab_size", "hidden_act"} & set(raw)
    assert (f.layer_norm_eps, f.type_vocab_size, f.hidden_act) == (1e-12, 2, "gelu")


def test_pad_vocab_size_multiple_rounds_the_embedding_rows_up():
    assert config_from_dict({**HUB_CONFIG, "pad_vocab_size_multiple": 8}).vocab_size == 250008
    assert config_from_dict({**HUB_CONFIG, "pad_vocab_size_multiple": 2}).vocab_size == 250002


@pytest.mark.parametrize("field, value", [("use_flash_attn", False), ("use_flash_attn", True), ("fused_bias_fc", True),
                                          ("fused_dropout_add_ln", True), ("lora_adaptations", ["a", "b"]),
                                          ("emb_pooler", "cls"), ("torch_dtype", "float16")])
def test_kernel_only_and_inert_options_are_accepted_with_the_same_numbers(copy, field, value):
    directory = copy(BIN)
    edit_config(directory, **{field: value})
    meta, arrays, _ = golden(BIN)
    scores = CrossEncoder(directory, ops="numpy").predict([tuple(p) for p in meta["pairs"]])
    np.testing.assert_allclose(scores, arrays["logits"][:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new': jina's XLM-RoBERTa code runs it as GELU's tanh"),
    ("hidden_act", "gelu_fast", "unsupported hidden_act 'gelu_fast'"),
    ("hidden_act", "gelu_pytorch_tanh", "unsupported hidden_act 'gelu_pytorch_tanh'"),
    ("hidden_act", "relu", "unsupported hidden_act 'relu'; minibert implements 'gelu'"),
    ("fused_mlp", True, "fused_mlp is True: .*FusedMLP"),
    ("last_layer_subset", True, "last_layer_subset is True: .*cross-attention"),
    ("position_embedding_type", "rotary", "unsupported position_embedding_type 'rotary'"),
    ("pad_token_id", None, "'pad_token_id' is null; jina's XLM-RoBERTa numbers its positions"),
    ("pad_vocab_size_multiple", 0, "'pad_vocab_size_multiple' must be a positive integer"),
    ("type_vocab_size", 0, "'type_vocab_size' must be a positive integer"),
    ("max_position_embeddings", 2, "leaves no position for a token"),
    ("is_decoder", True, "is_decoder is true"),
])
def test_options_that_change_the_maths_are_refused_naming_field_and_file(tmp_path, field, value, message):
    (tmp_path / "config.json").write_text(json.dumps({**HUB_CONFIG, field: value}), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as excinfo:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(excinfo.value)


def test_without_tokenizer_class_the_tokenizer_is_xlm_robertas(copy):
    directory = copy(BIN)
    path = directory / "tokenizer_config.json"
    tc = json.loads(path.read_text(encoding="utf-8"))
    assert tc.pop("tokenizer_class") == "XLMRobertaTokenizer"
    path.write_text(json.dumps(tc), encoding="utf-8")
    meta, arrays, _ = golden(BIN)
    encoded = CrossEncoder(directory).tokenizer.encode_pairs([tuple(p) for p in meta["pairs"]])
    assert np.array_equal(np.concatenate([ids for ids, _ in encoded]), arrays["input_ids"])


# --- checkpoints --------------------------------------------------------------------------------

def test_bf16_bin_and_safetensors_load_to_the_same_numbers(copy):
    """The bfloat16 pytorch_model.bin, read without torch, and the same tensors as bfloat16 and as float32
    model.safetensors: the same parameters bit for bit (bfloat16 widens exactly), the same logits."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    bf16, f32 = copy(BIN, "bf16-safetensors"), copy(BIN, "f32-safetensors")
    state = torch.load(bf16 / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    for directory, dtype in ((bf16, torch.bfloat16), (f32, torch.float32)):
        (directory / "pytorch_model.bin").unlink()
        save_file({k: v.detach().to(dtype).contiguous() for k, v in state.items()}, directory / "model.safetensors",
                  metadata={"format": "pt"})
    from_bin = read_checkpoint(find_checkpoint(GOLDENS / BIN))
    assert find_checkpoint(GOLDENS / BIN).name == "pytorch_model.bin"
    for name, tensor in state.items():
        assert np.array_equal(from_bin[name], tensor.detach().float().numpy()), name   # torch-free == torch.load
        assert not (np.asarray(from_bin[name]).view(np.uint32) & 0xFFFF).any(), name   # bfloat16 values, exactly
    _, arrays, batch = golden(BIN)
    models = [CrossEncoder(d, ops="numpy") for d in (GOLDENS / BIN, bf16, f32)]
    logits = [forward(m.params, m.config, batch) for m in models]
    assert np.array_equal(logits[0], logits[1]) and np.array_equal(logits[0], logits[2])
    np.testing.assert_allclose(logits[0], arrays["logits"], atol=1e-5, rtol=1e-5)


def test_the_tensor_names_are_jinas(copy, tmp_path):
    """The fixture's tensors under XLM-RoBERTa's names, with jina's config.json: every jina name is missing."""
    directory = copy(SAFETENSORS)
    tensors = xlm_roberta_names(read_checkpoint(directory / "model.safetensors"))
    write_safetensors(directory / "model.safetensors", tensors, {"format": "pt"})
    with pytest.raises(ModelFormatError) as excinfo:
        CrossEncoder(directory)
    message = str(excinfo.value)
    for name in ("roberta.emb_ln.weight", "roberta.encoder.layers.0.mixer.Wqkv.weight",
                 "roberta.encoder.layers.2.mlp.fc2.bias", "roberta.encoder.layers.1.norm2.weight"):
        assert f"missing tensor {name}" in message
    assert "unexpected tensor roberta.encoder.layer.0.attention.self.query.weight" in message


# --- the same weights through minibert's XLM-RoBERTa path ---------------------------------------

# jina name -> XLM-RoBERTa name, as vLLM's jina_to_vllm_mapper renames them (Wqkv split into query, key, value)
RENAMES = {"mixer.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
           "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "norm2": "output.LayerNorm"}


def xlm_roberta_names(tensors: dict) -> dict:
    out = {}
    for key, value in tensors.items():
        layer = re.fullmatch(r"roberta\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        value = np.asarray(value, np.float32)
        if key.startswith("roberta.emb_ln."):
            out[key.replace("emb_ln", "embeddings.LayerNorm")] = value
        elif layer and layer[2] == "mixer.Wqkv":
            for part, chunk in zip(("query", "key", "value"), np.split(value, 3)):
                out[f"roberta.encoder.layer.{layer[1]}.attention.self.{part}.{layer[3]}"] = chunk
        elif layer:
            out[f"roberta.encoder.layer.{layer[1]}.{RENAMES[layer[2]]}.{layer[3]}"] = value
        else:
            out[key] = value
    assert len(out) == len(tensors) + 2 * sum(".mixer.Wqkv." in k for k in tensors)   # each Wqkv: three
    return out


def as_xlm_roberta(name: str, tmp_path: Path) -> Path:
    """A copy of the fixture as vLLM serves this model: its weights under XLM-RoBERTa's names (float32
    model.safetensors), model_type xlm-roberta, the same tokenizer files."""
    c = load_config(GOLDENS / name)
    directory = tmp_path / "as-xlm-roberta"
    directory.mkdir()
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(GOLDENS / name / file, directory / file)
    config = {"model_type": "xlm-roberta", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
              "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.layer_norm_eps, "pad_token_id": c.pad_token_id,
              "hidden_act": "gelu", "id2label": {str(k): v for k, v in c.id2label.items()}}
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tensors = read_checkpoint(find_checkpoint(GOLDENS / name))
    write_safetensors(directory / "model.safetensors", xlm_roberta_names(tensors), {"format": "pt"})
    return directory


@pytest.mark.parametrize("name", [BIN, SAFETENSORS])
def test_the_weights_renamed_run_as_xlm_roberta_give_the_goldens(tmp_path, name):
    """As vLLM serves this model: its weights under XLM-RoBERTa's names, model_type xlm-roberta. Every stage within
    the goldens' tolerance of the reference, and of minibert's jina path (the embeddings' add order aside, the same
    maths: equal bit for bit where bfloat16 weights make both orders exact)."""
    jina = CrossEncoder(GOLDENS / name, ops="numpy")
    c = jina.config
    xlmr = CrossEncoder(as_xlm_roberta(name, tmp_path), ops="numpy")
    assert family_of(xlmr.config).name == "XLM-RoBERTa"
    meta, arrays, batch = golden(name)
    _, ours = forward(jina.params, c, batch, jina.ops, return_stages=True)
    _, theirs = forward(xlmr.params, xlmr.config, batch, xlmr.ops, return_stages=True)
    assert list(theirs) == meta["stages"]
    vs_golden = {s: float(np.abs(theirs[s] - arrays[s]).max()) for s in meta["stages"]}
    vs_jina = {s: float(np.abs(theirs[s] - ours[s]).max()) for s in meta["stages"]}
    print(f"{name}: minibert's XLM-R path on the renamed weights: vs the reference {max(vs_golden.values()):.2g}, "
          f"vs minibert's jina path {max(vs_jina.values()):.2g}")
    for s in meta["stages"]:
        np.testing.assert_allclose(theirs[s], arrays[s], atol=1e-5, rtol=1e-5, err_msg=s)
    if name == BIN:
        assert max(vs_jina.values()) == 0.0, vs_jina


@pytest.mark.parametrize("name", [BIN, SAFETENSORS])
def test_explain_shows_the_attention_of_the_same_maths_in_transformers(tmp_path, name):
    """The reference has no output_attentions (and runs elsewhere); transformers' XLM-RoBERTa on the renamed weights
    computes the reference's stages (golden.json's cross-check, within 1e-5), so its eager attention is what explain
    must show: the first token's weights in every layer and head, and the score."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    meta, _, _ = golden(name)
    assert max(meta["checks"]["transformers_xlm_roberta_renamed_vs_golden_max_abs_diff"].values()) <= 1e-5
    ce = CrossEncoder(GOLDENS / name)
    e = explain(ce, "how do I define a function?", "A function definition defines a user-defined function object.")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        as_xlm_roberta(name, tmp_path), attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(e.input_ids[None]), output_attentions=True)
    want = np.stack([a[0, :, 0, :].numpy() for a in out.attentions])    # [layers, NH, T]: the first query's row
    assert e.attention.shape == want.shape
    np.testing.assert_allclose(e.attention, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(e.logits, out.logits[0].numpy(), atol=1e-5, rtol=1e-5)
