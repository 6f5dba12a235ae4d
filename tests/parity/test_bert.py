"""BERT's live parity: the battery (battery.py) on a tiny random BertForSequenceClassification (cased, three
labels), and on the real all-MiniLM-L6-v2 encoder (uncased) with a classifier drawn from a fixed seed (at
std 0.5, so that its scores spread by several units and rankings mean something).

all-MiniLM-L6-v2 comes from `python tools/get_minilm.py` (into weights/): a missing checkpoint FAILS these
tests, it does not skip them. Its tokenizer.json pads and truncates at 128: minibert must not inherit that
(the battery's token ids, at max_length 512)."""

import json

from parity.battery import ParityBattery
from parity.harness import QUERIES, REPO, Refused, Spec, Variant

MINILM = REPO / "weights" / "all-MiniLM-L6-v2"


def real_pairs_are_long(live):
    """Many pairs over 128 tokens; the tokenizer.json setting that minibert must ignore is there."""
    assert sum(len(ids) > 128 for ids in live.reference.ids) >= 4 * len(QUERIES)
    tokenizer_json = json.loads((live.directory / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer_json["truncation"]["max_length"] == tokenizer_json["padding"]["strategy"]["Fixed"] == 128


SPEC = Spec(
    model_type="bert", model_class="BertForSequenceClassification", base_class="BertModel",
    variants=(
        # cased vocab.txt alone; model_max_length 512 is capped by the 96 positions
        Variant("cased-3-labels", seed=102, tokenizer="tiny-l3", max_length=96,
                config={"hidden_size": 30, "num_attention_heads": 3, "intermediate_size": 50, "num_hidden_layers": 2,
                        "max_position_embeddings": 96, "layer_norm_eps": 1e-7, "num_labels": 3,
                        "id2label": {0: "contradiction", 1: "entailment", 2: "neutral"}}),
        Variant("all-MiniLM-L6-v2", seed=1234, weights=MINILM, tokenizer=MINILM, max_length=512,
                config={"num_labels": 1}, probe_queries=1, expect=real_pairs_are_long),
    ),
    refused=(
        Refused("hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new'"),
        Refused("position_embedding_type", "relative_key", "unsupported position_embedding_type 'relative_key'"),
    ),
)


class TestBert(ParityBattery):
    spec = SPEC
