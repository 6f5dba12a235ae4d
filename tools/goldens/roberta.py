"""RoBERTa-family goldens: RobertaForSequenceClassification with a byte-level BPE, XLM-RoBERTa with a
SentencePiece Unigram, and token-ids-only fixtures for older BPE files and for CamembertTokenizer.

- roberta-bpe: one label; tokenizer.json + tokenizer_config.json (add_prefix_space false, as
  roberta-base). 50 positions = 48 tokens + pad_token_id 1 + 1, model_max_length 512: the default
  max_length must be 48.
- xlmr-unigram: three named labels, max_length 40; tokenizer.json's normalizer is a small Precompiled
  charsmap (full-width letters, a ligature, circled digits, no-break and ideographic spaces) followed
  by a Lowercase that transformers 5 drops (XLMRobertaTokenizer keeps only the charsmap): a loader
  that keeps it is caught.
- xlmr-long: 1026 positions and max_length 1000: one pair cut longest_first, one of 600+ tokens
  untruncated, both past 512.
- roberta-tok-files (token ids only): vocab.json + merges.txt, no tokenizer.json, add_prefix_space true.
- camembert-tok (token ids only): CamembertTokenizer, whose unknown-piece id is <unk>'s index (4
  here; XLMRobertaTokenizer always uses 3), add_prefix_space false (Metaspace "never").
The pairs put "<pad>" inside texts: it is a special token, and RoBERTa's position ids skip pad ids.
`head_dense` is tanh(classifier.dense(first token)), what classifier.out_proj reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import core
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import AutoConfig

SEED = 20261201
PAD_ID = 1
# ids 0..3 as roberta-base and xlm-roberta-base have them; <mask> after them (BPE) or last (Unigram)
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
CAMEMBERT_SPECIALS = ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<s>", "<unk>", "</s>"]
MASK = "<mask>"
CHARSMAP_RULES = (("\uff21", "A"), ("\uff22", "B"), ("\uff23", "C"), ("\uff41", "a"), ("\ufb01", "fi"), ("\u2460", "1"),
                  ("\u2461", "2"), ("\u00a0", " "), ("\u3000", " "), ("A\u030a", "\u00c5"))
topic = core.topic

# In every pair list: what the template, truncation and position ids must get right.
COMMON_PAIRS = [
    ("what is a <pad> token?", "a text with <pad> inside it, and <s> or </s> too"),   # a pad id inside: positions skip it
    ("", "an empty query precedes this passage"),
    ("an empty passage follows", ""),
    ("whitespace only", " \t\n  \u3000 "),
    ("Café naïve résumé?", "Über die Straße: crème brûlée, São Paulo, Ångström."),
    ("日本語のテキスト", "中文文本 and 東京 mixed with 한국어"),
    ("python 🐍 snakes 🙂", "rocket 🚀 launch 👍🏽 done, zwj 👩\u200d💻"),
    ("e\u0301cole cafe\u0301", "A\u030a and o\u0308, ＡＢＣ ﬁne ① ②"),   # combining marks, full-width, ligature, circled
    (" leading space", "trailing space "),
    ("MiXeD CaSe", "UPPER lower Title"),
    ("def f(x): return x**2  # square", "lambda x: x[0] if x else None; print(f'{x!r}')"),
    ("fill the <mask> here", "no mask"),
    (f"{core.LONG_WORD} words", "Ω ∮ zxqv"),
]
PAIRS_BPE = [
    ("how do I define a function?", "A function definition defines a user-defined function object."),
    ("how do I define a function?", "The for statement is used to iterate over the elements of a sequence."),
    ("how do I define a function?", "Functions are defined with the def keyword, a name and parameters."),
    ("how do I define a function?", "Raising an exception with the raise statement."),
    (topic("if", 0, 400), topic("while", 0, 400)),            # both sides longer than max_length
    (topic("with", 0, 320), "Context managers."),              # only the query is cut
    ("what is a lambda?", topic("lambda", 0, 400)),           # only the passage is cut
    (topic("try", 0, 300), topic("try", 0, 300)),             # a longest_first tie
    *COMMON_PAIRS,
    ("how do I define a function?", "A function definition defines a user-defined function object."),  # duplicate
]
PAIRS_XLMR = [
    ("What is an Exception?", "Exceptions are a means of breaking out of the normal flow of control."),
    ("what is an exception?", "EXCEPTIONS ARE A MEANS OF BREAKING OUT OF THE NORMAL FLOW OF CONTROL."),
    (topic("class", 0, 300), topic("import", 0, 300)),
    ("Import System", topic("import", 200, 400)),
    *COMMON_PAIRS,
    (topic("for", 0, 500), "short"),
]
PAIRS_LONG = [
    (topic("import", 0, 4000), topic("exceptions", 0, 4000)),  # both sides cut to 1000 tokens together
    ("How is a module found when importing it?", topic("import", 0, 1300)),  # 600+ tokens, not cut
    ("a short <pad> query", "and a short passage"),
]


@dataclass(frozen=True, kw_only=True)
class RobertaFixture(core.Fixture):
    model_type: str                        # "roberta", "xlm-roberta" or "camembert" (its model is XLM-R's)
    tokenizer: str                         # "bpe" (RobertaTokenizer), "unigram" (XLMRobertaTokenizer) or "camembert"
    add_prefix_space: bool | None = None   # None: the class's default, left out of tokenizer_config.json
    files: str = "tokenizer.json"          # or "vocab.json+merges.txt"


class Roberta(core.Family):
    head = core.Head("head_dense", "classifier.out_proj", reads=True)
    logits_layer = "classifier.out_proj"
    fixtures = (
        RobertaFixture(
            name="roberta-bpe", seed=SEED + 1, model_type="roberta", tokenizer="bpe",
            config=dict(hidden_size=30, num_attention_heads=2, intermediate_size=45, num_hidden_layers=2,
                        max_position_embeddings=50, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=1),
            pairs=PAIRS_BPE, rank_groups=[[0, 1, 2, 3]], tokenizer_case_lengths=(5, 6, 7, 12, 30),
        ),
        RobertaFixture(
            name="xlmr-unigram", seed=SEED + 2, model_type="xlm-roberta", tokenizer="unigram", max_length_arg=40,
            config=dict(hidden_size=26, num_attention_heads=2, intermediate_size=41, num_hidden_layers=3,
                        max_position_embeddings=130, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=3,
                        id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                        label2id={"contradiction": 0, "entailment": 1, "neutral": 2}),
            pairs=PAIRS_XLMR, tokenizer_case_lengths=(None, 5, 9, 17),
        ),
        RobertaFixture(
            name="xlmr-long", seed=SEED + 3, model_type="xlm-roberta", tokenizer="unigram", max_length_arg=1000,
            model_max_length=8192,
            config=dict(hidden_size=14, num_attention_heads=2, intermediate_size=23, num_hidden_layers=2,
                        max_position_embeddings=1026, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=1),
            pairs=PAIRS_LONG, tokenizer_case_lengths=(None,),
        ),
        RobertaFixture(
            name="roberta-tok-files", seed=SEED + 4, model_type="roberta", tokenizer="bpe", add_prefix_space=True,
            files="vocab.json+merges.txt", weights=False,
            config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=1,
                        max_position_embeddings=514, type_vocab_size=1, num_labels=1),
            pairs=PAIRS_BPE, tokenizer_case_lengths=(None, 6, 20),
        ),
        RobertaFixture(
            name="camembert-tok", seed=SEED + 5, model_type="camembert", tokenizer="camembert",
            add_prefix_space=False, weights=False,
            config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=1,
                        max_position_embeddings=514, type_vocab_size=1, num_labels=1),
            pairs=PAIRS_XLMR, tokenizer_case_lengths=(None, 7, 24),
        ),
    )

    def write_tokenizer(self, fx: RobertaFixture, out: Path) -> dict[str, int]:
        """The files as save_pretrained writes them; tokenizer_config.json's added_tokens_decoder agrees
        with the tokenizer's added tokens."""
        tok, specials, tc = bpe_tokenizer() if fx.tokenizer == "bpe" else unigram_tokenizer(fx.tokenizer == "camembert")
        tc["model_max_length"] = fx.model_max_length
        if fx.add_prefix_space is not None:
            tc["add_prefix_space"] = fx.add_prefix_space
        tc["added_tokens_decoder"] = {
            str(tok.token_to_id(t.content)): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                              "rstrip": t.rstrip, "single_word": t.single_word, "special": True}
            for t in specials}
        core.write_json(out / "tokenizer_config.json", tc)
        if fx.files == "tokenizer.json":
            (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
        else:
            raw = json.loads(tok.to_str())["model"]
            core.write_json(out / "vocab.json", raw["vocab"])
            merges = [m if isinstance(m, str) else " ".join(m) for m in raw["merges"]]
            (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
        return tok.get_vocab(with_added_tokens=True)

    def config(self, fx: RobertaFixture, vocab: dict[str, int]):
        return AutoConfig.for_model(fx.model_type, vocab_size=len(vocab), hidden_act="gelu", pad_token_id=PAD_ID,
                                    bos_token_id=0, eos_token_id=2, **fx.config)

    def max_tokens(self, fx: RobertaFixture) -> int:
        return fx.config["max_position_embeddings"] - PAD_ID - 1  # positions count from pad_token_id + 1

    def check(self, run: core.Run) -> None:
        assert "token_type_ids" not in run.enc, "the RoBERTa tokenizers give the model no token type ids"

    def tokenizer_summary(self, fx: RobertaFixture, out: Path, hf_tok) -> dict:
        return {"class": type(hf_tok).__name__, "add_prefix_space": fx.add_prefix_space,
                "files": core.tokenizer_files(out), "model_max_length": fx.model_max_length}

    def golden_json(self, run: core.Run) -> dict:
        config = core.config_fields(run.config, "model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                                    "num_attention_heads", "intermediate_size", "max_position_embeddings",
                                    "type_vocab_size", "layer_norm_eps", "hidden_act", "pad_token_id", "num_labels")
        return {**run.provenance(), "architecture": type(run.model).__name__, **run.checks(),
                "config": {**config, **core.label_names(run.config)},
                "tokenizer": self.tokenizer_summary(run.fx, run.out, run.hf_tok), "stages": run.stages,
                **run.inputs(), "pad_tokens_inside_pairs": pads_inside(run), **run.results()}

    def notes(self, run: core.Run) -> str:
        return f", {pads_inside(run)} <pad> inside"


def pads_inside(run: core.Run) -> int:
    return sum(int((row[m] == PAD_ID).sum()) for row, m in zip(run.enc["input_ids"], run.mask))


def added_token(content: str, lstrip: bool = False) -> AddedToken:
    return AddedToken(content, lstrip=lstrip, rstrip=False, single_word=False, normalized=False, special=True)


def bpe_tokenizer() -> tuple[Tokenizer, list[AddedToken], dict]:
    tok = core.trained_byte_bpe([*SPECIALS, MASK], vocab_size=900)
    specials = [added_token(t) for t in SPECIALS] + [added_token(MASK, lstrip=True)]
    tok.add_special_tokens(specials)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tc = {"tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
          "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
          "errors": "replace", "trim_offsets": True}
    return tok, specials, tc


def unigram_tokenizer(camembert: bool) -> tuple[Tokenizer, list[AddedToken], dict]:
    vocab_specials = CAMEMBERT_SPECIALS if camembert else SPECIALS
    pieces = core.unigram_pieces(vocab_specials, size=999) + [(MASK, 0.0)]
    tok = Tokenizer(Unigram(pieces, unk_id=vocab_specials.index("<unk>"), byte_fallback=False))
    # transformers 5 keeps only the Precompiled part of this: the Lowercase must be dropped.
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(core.precompiled_charsmap(CHARSMAP_RULES)),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    named = SPECIALS + (["<s>NOTUSED", "</s>NOTUSED"] if camembert else [])
    specials = [added_token(t) for t in named] + [added_token(MASK, lstrip=True)]
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    tc = {"tokenizer_class": "CamembertTokenizer" if camembert else "XLMRobertaTokenizer", "bos_token": "<s>",
          "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
          "mask_token": "<mask>"}
    if camembert:
        tc["additional_special_tokens"] = ["<s>NOTUSED", "</s>NOTUSED"]
    return tok, specials, tc


FAMILY = Roberta()
