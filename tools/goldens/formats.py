"""The pytorch_model.bin fixtures (tests/fixtures/formats/) that minibert's torch-free .bin reader is
checked against: one tiny random BertForSequenceClassification, torch.save'd in the ways real .bin
checkpoints come, and the logits transformers computes from each file, so that
tests/test_checkpoint_formats.py needs no torch.

    golden.json    provenance, the input batch, and per variant how it was made and the logits of
                   transformers' from_pretrained(<variant>, dtype=torch.float32), eager attention
    bin-f32/       torch.save(model.state_dict())
    bin-f16/       ... of model.half()                 (HalfStorage)
    bin-bf16/      ... of model.to(torch.bfloat16)     (BFloat16Storage)
    bin-sharded/   three shards and pytorch_model.bin.index.json, as transformers 4 wrote them
    bin-views/     non-contiguous tensors (a transposed view, a strided slice, two tensors at offsets
                   of one shared storage), nn.Parameter values (_rebuild_parameter), and a legacy
                   int64 position_ids buffer
each with the model's config.json. The safetensors formats need no fixtures: the tests have
transformers write them.
"""

from __future__ import annotations

from pathlib import Path

import core
import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification

CONFIG = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12, num_labels=2)
LENGTHS = (12, 9, 12, 5)  # valid tokens per pair of the batch, the rest padding
VARIANTS = {
    "bin-f32": "torch.save(model.state_dict())",
    "bin-f16": "torch.save(model.half().state_dict())",
    "bin-bf16": "torch.save(model.to(torch.bfloat16).state_dict())",
    "bin-sharded": "3 shards of model.state_dict(), each torch.save'd, + pytorch_model.bin.index.json",
    "bin-views": "torch.save of model.state_dict() rewritten as non-contiguous views, shared storages, "
                 "nn.Parameter values and an int64 position_ids buffer",
}


class Formats(core.Family):
    subdir = ""  # the one fixture is tests/fixtures/formats/ itself
    fixtures = (core.Fixture(name="formats", seed=20240917, config=CONFIG),)

    def build(self, fx: core.Fixture, out: Path) -> None:
        core.fresh_dir(out)
        model = BertForSequenceClassification(BertConfig(**fx.config)).eval()
        core.randomize_(model, fx.seed)
        batch = build_batch(fx.seed + 1)
        variants = {}
        for name, how in VARIANTS.items():
            write_variant(name, model, out / name)
            variants[name] = {"made_by": how, "logits": transformers_logits(out / name, batch).tolist()}
        core.write_json(out / "golden.json", {
            "format_version": core.FORMAT_VERSION,
            "generator": self.generator,
            "seed": fx.seed,
            "date": core.today(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
            "logits_from": "BertForSequenceClassification.from_pretrained(<variant>, dtype=torch.float32, "
                           "attn_implementation='eager'), eval mode",
            "config": fx.config,
            "batch": {k: v.tolist() for k, v in batch.items()},
            "variants": variants,
        })
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024
        print(f"{fx.name}: {', '.join(VARIANTS)}, {size:.0f} KiB")


def build_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch, T = len(LENGTHS), max(LENGTHS)
    input_ids = torch.randint(1, CONFIG["vocab_size"], (batch, T), generator=g)
    token_type_ids = torch.zeros((batch, T), dtype=torch.int64)
    attention_mask = torch.zeros((batch, T), dtype=torch.int64)
    for row, n in enumerate(LENGTHS):
        token_type_ids[row, n // 2:n] = 1  # query, then passage
        attention_mask[row, :n] = 1
        input_ids[row, n:] = 0               # [PAD]
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


def write_variant(name: str, model: BertForSequenceClassification, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(out / "config.json")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if name == "bin-f32":
        torch.save(state, out / "pytorch_model.bin")
    elif name == "bin-f16":
        torch.save({k: v.half() for k, v in state.items()}, out / "pytorch_model.bin")
    elif name == "bin-bf16":
        torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, out / "pytorch_model.bin")
    elif name == "bin-sharded":
        save_sharded(state, out)
    elif name == "bin-views":
        torch.save(views_state_dict(state), out / "pytorch_model.bin")
    else:
        raise ValueError(name)


def views_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same values, stored the awkward ways torch.save allows."""
    out = dict(state)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    out[name] = state[name].t().contiguous().t()                     # strides (1, out): column-major
    name = "bert.embeddings.LayerNorm.weight"
    w = state[name]
    out[name] = torch.stack([w, torch.full_like(w, 7.0)], dim=1)[:, 0]  # stride 2 in a [H, 2] storage
    shared = torch.cat([state["classifier.weight"].flatten(), state["classifier.bias"], torch.full((5,), 9.0)])
    out["classifier.weight"] = shared[:state["classifier.weight"].numel()].view_as(state["classifier.weight"])
    out["classifier.bias"] = shared[state["classifier.weight"].numel():][:state["classifier.bias"].numel()]
    for name in ("bert.pooler.dense.bias", "bert.encoder.layer.1.output.dense.weight"):
        out[name] = torch.nn.Parameter(state[name].clone(), requires_grad=False)
    out["bert.embeddings.position_ids"] = torch.arange(CONFIG["max_position_embeddings"])[None]
    assert not out["bert.encoder.layer.0.attention.self.query.weight"].is_contiguous()
    assert out["classifier.bias"].storage_offset() > 0
    return out


def save_sharded(state: dict[str, torch.Tensor], out: Path, n_shards: int = 3) -> None:
    """pytorch_model-0000k-of-0000n.bin + pytorch_model.bin.index.json, transformers 4's layout."""
    names = list(state)
    weight_map = {}
    for k in range(n_shards):
        shard = f"pytorch_model-{k + 1:05d}-of-{n_shards:05d}.bin"
        part = {name: state[name] for name in names[k::n_shards]}
        torch.save(part, out / shard)
        weight_map.update({name: shard for name in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    core.write_json(out / "pytorch_model.bin.index.json",
                    {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def transformers_logits(directory: Path, batch: dict) -> np.ndarray:
    """transformers' float32 model loaded from the file, as a user of the file would get it."""
    model, info = BertForSequenceClassification.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"], info
    assert set(info["unexpected_keys"]) <= {"bert.embeddings.position_ids"}, info
    with torch.no_grad():
        return model.eval()(**batch).logits.numpy()


FAMILY = Formats()
