"""The RoBERTa family's live parity: the battery (battery.py) on tiny random RobertaForSequenceClassification,
XLMRobertaForSequenceClassification and CamembertForSequenceClassification models.

XLM-RoBERTa and CamemBERT are RoBERTa's model (transformers' classes are RoBERTa's, renamed) with
another tokenizer: their specs are RoBERTa's with the classes, the model_type and the tokenizer files
replaced (a byte-level BPE for RoBERTa, SentencePiece Unigram files read by XLMRobertaTokenizer and by
CamembertTokenizer). Then what is RoBERTa's own: position ids from padding_idx + 1, max_tokens, the
config defaults, the sentence-transformers layouts of XLM-R sentence encoders, and the errors of the
checkpoint and tokenizer files.
"""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

from minibert import CrossEncoder, ModelFormatError, SentenceEncoder
from minibert.models import config_from_dict
from minibert.models.batch import padding_idx_positions
from parity.battery import ParityBattery
from parity.harness import (
    PAIRS,
    QUERIES,
    SENTENCES,
    Refused,
    Spec,
    Variant,
    assert_close,
    copy_with_config,
    edit_json,
    torch_threads,
    write_sentence_transformers_layout,
)

CONFIG = {"hidden_size": 40, "num_attention_heads": 4, "intermediate_size": 52, "num_hidden_layers": 3,
          "max_position_embeddings": 202, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "num_labels": 1}
MAX_LENGTH = 200  # positions 2 .. 201: pad_token_id 1 + 1 onwards


def pad_ids_inside_pairs(live):
    """"<pad>" written in a text is the pad id, which RoBERTa's position ids skip."""
    pad = live.model.config.pad_token_id
    assert sum(ids.count(pad) for ids in live.reference.ids) >= len(QUERIES), "no pad id inside the pairs"


ROBERTA = Spec(
    model_type="roberta", model_class="RobertaForSequenceClassification", base_class="RobertaModel",
    # model_max_length as roberta-base has it (512 for 514 positions): what sentence-transformers reads
    variants=(Variant("bpe", seed=4321, tokenizer="roberta-bpe", max_length=MAX_LENGTH, token_types=False,
                      tokenizer_config={"model_max_length": MAX_LENGTH}, config=CONFIG, expect=pad_ids_inside_pairs),),
    refused=(
        Refused("position_embedding_type", "relative_key", "unsupported position_embedding_type 'relative_key'"),
        Refused("hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new'"),
        Refused("pad_token_id", None, "'pad_token_id' is null"),
        Refused("max_position_embeddings", 2, "leaves no position for a token"),
        Refused("model_type", "roberta-prelayernorm", "model_type is 'roberta-prelayernorm'"),
    ),
)
XLM_ROBERTA = replace(
    ROBERTA, model_type="xlm-roberta", model_class="XLMRobertaForSequenceClassification", base_class="XLMRobertaModel",
    variants=(replace(ROBERTA.variants[0], name="unigram", seed=4322, tokenizer="xlmr-unigram"),))
# CamemBERT: RoBERTa's model with its own SentencePiece files (its specials, and <unk> at their index)
CAMEMBERT = replace(
    ROBERTA, model_type="camembert", model_class="CamembertForSequenceClassification", base_class="CamembertModel",
    variants=(replace(ROBERTA.variants[0], name="unigram", seed=4323, tokenizer="camembert-tok"),))


class TestRoberta(ParityBattery):
    spec = ROBERTA


class TestXlmRoberta(ParityBattery):
    spec = XLM_ROBERTA


class TestCamembert(ParityBattery):
    spec = CAMEMBERT


# ---------------------------------------------------------------------------------------------
# position ids, max_tokens, defaults


def test_position_ids_follow_transformers_per_pair():
    """create_position_ids_from_input_ids on each pair alone == position_ids on the packed batch."""
    rng = np.random.default_rng(0)
    pairs = [rng.integers(0, 5, size=n) for n in (1, 7, 3, 12, 5)]   # pad id 1 appears anywhere, also first
    ids = np.concatenate(pairs)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pairs])])
    got = padding_idx_positions(ids, offsets, 1)
    want = np.concatenate([RobertaEmbeddings.create_position_ids_from_input_ids(
        torch.tensor(p)[None], padding_idx=1)[0].numpy() for p in pairs])
    assert got.tolist() == want.tolist()
    assert padding_idx_positions(np.zeros(0, np.int64), np.zeros(1, np.int64), 1).shape == (0,)


@pytest.mark.parametrize("positions, pad, tokens", [(514, 1, 512), (8194, 1, 8192), (66, 3, 62)])
def test_max_tokens(positions, pad, tokens):
    config = config_from_dict({"model_type": "xlm-roberta", "max_position_embeddings": positions,
                               "pad_token_id": pad, "vocab_size": 10})
    assert config.max_tokens == tokens


def test_defaults_follow_transformers():
    for model_type, vocab in (("roberta", 50265), ("xlm-roberta", 30522), ("camembert", 30522)):
        config = config_from_dict({"model_type": model_type})
        want = transformers.AutoConfig.for_model(model_type)
        assert (config.vocab_size, config.pad_token_id, config.type_vocab_size, config.layer_norm_eps) == \
            (want.vocab_size, want.pad_token_id, want.type_vocab_size, want.layer_norm_eps) == (vocab, 1, 2, 1e-12)


# ---------------------------------------------------------------------------------------------
# XLM-R sentence encoders (bge-m3's kind: a bare XLMRobertaModel with its pooler)


def test_bare_checkpoint_has_a_pooler(live_models):
    with safe_open(str(live_models(XLM_ROBERTA, "unigram").bare_directory / "model.safetensors"), "np") as f:
        assert "pooler.dense.weight" in set(f.keys())


@pytest.mark.parametrize("config_file, lower", [("sentence_bert_config.json", False),
                                                ("sentence_xlm-roberta_config.json", True)])
def test_sentence_encoder_layouts(live_models, tmp_path, config_file, lower):
    """Mean pooling over a bare XLMRobertaModel laid out as sentence-transformers saves it; do_lower_case
    puts Lowercase before the Precompiled normalizer."""
    st = pytest.importorskip("sentence_transformers")
    where = tmp_path / "st"
    shutil.copytree(live_models(XLM_ROBERTA, "unigram").bare_directory, where)
    write_sentence_transformers_layout(where, CONFIG["hidden_size"], config_file, max_seq_length=128,
                                       do_lower_case=lower)
    reference = st.SentenceTransformer(str(where), device="cpu")
    with torch_threads(reference):
        want = reference.encode(SENTENCES, convert_to_numpy=True)
    encoder = SentenceEncoder(where)
    assert encoder.max_seq_length == 128
    assert_close(encoder.encode(SENTENCES), want, f"SentenceEncoder on a bare XLMRobertaModel ({config_file})")


# ---------------------------------------------------------------------------------------------
# errors of the checkpoint and tokenizer files


def test_missing_and_misshaped_tensors_are_named(live_models, tmp_path):
    where = tmp_path / "m"
    shutil.copytree(live_models(ROBERTA, "bpe").directory, where)
    tensors = load_file(str(where / "model.safetensors"))
    del tensors["classifier.out_proj.bias"]
    positions = "roberta.embeddings.position_embeddings.weight"
    tensors[positions] = tensors[positions][:-1]
    H, P = CONFIG["hidden_size"], CONFIG["max_position_embeddings"]
    tensors["roberta.pooler.dense.weight"] = np.zeros((H, H), np.float32)
    save_file(tensors, str(where / "model.safetensors"))
    with pytest.raises(ModelFormatError) as info:
        CrossEncoder(where)
    message = str(info.value)
    assert "missing tensor classifier.out_proj.bias, expected shape [1]" in message
    assert f"tensor {positions}: expected shape [{P}, {H}], found [{P - 1}, {H}]" in message
    assert "unexpected tensor roberta.pooler.dense.weight" in message


def test_sentencepiece_only_directory_says_how_to_make_tokenizer_json(live_models, tmp_path):
    where = copy_with_config(live_models(ROBERTA, "bpe").directory, tmp_path / "m", {"model_type": "xlm-roberta"})
    (where / "tokenizer.json").unlink()
    edit_json(where / "tokenizer_config.json", {"tokenizer_class": "XLMRobertaTokenizer"})
    (where / "sentencepiece.bpe.model").write_bytes(b"\0")
    with pytest.raises(ModelFormatError, match="sentencepiece.bpe.model.*save_pretrained"):
        CrossEncoder(where)


def test_wrong_tokenizer_model_kind_is_named(live_models, tmp_path):
    where = copy_with_config(live_models(ROBERTA, "bpe").directory, tmp_path / "m", {})
    edit_json(where / "tokenizer_config.json", {"tokenizer_class": "XLMRobertaTokenizerFast"})
    with pytest.raises(ModelFormatError, match="tokenizer.json: a XLMRobertaTokenizer needs a Unigram model"):
        CrossEncoder(where)


def test_vocab_json_and_merges_txt_directory(live_models, tmp_path):
    """The older RoBERTa directory: vocab.json + merges.txt, no tokenizer.json: the same ids as transformers."""
    where = copy_with_config(live_models(ROBERTA, "bpe").directory, tmp_path / "m", {})
    raw = json.loads((where / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (where / "vocab.json").write_text(json.dumps(raw["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["merges"]]
    (where / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (where / "tokenizer.json").unlink()
    want = transformers.AutoTokenizer.from_pretrained(where)(
        [q for q, _ in PAIRS], [p for _, p in PAIRS], truncation="longest_first", max_length=MAX_LENGTH)["input_ids"]
    got = [ids.tolist() for ids, _ in CrossEncoder(where, max_length=MAX_LENGTH).tokenizer.encode_pairs(PAIRS)]
    assert got == want
