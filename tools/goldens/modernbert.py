"""ModernBERT goldens: ModernBertForSequenceClassification with a byte-level BPE learned here.

- modernbert-cls: config.json with the keys the Hub's checkpoints carry (global_attn_every_n_layers 2,
  global_rope_theta, local_rope_theta), cls pooling, every bias on, local_attention 8 (a token sees 4
  on each side) so that most pairs are longer than the window; one label; tokenizer.json with padding
  and truncation baked in (to be ignored), tokenizer_class PreTrainedTokenizerFast; max_length by the
  default rule, min(model_max_length 8192, 48 positions).
- modernbert-mean: transformers 5's layer_types (sliding, full, sliding: not the legacy pattern) and
  rope_parameters per layer type, mean pooling, no attention, norm or classifier biases (MLP biases
  on), local_attention 13 (window 6: the // 2), three labels, 1024 positions and max_length 520: a
  pair cut at 520 tokens (past 512), one of ~300 untruncated; no tokenizer_class.
The tokenizer: NFC, a ByteLevel pre-tokenizer, the [CLS] A [SEP] B [SEP] template, the specials at the
end of the vocab as ModernBERT's. Its tokenizer makes no token type ids (model_input_names) and the
model has none: they are zeros. `layer_{L-1}` is after final_norm, as transformers returns it;
`pooled` is the head's output (pooling, dense, GELU, norm).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import core
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.processors import TemplateProcessing
from transformers import ModernBertConfig

SEED = 20240611
N_MERGES = 520
TRAIN_WORDS = 4000  # the most frequent words of the corpus, to learn the merges from
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
LEGACY_KEYS = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")
topic = core.topic

PAIRS_MEAN = [
    ("What is an Exception?", "Exceptions are a means of breaking out of the normal flow of control."),
    (topic("class", 0, 300), topic("import", 0, 300)),
    # ~300 tokens, not truncated: far longer than the window
    ("how does the import system find a module?", topic("import", 0, 700)),
    # both sides long: cut to 520 tokens (more than 512), longest_first
    (topic("exceptions", 0, 2200), topic("try", 0, 2200)),
    ("Café Größe naïve", "Ärger über Öl, año señor, déjà vu façade"),
    ("北京大学 中文", "日本 東京 and 한국어 text 😀 👩\u200d💻"),
    ("e\u0301cole cafe\u0301", "A\u030a and o\u0308 (composed by NFC)"),
    ("an empty passage follows", ""),
    ("", "an empty query precedes this passage"),
    ("whitespace only", "\n\n\t \u2003 "),
    ("an empty passage follows", ""),  # duplicate of 7
]


@dataclass(frozen=True, kw_only=True)
class ModernFixture(core.Fixture):
    tokenizer_class: str | None
    bake_padding: bool   # tokenizer.json with padding and truncation that a loader must ignore
    legacy_config: bool  # config.json as the Hub's checkpoints have it (no layer_types / rope_parameters)


class ModernBert(core.Family):
    head = core.Head("pooled", "head")
    fixtures = (
        ModernFixture(
            name="modernbert-cls", seed=SEED + 11, model_max_length=8192, tokenizer_class="PreTrainedTokenizerFast",
            bake_padding=True, legacy_config=True,
            config=dict(hidden_size=20, num_attention_heads=2, intermediate_size=29, num_hidden_layers=3,
                        max_position_embeddings=48, local_attention=8, global_attn_every_n_layers=2,
                        global_rope_theta=1000.0, local_rope_theta=50.0, norm_eps=1e-6,
                        norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
                        classifier_pooling="cls", num_labels=1),
            pairs=core.RANKING_PAIRS, rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(3, 5, 6, 7, 12, 20),
        ),
        ModernFixture(
            name="modernbert-mean", seed=SEED + 13, model_max_length=8192, max_length_arg=520, tokenizer_class=None,
            bake_padding=False, legacy_config=False,
            config=dict(hidden_size=16, num_attention_heads=2, intermediate_size=21, num_hidden_layers=3,
                        max_position_embeddings=1024, local_attention=13,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                        norm_bias=False, attention_bias=False, mlp_bias=True, classifier_bias=False,
                        classifier_pooling="mean", num_labels=3,
                        id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                        label2id={"contradiction": 0, "entailment": 1, "neutral": 2}),
            pairs=PAIRS_MEAN, tokenizer_case_lengths=(None, 9, 17, 300),
        ),
    )

    def write_tokenizer(self, fx: ModernFixture, out: Path) -> dict[str, int]:
        merges = list(core.byte_bpe_merges(N_MERGES, TRAIN_WORDS))
        vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
        for a, b in merges:
            vocab.setdefault(a + b, len(vocab))
        for token in SPECIALS:
            vocab[token] = len(vocab)
        tok = Tokenizer(BPE(vocab, merges))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        tok.add_special_tokens(SPECIALS)
        if fx.bake_padding:
            tok.enable_truncation(max_length=16)
            tok.enable_padding(length=40, pad_id=vocab["[PAD]"], pad_token="[PAD]")
        (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
        tc = {"model_input_names": ["input_ids", "attention_mask"], "model_max_length": fx.model_max_length,
              "clean_up_tokenization_spaces": True,
              **{name: f"[{name[:-6].upper()}]" for name in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token")}}
        if fx.tokenizer_class:
            tc["tokenizer_class"] = fx.tokenizer_class
        core.write_json(out / "tokenizer_config.json", tc)
        return vocab

    def config(self, fx: ModernFixture, vocab: dict[str, int]) -> ModernBertConfig:
        return ModernBertConfig(
            vocab_size=len(vocab), pad_token_id=vocab["[PAD]"], bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"],
            cls_token_id=vocab["[CLS]"], sep_token_id=vocab["[SEP]"], hidden_activation="gelu",
            classifier_activation="gelu", **fx.config)

    def after_save(self, fx: ModernFixture, out: Path) -> None:
        """For the legacy config: config.json as the Hub's checkpoints (transformers 4.48+) have it, the
        attention pattern as global_attn_every_n_layers and the thetas as global/local_rope_theta."""
        if not fx.legacy_config:
            return
        path = out / "config.json"
        raw = json.loads(path.read_text(encoding="utf-8"))
        for key in ("layer_types", "rope_parameters", "dtype"):
            raw.pop(key)
        raw.update({key: fx.config[key] for key in LEGACY_KEYS}, reference_compile=None, repad_logits_with_grad=False,
                   torch_dtype="float32", transformers_version="4.48.0")
        core.write_json(path, dict(sorted(raw.items())))

    def check(self, run: core.Run) -> None:
        loaded = run.model.config
        assert loaded.layer_types == run.config.layer_types and loaded.rope_parameters == run.config.rope_parameters
        assert run.hf_tok.padding_side == "right", "positions count from 0 at the first token only with right padding"
        assert "token_type_ids" not in run.enc, "model_input_names leaves token_type_ids out"
        with torch.no_grad():
            last = run.model.model(input_ids=run.enc["input_ids"], attention_mask=run.enc["attention_mask"]).last_hidden_state
        assert torch.equal(run.hidden[-1], last), "hidden_states[-1] is the last hidden state, after final_norm"

    def golden_json(self, run: core.Run) -> dict:
        c, fx = run.config, run.fx
        config = {
            **core.config_fields(c, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                 "intermediate_size", "max_position_embeddings"),
            "layer_types": list(c.layer_types),
            **core.config_fields(c, "rope_parameters", "local_attention", "classifier_pooling"),
            "biases": core.config_fields(c, "norm_bias", "attention_bias", "mlp_bias", "classifier_bias"),
            **core.config_fields(c, "norm_eps", "num_labels"), **core.label_names(c),
            "config_style": "legacy global_attn_every_n_layers/global_rope_theta/local_rope_theta"
                            if fx.legacy_config else "layer_types/rope_parameters",
        }
        tokenizer = {"kind": "byte-level BPE", "merges": len(core.byte_bpe_merges(N_MERGES, TRAIN_WORDS)),
                     "vocab_size": c.vocab_size, "tokenizer_class": fx.tokenizer_class,
                     "model_max_length": fx.model_max_length, "baked_padding_and_truncation": fx.bake_padding}
        return {**run.provenance(), "family": "ModernBERT", **run.checks(),
                "inv_freq_max_ulps_torch_vs_minibert": inv_freq_ulps(run), "stages": run.stages,
                "stage_notes": "layer_i is hidden_states[i + 1]; the last layer's is after final_norm, as transformers "
                               "returns it; pooled is the head's output (pooling, dense, GELU, norm)",
                "config": config, "tokenizer": tokenizer, **run.inputs(), **run.results()}

    def notes(self, run: core.Run) -> str:
        window = run.config.local_attention // 2 * 2 + 1
        longer = int((run.mask.sum(1) > window).sum())
        return f", {longer} pairs longer than the window, inv_freq ulps {inv_freq_ulps(run)}"


def inv_freq_ulps(run: core.Run) -> dict[str, int]:
    """How far torch's float32 inv_freq is from minibert's (a float32 pow, as NumPy rounds it), in ulps."""
    c = run.config
    head_dim = c.hidden_size // c.num_attention_heads
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    out = {}
    for layer_type in sorted(set(c.layer_types)):
        torch_inv = getattr(run.model.model.rotary_emb, f"{layer_type}_inv_freq").numpy()
        ours = np.float32(1.0) / np.float32(c.rope_parameters[layer_type]["rope_theta"]) ** exponents
        out[layer_type] = int(np.max(np.abs(torch_inv.view(np.int32) - ours.view(np.int32))))
    return out


FAMILY = ModernBert()
