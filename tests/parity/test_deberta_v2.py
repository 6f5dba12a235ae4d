"""DeBERTa-v2 / v3's live parity: the battery (battery.py) on two tiny random DebertaV2ForSequenceClassification
models, so that both code paths of the disentangled attention run on pairs of up to 96 tokens (far beyond
the log buckets' exact range): the v3 shape of the Hub's rerankers, scaled down, and a v2-xlarge shape with
everything v3 lacks. Then DeBERTa's own: the log buckets against transformers' function over every
distance a model can see, and DebertaV2Tokenizer's options against AutoTokenizer."""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

from minibert.models.deberta_v2 import log_bucket
from minibert.runtime.load import load_config, load_tokenizer
from parity.battery import ParityBattery
from parity.harness import GOLDENS, PAIRS, Refused, Scale, Spec, Variant

MAX_LENGTH = 96
REL_EMBEDDINGS = {"deberta.encoder.rel_embeddings.weight": Scale(1.0)}  # the position terms weigh as the content's


def short_pairs_too(live):
    assert min(map(len, live.reference.ids)) < 32, "no pair within the buckets' exact range"


SPEC = Spec(
    model_type="deberta-v2", model_class="DebertaV2ForSequenceClassification", base_class="DebertaV2Model",
    variants=(
        # log buckets, shared keys, p2c + c2p, a norm on the relative embeddings, no absolute positions;
        # tokenizer files as transformers 4.3x saved deberta-v3's, cased
        Variant("v3", seed=7, tokenizer="deberta-v3", max_length=MAX_LENGTH, scales=REL_EMBEDDINGS,
                tokenizer_config={"model_max_length": MAX_LENGTH}, expect=short_pairs_too,
                config={"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 40, "num_hidden_layers": 2,
                        "max_position_embeddings": 128, "type_vocab_size": 0, "relative_attention": True,
                        "position_buckets": 32, "max_relative_positions": -1, "share_att_key": True,
                        "pos_att_type": "p2c|c2p", "norm_rel_ebd": "layer_norm", "position_biased_input": False,
                        "num_labels": 1}),
        # no buckets (the table's ends clamp), c2p alone, separate position projections, absolute
        # positions, the ConvLayer, embed_proj; older tokenizer files, do_lower_case and split_by_punct
        Variant("v2", seed=8, tokenizer="deberta-v2", max_length=MAX_LENGTH, scales=REL_EMBEDDINGS,
                tokenizer_config={"model_max_length": MAX_LENGTH}, expect=short_pairs_too,
                config={"hidden_size": 30, "num_attention_heads": 5, "intermediate_size": 37, "num_hidden_layers": 2,
                        "max_position_embeddings": 128, "type_vocab_size": 0, "relative_attention": True,
                        "position_buckets": -1, "max_relative_positions": 40, "share_att_key": False,
                        "pos_att_type": ["c2p"], "norm_rel_ebd": "none", "position_biased_input": True,
                        "conv_kernel_size": 5, "conv_act": "tanh", "embedding_size": 26, "pooler_hidden_act": "tanh",
                        "num_labels": 1}),
    ),
    refused=(
        Refused("hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new'"),
        Refused("pos_att_type", "p2p", "unsupported pos_att_type ['p2p']"),
        Refused("norm_rel_ebd", "batch_norm", "unsupported norm_rel_ebd 'batch_norm'"),
    ),
)


class TestDebertaV2(ParityBattery):
    spec = SPEC


V3 = SPEC.variant("v3").config


@pytest.mark.parametrize("bucket_size, max_position, longest", [
    (256, 512, 2048),   # deberta-v3-*, mdeberta-v3, mxbai-rerank-*-v1: position_buckets 256, 512 positions
    (16, 96, 96),       # the deberta-v3 golden
    (V3["position_buckets"], V3["max_position_embeddings"], V3["max_position_embeddings"]),   # the v3 variant
])
def test_log_buckets_match_transformers(bucket_size, max_position, longest):
    distance = np.arange(-longest + 1, longest)
    want = make_log_bucket_position(torch.tensor(distance), bucket_size, max_position).long().numpy()
    got = log_bucket(distance, bucket_size, max_position)
    bad = np.flatnonzero(got != want)
    assert not bad.size, f"buckets differ at distances {distance[bad][:10]}: {got[bad][:10]} vs {want[bad][:10]}"
    assert len(np.unique(want)) < len(distance), "no distance was bucketed: the test does not reach the log range"


TOKENIZER_VARIANTS = {
    "no-prefix-space": {"add_prefix_space": False},
    "lower-punct": {"do_lower_case": True, "split_by_punct": True},
    # [MASK] matched on the normalized text: the space before it then stays a piece of its own
    "normalized-mask": {"do_lower_case": True, "added_tokens_decoder_mask": {"normalized": True}},
    "no-added-tokens-decoder": {"drop_added_tokens_decoder": True, "do_lower_case": True},
}


@pytest.mark.parametrize("variant", sorted(TOKENIZER_VARIANTS))
def test_tokenizer_variants_match_transformers(tmp_path, variant):
    """DebertaV2Tokenizer's options, ids and type ids against AutoTokenizer (no model run)."""
    golden = GOLDENS / "deberta-v3"
    options = dict(TOKENIZER_VARIANTS[variant])
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(golden / name, tmp_path / name)
    tc = json.loads((golden / "tokenizer_config.json").read_text(encoding="utf-8"))
    if options.pop("drop_added_tokens_decoder", False):
        del tc["added_tokens_decoder"]
    mask_flags = options.pop("added_tokens_decoder_mask", None)
    if mask_flags:
        entry = next(e for e in tc["added_tokens_decoder"].values() if e["content"] == "[MASK]")
        entry.update(mask_flags)
    tc.update(options)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")

    pairs = PAIRS[:6] + [
        ("Is  [MASK]  here?", "x [MASK]y and[SEP]z"), ("Hello, World! It's 3.14.", "UPPER;lower:Mixed"),
        ("  leading", "trailing  \n"), ("", "only a passage"), ("caf\u00e9 e\u0301", "\ufb01 \uff21"),
    ]
    want = transformers.AutoTokenizer.from_pretrained(tmp_path)(
        [q for q, _ in pairs], [p for _, p in pairs], truncation="longest_first", max_length=48)
    got = load_tokenizer(tmp_path, load_config(tmp_path), 48).encode_pairs(pairs)
    for i, (ids, types) in enumerate(got):
        assert ids.tolist() == want["input_ids"][i], f"{variant} pair {i} {pairs[i]!r}: ids differ"
        assert types.tolist() == want["token_type_ids"][i], f"{variant} pair {i}: type ids differ"
