"""Qwen3 goldens: decoder rerankers as sentence-transformers 6 saves them (Qwen3-Reranker's way).

- qwen3-reranker: a Qwen3ForCausalLM with grouped-query attention (4 query heads, 2 key/value heads, head_dim 8,
  so NH * HD != hidden_size), tied embeddings, a byte-level BPE with Qwen's <|im_start|> / <|im_end|>, and a
  Qwen3-Reranker-like chat template (system / query / document, the assistant's empty <think> block hard-coded
  at the end). Saved by sentence-transformers' CrossEncoder: modules.json with Transformer(text-generation)
  and LogitScore(yes, no). model_max_length 160 cuts the long pairs, so the template's tail is written back.

The reference is transformers' Qwen3ForCausalLM (eager, float32), one pair at a time on sentence-transformers'
own token ids (CrossEncoder.preprocess): hidden_states (the last after the final norm), the last token's
hidden state, and logit("yes") - logit("no") there. CrossEncoder.predict (Identity activation) is checked
against those scores. Stage `last_token` is the last layer at each pair's last token.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import core
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    AutoModelForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SEED = 20261205
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements. Answer only \"yes\" or \"no\"."
    "<|im_end|>\n<|im_start|>user\n"
    "{% set sys = messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first %}"
    "<Instruct>: {{ sys if sys else 'Given a query, find the passages that answer it' }}\n"
    "<Query>: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n"
    "<Document>: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}"
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
# Enough of "yes" and "no" that the trainer makes each one token, as in Qwen's vocabulary.
YES_NO = ["yes"] * 5000 + ["no"] * 5000


@dataclass(frozen=True)
class DecoderFixture(core.Fixture):
    prompt_pairs: list = ()   # pairs scored with a prompt (a system message): checked against predict too


class Qwen3(core.Family):
    """A decoder reranker's goldens; the other decoder families (qwen2.py, gemma.py, ...) subclass it and say what
    differs: their transformers classes, tokenizer, chat template and LogitScore tokens."""
    head = core.Head("last_token", "lm_head", reads=True)
    config_class, model_class = Qwen3Config, Qwen3ForCausalLM
    score_tokens = ("yes", "no")   # LogitScore's true and false tokens (None: no false token)
    template = TEMPLATE
    norm_center = 1.0   # the norm weights are drawn around it (Gemma's norm scales by 1 + weight: 0)
    weight_scale = 0.4  # every parameter's random spread (without Qwen3's q/k norm, larger weights make attention
                        # so peaked that float32 summation order alone moves the stages by 1e-4)
    fixtures = (
        DecoderFixture(
            name="qwen3-reranker", seed=SEED, model_max_length=160,
            config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=8, max_position_embeddings=192, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            pairs=core.RANKING_PAIRS[:7] + core.RANKING_PAIRS[9:11] + [("", ""), ("yes", "no")],
            rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 70, 120),
        ),
    )

    def build(self, fx: DecoderFixture, out: Path) -> None:

        core.fresh_dir(out)
        with tempfile.TemporaryDirectory() as tmp:
            bare = Path(tmp) / "bare"
            vocab = self.write_tokenizer(fx, bare)
            config = self.config_class(vocab_size=len(vocab), **self.special_ids(vocab), **fx.config)
            torch.manual_seed(fx.seed)
            model = self.model_class(config).eval()
            g = torch.Generator().manual_seed(fx.seed)
            with torch.no_grad():
                for name, p in sorted(model.named_parameters()):   # norms near 1, the rest far from their init
                    p.copy_((self.norm_center if "norm" in name else 0.0) + self.weight_scale * torch.randn(p.shape, generator=g))
            model.save_pretrained(bare)
            self.cross_encoder(bare, vocab).save(str(out))
        (out / "README.md").unlink(missing_ok=True)   # the model card: it records the date
        self.write_golden(fx, out)

    @property
    def stage_notes(self) -> str:
        true, false = self.score_tokens
        score = f"logit({true!r})" + ("" if false is None else f" - logit({false!r})")
        return ("layer_i is transformers' hidden_states[i + 1] (the last after the final norm); last_token is the "
                f"last layer at each pair's last token; logits is {score} there (LogitScore)")

    def special_ids(self, vocab: dict[str, int]) -> dict:
        return {"pad_token_id": vocab["<|endoftext|>"], "eos_token_id": vocab["<|im_end|>"], "bos_token_id": None}

    def cross_encoder(self, bare: Path, vocab: dict[str, int]):
        """sentence-transformers' CrossEncoder of the bare directory: by itself (no modules.json: Transformer
        (text-generation) + LogitScore('yes', 'no')), or with a LogitScore of this family's tokens."""
        from sentence_transformers import CrossEncoder
        from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

        if self.score_tokens == ("yes", "no"):
            return CrossEncoder(str(bare), device="cpu")
        true, false = (None if t is None else vocab[t] for t in self.score_tokens)
        return CrossEncoder(modules=[Transformer(str(bare), transformer_task="text-generation"),
                                     LogitScore(true_token_id=true, false_token_id=false)], device="cpu")

    def write_tokenizer(self, fx: DecoderFixture, out: Path) -> dict[str, int]:
        tok = Tokenizer(BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(core.CORPUS + YES_NO, trainer)
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     model_max_length=fx.model_max_length, chat_template=self.template)
        hf.save_pretrained(out)
        vocab = hf.get_vocab()
        assert "yes" in vocab and "no" in vocab, "the vocabulary needs the tokens 'yes' and 'no'"
        return vocab

    def write_golden(self, fx: DecoderFixture, out: Path) -> None:
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(out), device="cpu")
        model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
        score = json.loads((out / "1_LogitScore" / "config.json").read_text())
        yes, no = score["true_token_id"], score["false_token_id"]   # no: None for logit(true) alone
        ids = self.token_ids(ce, fx.pairs)
        hidden, last, logits = [], [], []
        with torch.no_grad():
            for row in ids:   # one pair at a time: no padding, positions from 0
                o = model(torch.tensor([row]), output_hidden_states=True)
                hidden.append([h[0] for h in o.hidden_states])
                last.append(o.hidden_states[-1][0, -1])
                logit = o.logits[0, -1, yes] - (0 if no is None else o.logits[0, -1, no])
                logits.append(logit.reshape(1))
        n_layers = model.config.num_hidden_layers
        arrays = {
            "lengths": np.array([len(r) for r in ids], dtype=np.int64),
            "input_ids": np.concatenate(ids).astype(np.int64),
            "token_type_ids": np.zeros(sum(len(r) for r in ids), dtype=np.int64),
            "embeddings": torch.cat([h[0] for h in hidden]).numpy().astype(np.float32),
            **{f"layer_{i}": torch.cat([h[i + 1] for h in hidden]).numpy().astype(np.float32)
               for i in range(n_layers)},
            "last_token": torch.stack(last).numpy().astype(np.float32),
            "logits": torch.stack(logits).numpy().astype(np.float32),
        }
        predicted = ce.predict(fx.pairs, activation_fn=torch.nn.Identity(), batch_size=4)
        st_diff = float(np.abs(predicted - arrays["logits"][:, 0]).max())
        assert st_diff <= core.ATOL + core.RTOL * float(np.abs(predicted).max()), st_diff
        tok = ce.tokenizer
        stages = ["embeddings", *(f"layer_{i}" for i in range(n_layers)), "last_token", "logits"]
        meta = {
            **core.provenance(fx, "model", self.generator), "family": self.name,
            "architecture": self.model_class.__name__,
            "modules": ["Transformer (text-generation)", f"LogitScore(true_token_id={yes}, false_token_id={no})"],
            "attn_implementation": "eager", "dtype": "float32",
            "sentence_transformers_vs_golden_max_abs_diff": st_diff,
            "stages": stages, "stage_notes": self.stage_notes,
            "config": {"model_type": model.config.model_type, "vocab_size": model.config.vocab_size, "num_labels": 1,
                       **{k: v for k, v in fx.config.items()}},
            "tokenizer": {"class": type(tok).__name__, "files": core.tokenizer_files(out),
                          "model_max_length": fx.model_max_length, "chat_template": "chat_template.jinja"},
            "max_length_arg": fx.max_length_arg, "max_length": ce.max_length,
            "tokenization": "sentence-transformers 6 CrossEncoder.preprocess: the pair as query / document messages "
                            "through the chat template, right-truncated to max_length with the template's tail "
                            "written back",
            "tolerance": {"atol": core.ATOL, "rtol": core.RTOL},
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
            "pairs": [list(p) for p in fx.pairs],
            "tokens": [tok.convert_ids_to_tokens(r) for r in ids],
            "rank_groups": fx.rank_groups,
            "rank_group_min_margin": core.rank_margins(fx, arrays["logits"]),
            "tokenizer_cases": [self.tokenizer_case(out, fx, m) for m in fx.tokenizer_case_lengths],
        }
        core.write_npz(out / "golden.npz", arrays)
        core.write_json(out / "golden.json", meta)
        print(f"{fx.name}: {self.model_class.__name__} + LogitScore, B={len(ids)} N={len(arrays['input_ids'])} "
              f"max_length={ce.max_length} ({sum(len(r) == ce.max_length for r in ids)} pairs at the limit), "
              f"sentence-transformers={st_diff:.1e}, logits[:4] {arrays['logits'][:4, 0]}")

    @staticmethod
    def token_ids(ce, pairs) -> list[list[int]]:
        """sentence-transformers' own token ids, unpadded (it pads on the left)."""
        enc = ce.preprocess(pairs)
        return [row[mask == 1].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]

    def tokenizer_case(self, out: Path, fx: DecoderFixture, max_length: int | None) -> dict:
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(out), device="cpu", max_length=max_length)
        ids = self.token_ids(ce, fx.pairs)
        return {"max_length_arg": max_length, "max_length": ce.max_length, "input_ids": ids,
                "token_type_ids": [[0] * len(r) for r in ids]}


FAMILY = Qwen3()
