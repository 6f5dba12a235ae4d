"""BERT goldens: BertForSequenceClassification with a WordPiece tokenizer, whose files ELECTRA's and
DistilBERT's specs reuse.

- tiny-l1: one label, uncased, layer_norm_eps 1e-7; ships tokenizer.json (with padding and truncation
  baked in, as all-MiniLM-L6-v2's: a loader must ignore them), tokenizer_config.json,
  special_tokens_map.json and vocab.txt. No max_length: min(model_max_length 48, 64 positions) cuts.
- tiny-l3: three named labels, cased, default eps 1e-12, only vocab.txt + tokenizer_config.json,
  max_length 40; model_max_length 512 exceeds the 64 positions, so the default must be 64.
- tok-mismatch (token ids only): tokenizer.json says cased and accents kept, tokenizer_config.json
  says do_lower_case; transformers rebuilds the normalizer from tokenizer_config.json, so must minibert.
The sizes are odd and all different (H 32 or 36, 3 or 4 heads, I 37 or 53, vocab 1200), so that a
transposed or mixed-up weight fails on its shape instead of passing by symmetry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import core
from tokenizers import Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing
from transformers import BertConfig

SEED = 20240611
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4
VOCAB_SIZE = 1200
THREE_LABELS = dict(id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                    label2id={"contradiction": 0, "entailment": 1, "neutral": 2})


@dataclass(frozen=True, kw_only=True)
class WordPieceFixture(core.Fixture):
    lowercase: bool
    tokenizer_json: bool                          # False: vocab.txt + tokenizer_config.json only
    tokenizer_json_lowercase: bool | None = None  # a bool: tokenizer.json's normalizer disagrees with tokenizer_config.json
    tokenizer_class: str | None = "BertTokenizer"  # tokenizer_config.json's; None: left out


class Bert(core.Family):
    head = core.Head("pooled", "bert.pooler")  # BertPooler: dense + tanh on [CLS]
    fixtures = (
        WordPieceFixture(
            name="tiny-l1", seed=SEED + 1, lowercase=True, tokenizer_json=True, model_max_length=48,
            config=dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=2,
                        max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7, num_labels=1),
            pairs=core.RANKING_PAIRS, rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(5, 6, 7, 12, 20),
        ),
        WordPieceFixture(
            name="tiny-l3", seed=SEED + 3, lowercase=False, tokenizer_json=False, model_max_length=512,
            max_length_arg=40,
            config=dict(hidden_size=36, num_attention_heads=3, intermediate_size=53, num_hidden_layers=3,
                        max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, num_labels=3,
                        **THREE_LABELS),
            pairs=core.LABEL_PAIRS, tokenizer_case_lengths=(None, 9, 17),
        ),
        WordPieceFixture(
            name="tok-mismatch", seed=SEED + 5, lowercase=True, tokenizer_json=True, tokenizer_json_lowercase=False,
            model_max_length=32, weights=False,
            config=dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=2,
                        max_position_embeddings=64, type_vocab_size=2, num_labels=1),
            pairs=core.RANKING_PAIRS + [("MiXeD CaSe ÀÉÎÕÜ", "UPPER lower Title")], tokenizer_case_lengths=(None, 12),
        ),
    )

    def write_tokenizer(self, fx: WordPieceFixture, out: Path) -> dict[str, int]:
        """The files as Hub BERT repos ship them: vocab.txt, tokenizer_config.json and maybe tokenizer.json."""
        vocab = core.wordpiece_vocab(fx.lowercase, SPECIALS, VOCAB_SIZE)
        (out / "vocab.txt").write_text("".join(tok + "\n" for tok in vocab), encoding="utf-8")
        core.write_json(out / "tokenizer_config.json", self.tokenizer_config(fx))
        ids = {tok: i for i, tok in enumerate(vocab)}
        if fx.tokenizer_json:
            core.write_json(out / "special_tokens_map.json", {t[1:-1].lower() + "_token": t for t in SPECIALS})
            (out / "tokenizer.json").write_text(tokenizer_json(fx, ids), encoding="utf-8")
        return ids

    def tokenizer_config(self, fx: WordPieceFixture) -> dict:
        return {**basic_tokenizer_config(fx), "tokenizer_class": fx.tokenizer_class, "model_max_length": fx.model_max_length}

    def config(self, fx: WordPieceFixture, vocab: dict[str, int]) -> BertConfig:
        return BertConfig(vocab_size=len(vocab), hidden_act="gelu", pad_token_id=0, **fx.config)

    def tokenizer_summary(self, fx: WordPieceFixture, out: Path, hf_tok) -> dict:
        return {"do_lower_case": fx.lowercase, "tokenizer_json_lowercase": fx.tokenizer_json_lowercase,
                "files": core.tokenizer_files(out), "model_max_length": fx.model_max_length}

    def golden_json(self, run: core.Run) -> dict:
        config = core.config_fields(run.config, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                    "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                    "layer_norm_eps", "hidden_act", "num_labels")
        return {**run.provenance(), **run.checks(), "config": {**config, **core.label_names(run.config)},
                "tokenizer": self.tokenizer_summary(run.fx, run.out, run.hf_tok), **run.inputs(), **run.results()}


def basic_tokenizer_config(fx: WordPieceFixture) -> dict:
    return {
        "do_lower_case": fx.lowercase,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
        "do_basic_tokenize": True, "never_split": None,
    }


def tokenizer_json(fx: WordPieceFixture, ids: dict[str, int]) -> str:
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    if fx.tokenizer_json_lowercase is None:
        tok.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                        lowercase=fx.lowercase)
    else:
        tok.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                        lowercase=fx.tokenizer_json_lowercase)
    tok.pre_tokenizer = BertPreTokenizer()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = WordPieceDecoder(prefix="##")
    tok.add_special_tokens(list(SPECIALS))
    # Baked in as all-MiniLM-L6-v2's tokenizer.json has them: a loader that honours these is wrong.
    tok.enable_truncation(max_length=128)
    tok.enable_padding(length=128, pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tok.to_str()


FAMILY = Bert()
