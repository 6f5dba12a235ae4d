"""ELECTRA goldens: ElectraForSequenceClassification with BERT's WordPiece files (bert.py) and pairs.

- electra-e24: embedding_size 24 != hidden_size 36, so embeddings_project runs; one label, uncased,
  tokenizer.json + tokenizer_class "ElectraTokenizer" (as Hub ELECTRA repos name it; transformers 5
  loads BertTokenizer for it); model_max_length 48 cuts.
- electra-h32: embedding_size == hidden_size 32, no projection; three labels, cased, vocab.txt only,
  no tokenizer_class (AutoTokenizer picks by model_type), layer_norm_eps 1e-7, max_length 40.
`embeddings` is hidden_states[0], after embeddings_project: checked to be what the first layer reads.
`pooled` is what the last linear reads: GELU(classifier.dense(first token)).
"""

from __future__ import annotations

import bert
import core
import torch
from transformers import ElectraConfig

SEED = bert.SEED + 100


class Electra(bert.Bert):
    head = core.Head("pooled", "classifier.out_proj", reads=True)
    logits_layer = "classifier.out_proj"
    first_layer = "electra.encoder.layer.0"
    config_class = ElectraConfig
    fixtures = (
        bert.WordPieceFixture(
            name="electra-e24", seed=SEED + 1, lowercase=True, tokenizer_json=True, model_max_length=48,
            tokenizer_class="ElectraTokenizer",
            config=dict(embedding_size=24, hidden_size=36, num_attention_heads=3, intermediate_size=53,
                        num_hidden_layers=2, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
                        num_labels=1),
            pairs=core.RANKING_PAIRS, rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(5, 6, 7, 12, 20),
        ),
        bert.WordPieceFixture(
            name="electra-h32", seed=SEED + 2, lowercase=False, tokenizer_json=False, model_max_length=512,
            max_length_arg=40, tokenizer_class=None,
            config=dict(embedding_size=32, hidden_size=32, num_attention_heads=4, intermediate_size=45,
                        num_hidden_layers=3, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7,
                        num_labels=3, **bert.THREE_LABELS),
            pairs=core.LABEL_PAIRS, tokenizer_case_lengths=(None, 9, 17),
        ),
    )

    def tokenizer_config(self, fx: bert.WordPieceFixture) -> dict:
        """BERT's, with the class after model_max_length, or none: AutoTokenizer then goes by model_type."""
        tc = {**bert.basic_tokenizer_config(fx), "model_max_length": fx.model_max_length}
        if fx.tokenizer_class is not None:
            tc["tokenizer_class"] = fx.tokenizer_class
        return tc

    def config(self, fx: bert.WordPieceFixture, vocab: dict[str, int]):
        return self.config_class(vocab_size=len(vocab), pad_token_id=0, **fx.config)

    def check(self, run: core.Run) -> None:
        captured = []
        layer = run.model.get_submodule(self.first_layer)
        hook = layer.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
        try:
            with torch.no_grad():
                run.model(**run.enc)
        finally:
            hook.remove()
        assert torch.equal(captured[0], run.hidden[0]), "hidden_states[0] is not the first layer's input"

    def golden_json(self, run: core.Run) -> dict:
        tokenizer = {**self.tokenizer_summary(run.fx, run.out, run.hf_tok), "tokenizer_class": run.fx.tokenizer_class}
        return {**run.provenance(), "family": run.config.model_type, "model_class": type(run.model).__name__,
                "tokenizer_class_loaded": type(run.hf_tok).__name__, **run.checks(), "stages": run.stages,
                "config": core.config_as_given(run.config, run.fx), "tokenizer": tokenizer,
                **run.inputs(), **run.results()}


FAMILY = Electra()
