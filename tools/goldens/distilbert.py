"""DistilBERT goldens: DistilBertForSequenceClassification, in ELECTRA's kind of golden (electra.py):
BERT's WordPiece files with the class named, the same golden.json, the same first-layer check.

- distilbert-gelu: dim 36, 3 heads, gelu, one label, uncased, tokenizer.json + tokenizer_class
  "DistilBertTokenizer" (which makes no token type ids), model_max_length 48.
- distilbert-relu-sin: dim 30, 5 heads, a ReLU feed-forward, sinusoidal_pos_embds, two labels, cased,
  vocab.txt only, no tokenizer_class (BertTokenizer: type ids made, never read), max_length 40.
The sinusoidal position table is stored as transformers builds it; being deterministic already, it is
the one parameter not re-drawn. `pooled` is what the classifier reads: ReLU(pre_classifier(first token)).
"""

from __future__ import annotations

import bert
import core
import electra
from transformers import DistilBertConfig

SIN_TABLE = "distilbert.embeddings.position_embeddings.weight"


class DistilBert(electra.Electra):
    head = core.Head("pooled", "classifier", reads=True)
    logits_layer = "classifier"
    first_layer = "distilbert.transformer.layer.0"
    config_class = DistilBertConfig
    fixtures = (
        bert.WordPieceFixture(
            name="distilbert-gelu", seed=electra.SEED + 3, lowercase=True, tokenizer_json=True, model_max_length=48,
            tokenizer_class="DistilBertTokenizer",
            config=dict(dim=36, n_heads=3, hidden_dim=53, n_layers=2, max_position_embeddings=64,
                        activation="gelu", sinusoidal_pos_embds=False, num_labels=1),
            pairs=core.RANKING_PAIRS, rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(5, 6, 7, 12, 20),
        ),
        bert.WordPieceFixture(
            name="distilbert-relu-sin", seed=electra.SEED + 4, lowercase=False, tokenizer_json=False,
            model_max_length=512, max_length_arg=40, tokenizer_class=None,
            config=dict(dim=30, n_heads=5, hidden_dim=41, n_layers=3, max_position_embeddings=64,
                        activation="relu", sinusoidal_pos_embds=True, num_labels=2,
                        id2label={0: "irrelevant", 1: "relevant"}, label2id={"irrelevant": 0, "relevant": 1}),
            pairs=core.LABEL_PAIRS, tokenizer_case_lengths=(None, 9, 17),
        ),
    )

    def scale_exceptions(self, fx: bert.WordPieceFixture) -> dict:
        return {SIN_TABLE: None} if fx.config["sinusoidal_pos_embds"] else {}


FAMILY = DistilBert()
