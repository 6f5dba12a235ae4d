"""Gemma goldens: a bge-reranker-v2-gemma-style decoder reranker, as sentence-transformers 6 saves it.

- gemma-reranker: a GemmaForCausalLM with multi-query attention (4 query heads, 1 key/value head, head_dim 12, so
  NH * HD != hidden_size), tied embeddings, a SentencePiece-style BPE with byte fallback (spaces as "▁", <0x..>
  byte tokens, <bos> added by the post-processor) read as transformers 5's GemmaTokenizer rebuilds it, a
  bge-gemma-like template (<bos>A: query, B: passage, then the instruction) and LogitScore(true "Yes", no false
  token): score = logit("Yes") at the last position.
Made and checked as qwen3.py makes its golden (the reference is transformers' GemmaForCausalLM, eager, float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import core
from qwen3 import DecoderFixture, Qwen3
from tokenizers import (
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.models import BPE
from transformers import GemmaConfig, GemmaForCausalLM, PreTrainedTokenizerFast

SEED = 20261207
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
TEMPLATE = (
    "{% set sys = messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first %}"
    "{{ bos_token }}A: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n"
    "B: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}\n"
    "{{ sys if sys else \"Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'.\" }}")


class Gemma(Qwen3):
    config_class, model_class = GemmaConfig, GemmaForCausalLM
    score_tokens = ("Yes", None)
    norm_center = 0.0   # RMSNorm scales by 1 + weight
    template = TEMPLATE
    weight_scale = 0.2
    fixtures = (
        DecoderFixture(
            name="gemma-reranker", seed=SEED, model_max_length=120,
            config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=1, head_dim=12, max_position_embeddings=160, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            pairs=core.RANKING_PAIRS[:5] + core.RANKING_PAIRS[9:11] + [("", ""), ("Yes", "No"), ("🐍 ✓", "日本語")],
            rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 60),
        ),
    )

    def special_ids(self, vocab: dict[str, int]) -> dict:
        return {"pad_token_id": vocab["<pad>"], "eos_token_id": vocab["<eos>"], "bos_token_id": vocab["<bos>"]}

    def write_tokenizer(self, fx: DecoderFixture, out: Path) -> dict[str, int]:
        """Word pieces trained with "▁" for spaces, then the vocabulary as Gemma's is laid out: the special tokens,
        the 256 byte tokens, the pieces; saved with tokenizer_class GemmaTokenizer."""
        trained = Tokenizer(BPE(unk_token="<unk>"))
        trained.normalizer = normalizers.Replace(" ", "\u2581")
        trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False)
        trained.train_from_iterator(core.CORPUS + ["Yes", "No"] * 3000, trainer)
        model = json.loads(trained.to_str())["model"]
        vocab = {token: i for i, token in enumerate(SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
        for token, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
            vocab.setdefault(token, len(vocab))
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        tok.add_special_tokens(SPECIALS)
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                           special_tokens=[("<bos>", vocab["<bos>"])])
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                     unk_token="<unk>", mask_token="<mask>", model_max_length=fx.model_max_length,
                                     chat_template=self.template)
        hf.save_pretrained(out)
        path = out / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "GemmaTokenizer"}, indent=2))
        assert "Yes" in vocab, "the vocabulary needs the token 'Yes'"
        return vocab


FAMILY = Gemma()
