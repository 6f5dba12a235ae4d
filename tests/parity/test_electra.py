"""ELECTRA's live parity: the battery (battery.py) on two tiny random ElectraForSequenceClassification
models with BERT's WordPiece files: embedding_size != hidden_size (embeddings_project runs), and
embedding_size == hidden_size (no projection; the checkpoint has no such tensor)."""

from parity.battery import ParityBattery
from parity.harness import Refused, Spec, Variant


def projects_when_sizes_differ(live):
    config = live.model.config
    assert hasattr(live.model.electra, "embeddings_project") == (config.embedding_size != config.hidden_size)


SPEC = Spec(
    model_type="electra", model_class="ElectraForSequenceClassification", base_class="ElectraModel",
    variants=(
        # uncased tokenizer.json, tokenizer_class ElectraTokenizer (transformers 5 loads BertTokenizer for it)
        Variant("e24-h40", seed=2401, tokenizer="electra-e24", max_length=128,
                tokenizer_config={"model_max_length": 128},
                config={"embedding_size": 24, "hidden_size": 40, "num_attention_heads": 5, "intermediate_size": 61,
                        "num_hidden_layers": 3, "max_position_embeddings": 128, "layer_norm_eps": 1e-12,
                        "num_labels": 1},
                expect=projects_when_sizes_differ),
        # cased vocab.txt alone, no tokenizer_class: AutoTokenizer goes by model_type
        Variant("e32-h32", seed=3201, tokenizer="electra-h32", max_length=128,
                config={"embedding_size": 32, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 50,
                        "num_hidden_layers": 2, "max_position_embeddings": 128, "layer_norm_eps": 1e-7,
                        "num_labels": 2},
                expect=projects_when_sizes_differ),
    ),
    refused=(
        Refused("hidden_act", "gelu_new", "unsupported hidden_act 'gelu_new'"),
        Refused("position_embedding_type", "relative_key_query",
                "unsupported position_embedding_type 'relative_key_query'"),
    ),
)


class TestElectra(ParityBattery):
    spec = SPEC
