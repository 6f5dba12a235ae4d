"""DeBERTa-v2/v3 goldens: DebertaV2ForSequenceClassification with a Unigram tokenizer read by
DebertaV2Tokenizer; two models, so that both code paths of the disentangled attention are covered.

- deberta-v3: as microsoft/deberta-v3-* and the rerankers fine-tuned from it: log-bucketed relative
  positions (16 buckets, 256 scaled down, on pairs of up to 80 tokens, far past the 8 exact
  distances), share_att_key, pos_att_type ["p2c", "c2p"], a LayerNorm on the relative embeddings, no
  absolute positions, no token types; one label. Tokenizer files as transformers 4.3x saved them
  (added_tokens_decoder, [MASK] added past the pieces), cased; tokenizer.json's normalizer is NFKC
  (standing in for SentencePiece's charsmap), which DebertaV2Tokenizer replaces by its own NFC: the
  ligature and full-width pairs show which one ran.
- deberta-v2: every other path: no buckets, max_relative_positions 24 < the 40-token pairs (the
  table's ends clamp), pos_att_type as v2-xlarge writes it ("c2p|p2c"), separate pos_key_proj /
  pos_query_proj (no share_att_key), absolute positions, no norm on the relative embeddings,
  v2-xlarge's ConvLayer (kernel 3, gelu), and what no released checkpoint has but the code reads:
  embedding_size 20 != hidden_size 30 (embed_proj), type_vocab_size 2; three labels. Older tokenizer
  files (special_tokens_map.json, no added_tokens_decoder), do_lower_case and split_by_punct.
The relative embeddings are drawn at std 1, so that the position terms weigh as much as the content term.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import core
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import Unigram
from tokenizers.processors import TemplateProcessing
from transformers import DebertaV2Config

SEED = 20261201
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]  # ids 0..3, score 0, as in deberta-v3's tokenizer.json
MASK = "[MASK]"                                  # added after the pieces, as deberta-v3's 128000
N_PIECES = 700
MARK = "\u2581"  # SentencePiece's word-start mark
topic = core.topic

# Where DebertaV2Tokenizer's own normalization shows: NFKC would fold the ligatures and the full-width
# letters, its NFC keeps them; runs of spaces, tabs and newlines become one space; special tokens
# inside a text; punctuation glued to words (split_by_punct).
PAIRS_DEBERTA = [
    ("\ufb01le \ufb02ow o\ufb03ce", "\uff21\uff22\uff23 full-width \uff11\uff12\uff13 and \u2460 circled"),
    ("many     spaces\t\ttabs\n\nnewlines", "  leading and trailing spaces   "),
    ("is [MASK] a token?", "[CLS] and [SEP] inside [PAD] a text"),
    ("punctuation,glued;to:words!", "(brackets) [square] {curly} end."),
    ("Ümlaut and e\u0301 combining", "\u00c5ngstr\u00f6m vs A\u030angstro\u0308m"),
]


def long_pairs(n: int) -> list:
    """Pairs longer than the bucket range (and than max_length): log buckets, clamping, truncation."""
    names = ["if", "while", "with", "lambda", "try", "class", "import", "for"]
    return [(topic(names[i % 8], 0, 60 + 40 * i), topic(names[(i + 3) % 8], 100, 500 - 30 * i)) for i in range(n)]


@dataclass(frozen=True, kw_only=True)
class DebertaFixture(core.Fixture):
    lowercase: bool
    split_by_punct: bool
    legacy_files: bool  # True: special_tokens_map.json, no added_tokens_decoder


class DebertaV2(core.Family):
    head = core.Head("pooled", "pooler")  # ContextPooler: dense + GELU on [CLS]
    fixtures = (
        DebertaFixture(
            name="deberta-v3", seed=SEED + 3, lowercase=False, split_by_punct=False, legacy_files=False,
            model_max_length=80,
            config=dict(hidden_size=32, num_attention_heads=4, intermediate_size=45, num_hidden_layers=2,
                        max_position_embeddings=96, type_vocab_size=0, layer_norm_eps=1e-7, num_labels=1,
                        relative_attention=True, position_buckets=16, max_relative_positions=-1, share_att_key=True,
                        pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_biased_input=False,
                        pooler_hidden_act="gelu", hidden_act="gelu"),
            pairs=core.RANKING_PAIRS[:5] + core.RANKING_PAIRS[8:17] + core.RANKING_PAIRS[18:] + PAIRS_DEBERTA
            + long_pairs(3),
            rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 5, 9, 33),
        ),
        DebertaFixture(
            name="deberta-v2", seed=SEED + 2, lowercase=True, split_by_punct=True, legacy_files=True,
            max_length_arg=40,
            config=dict(hidden_size=30, num_attention_heads=3, intermediate_size=41, num_hidden_layers=2,
                        max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-7, num_labels=3,
                        id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                        label2id={"contradiction": 0, "entailment": 1, "neutral": 2},
                        relative_attention=True, position_buckets=-1, max_relative_positions=24, share_att_key=False,
                        pos_att_type="c2p|p2c", norm_rel_ebd="none", position_biased_input=True, embedding_size=20,
                        conv_kernel_size=3, conv_act="gelu", pooler_hidden_act="gelu", hidden_act="gelu"),
            pairs=core.LABEL_PAIRS + PAIRS_DEBERTA + long_pairs(1), tokenizer_case_lengths=(None, 7, 17),
        ),
    )

    def write_tokenizer(self, fx: DebertaFixture, out: Path) -> dict[str, int]:
        """tokenizer.json, tokenizer_config.json and, for the older files, special_tokens_map.json."""
        pieces = core.shared_unigram_pieces(SPECIALS, fx.lowercase, N_PIECES, MARK)
        tok = Tokenizer(Unigram(pieces, unk_id=SPECIALS.index("[UNK]"), byte_fallback=False))
        # As deberta-v3's tokenizer.json: NFKC for the charsmap, and whitespace collapsed.
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " "), normalizers.NFKC()])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=MARK, prepend_scheme="always")
        tok.post_processor = TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
        tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS + [MASK]])
        (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")

        tc = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]",
              "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": MASK, "do_lower_case": fx.lowercase,
              "split_by_punct": fx.split_by_punct, "vocab_type": "spm", "sp_model_kwargs": {},
              "model_max_length": fx.model_max_length, "tokenizer_class": "DebertaV2Tokenizer"}
        if not fx.legacy_files:
            tc["added_tokens_decoder"] = {
                str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for t in SPECIALS + [MASK]}
        core.write_json(out / "tokenizer_config.json", tc)
        if fx.legacy_files:
            core.write_json(out / "special_tokens_map.json", {k: v for k, v in tc.items() if k.endswith("_token")})
        return tok.get_vocab(with_added_tokens=True)

    def config(self, fx: DebertaFixture, vocab: dict[str, int]) -> DebertaV2Config:
        return DebertaV2Config(vocab_size=len(vocab), pad_token_id=0, **fx.config)

    def scale_exceptions(self, fx: DebertaFixture) -> dict:
        return {"deberta.encoder.rel_embeddings.weight": core.Scale(1.0)}

    def check(self, run: core.Run) -> None:
        assert type(run.hf_tok).__name__ == "DebertaV2Tokenizer", type(run.hf_tok)
        assert any("[UNK]" in t for t in run.tokens), f"{run.fx.name}: no pair has an unknown piece"

    def golden_json(self, run: core.Run) -> dict:
        fx = run.fx
        tokenizer = {"class": "DebertaV2Tokenizer", "do_lower_case": fx.lowercase, "split_by_punct": fx.split_by_punct,
                     "files": core.tokenizer_files(run.out), "model_max_length": fx.model_max_length}
        return {**run.provenance(), "family": "DeBERTa-v2", **run.checks(), "stages": run.stages,
                "config": core.config_as_given(run.config, fx), "tokenizer": tokenizer, **run.inputs(), **run.results()}


FAMILY = DebertaV2()
