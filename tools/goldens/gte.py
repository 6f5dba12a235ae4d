"""GTE "new" goldens (the architecture of Alibaba-NLP/gte-multilingual-reranker-base): NewForSequenceClassification,
whose code is not in transformers but custom code on the Hub, run from a scratch environment.

The reference
-------------
config.json's auto_map points at the Hub repository Alibaba-NLP/new-impl (modeling.py, configuration.py). The
Hub cannot be reached from where these fixtures were made; the closest copies found are in a code index of
public GitHub files (REFERENCE below: file ids, sizes, sha256):
- configuration.py: NewConfig as the Hub describes it (7,119 characters; the Hub shows 7.13 kB).
- modeling.py: a fork of new-impl's (78,302 characters; the Hub's main is 59 kB): the Hub file plus
  contrastive-learning code (AvgPooler, cl_forward, NewModelForCL) after NewForQuestionAnswering. The
  inference path (NewEmbeddings, RotaryEmbedding, NTKScalingRotaryEmbedding, NewAttention, NewSdpaAttention,
  NewGatedMLP, NewLayer, NewEncoder, NewPooler, NewModel, NewForSequenceClassification) is used as it is.
It needs transformers 4.x (4.57.6): on 5.x it fails (get_extended_attention_mask is gone, and from_pretrained
fills its non-persistent rotary buffers with garbage). So it runs in a scratch environment, never inside this
project, and is never copied into it:

    python3 -m venv /tmp/gte-ref
    /tmp/gte-ref/bin/pip install torch==2.13.0 transformers==4.57.6 'huggingface-hub>=0.34,<1.0' \\
        'tokenizers>=0.22,<=0.23.0' safetensors numpy
    mkdir /tmp/gte-ref/newimpl && touch /tmp/gte-ref/newimpl/__init__.py
    # modeling.py and configuration.py into /tmp/gte-ref/newimpl/, byte for byte the files REFERENCE names

GTE_REFERENCE=DIR chooses another folder (DIR/bin/python, DIR/newimpl/). The two files are checked against
REFERENCE's sha256 before anything runs; GTE_REFERENCE_UNPINNED=1 runs other copies (the Hub's modeling.py, say),
and `--check` then shows whether they give the same bytes. Without the environment the gte fixtures are neither
written nor checked: make.py prints NOT WRITTEN / NOT CHECKED with these instructions and exits 1.

How a fixture is made: the tokenizer files are written and run here (transformers 5's AutoTokenizer, as the
other specs); this file then runs itself in the scratch interpreter (`--reference-run`), which builds
NewForSequenceClassification(NewConfig(...)), re-randomizes every parameter (core.randomize_), saves it (float16
for gte-rope, as the real checkpoint is stored), reads it back in float32 with eager attention (transformers
4.57.6 refuses sdpa for it: NewPreTrainedModel declares no _supports_sdpa) and runs the padded batch. Its stages
come back here to be packed. Then transformers 5's native GteForSequenceClassification, built from the same
weights (qkv_proj split, up_gate_proj -> up, gate) with the rope mapped as the notes say (NTK: rope_type "linear",
factor^(2 / HD), theta * factor), runs the same batch: golden.json records its max |diff| per stage against the
reference, held to ATOL.

Fixtures (head_dim 16 everywhere, so 1 / sqrt(HD) is exact; every parameter re-randomized):
- gte-rope: plain RoPE (rope_theta 160000, no scaling: gte-multilingual-mlm-base's), one label, type_vocab_size 1
  (row 0 added to every token), fused qkv_proj, the vocabulary padded by 7 rows as the real one is, a float16
  checkpoint (config.json dtype float16), max_length 40 of 64 positions: pairs cut longest_first, a "<pad>" inside a
  pair (an ordinary token to gte's positions), a ranking group.
- gte-ntk-long: NTK-scaled RoPE with the reranker's rope_theta 20000 and factor 8, three labels, type_vocab_size 0
  (no token type table), pack_qkv false (q_proj, k_proj, v_proj), layer_norm_eps 1e-5, 512 positions and the
  default max_length (min(model_max_length 8192, 512)): one pair cut at 512, one of 310 tokens uncut.
`pooled` is tanh(new.pooler.dense(<s>)), what the classifier reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import core
import numpy as np
import roberta
import torch

SEED = 20260707
PAD_ID = 1
topic = core.topic

# Where the reference came from. The code index is a store of public GitHub files, read by file id; the GitHub
# repositories of these two copies are not named in it.
REFERENCE = {
    "code": "Alibaba-NLP/new-impl on the Hugging Face Hub (model_type 'new', NewForSequenceClassification), "
            "custom code (auto_map), not in transformers",
    "files": {
        "configuration.py": {
            "source": "public GitHub copy, code index file id 6707604277 (NewConfig; the Hub's file shows 7.13 kB)",
            "chars": 7119, "sha256": "3e6df250cf1099a844889a6b7d5918880a1346a0c7313e9cb8f8cfa27271d6cb"},
        "modeling.py": {
            "source": "public GitHub fork, code index file id 16234270733: the Hub's modeling.py plus contrastive-"
                      "learning code after NewForQuestionAnswering; the inference path used as it is",
            "chars": 78302, "sha256": "d7bcb4b282b5e0649b8347c31216b7762bac7b994ea30e0cea8953ee7ec55fca"},
    },
    "runs_with": "transformers 4.57.6, torch 2.13.0 (CPU), in a scratch venv (see tools/goldens/gte.py)",
}
# The Hub reranker's config.json points here; the fixtures' config.json does too, as a real checkpoint's would.
AUTO_MAP = {
    "AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
    "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel",
    "AutoModelForSequenceClassification": "Alibaba-NLP/new-impl--modeling.NewForSequenceClassification",
}

PAIRS_ROPE = [
    *core.RANKING_PAIRS[:5],                                    # the ranking group
    (topic("if", 0, 400), topic("while", 0, 400)),            # both sides cut, longest_first
    (topic("with", 0, 320), "Context managers."),              # only the query is cut
    ("what is a lambda?", topic("lambda", 0, 400)),           # only the passage is cut
    *roberta.COMMON_PAIRS[:3],                                  # a <pad> inside (an ordinary position), empty sides
    *roberta.COMMON_PAIRS[5:8],                                 # scripts, emoji, combining marks and full-width
    (topic("try", 0, 300), topic("try", 0, 300)),             # a longest_first tie
]
PAIRS_LONG = [
    (topic("import", 0, 4000), topic("exceptions", 0, 4000)),  # both sides cut to 512 tokens together
    ("How is a module found when importing it?", topic("import", 0, 700)),  # 310 tokens, not cut
    ("Café naïve résumé?", "Über die Straße: crème brûlée, São Paulo, Ångström."),
    ("an empty passage follows", ""),
]


@dataclass(frozen=True, kw_only=True)
class GteFixture(roberta.RobertaFixture):
    """An XLM-R Unigram tokenizer (roberta.py's) and NewConfig's keyword arguments in `config`."""
    model_type: str = "new"
    tokenizer: str = "unigram"
    storage_dtype: str = "float32"   # the checkpoint's dtype; the reference always runs in float32
    vocab_padding: int = 0           # embedding rows past the tokenizer's vocabulary (the real one has 46)


class Gte(core.Family):
    head = core.Head("pooled", "classifier", reads=True)
    fixtures = (
        GteFixture(
            name="gte-rope", seed=SEED + 1, max_length_arg=40, model_max_length=8192, storage_dtype="float16",
            vocab_padding=7,
            config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=2,
                        max_position_embeddings=64, type_vocab_size=1, layer_norm_eps=1e-12,
                        rope_theta=160000.0, rope_scaling=None, pack_qkv=True, num_labels=1),
            pairs=PAIRS_ROPE, rank_groups=core.RANK_GROUP, tokenizer_case_lengths=(None, 5, 9, 17),
        ),
        GteFixture(
            name="gte-ntk-long", seed=SEED + 2, model_max_length=8192,
            config=dict(hidden_size=16, num_attention_heads=1, intermediate_size=43, num_hidden_layers=2,
                        max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-5,
                        rope_theta=20000.0, rope_scaling={"type": "ntk", "factor": 8.0}, pack_qkv=False,
                        num_labels=3, id2label={0: "contradiction", 1: "entailment", 2: "neutral"},
                        label2id={"contradiction": 0, "entailment": 1, "neutral": 2}),
            pairs=PAIRS_LONG, tokenizer_case_lengths=(None, 300),
        ),
    )

    def write_tokenizer(self, fx: GteFixture, out: Path) -> dict[str, int]:
        return roberta.FAMILY.write_tokenizer(fx, out)   # XLMRobertaTokenizer, as the reranker's tokenizer_config.json

    def build(self, fx: GteFixture, out: Path) -> None:
        env = reference_env()   # core.ReferenceUnavailable when the scratch environment is not set up
        core.fresh_dir(out)
        vocab = self.write_tokenizer(fx, out)
        hf_tok = core.AutoTokenizer.from_pretrained(out)
        max_length = core.effective_max_length(self, fx, fx.max_length_arg)
        enc = core.hf_encode(hf_tok, fx.pairs, max_length)
        assert "token_type_ids" not in enc, "XLMRobertaTokenizer gives the model no token type ids"
        mask = enc["attention_mask"].bool()
        assert mask.shape[1] == int(mask.sum(1).max()) <= max_length and bool(mask[:, 0].all()), "right padding"

        new_config = dict(vocab_size=len(vocab) + fx.vocab_padding, pad_token_id=PAD_ID, bos_token_id=0,
                          eos_token_id=2, hidden_act="gelu", **fx.config)
        ref = run_reference(env, fx, out, new_config, enc)
        path = out / "config.json"   # as the Hub's checkpoint: auto_map to new-impl
        core.write_json(path, dict(sorted({**json.loads(path.read_text(encoding="utf-8")), "auto_map": AUTO_MAP}.items())))

        hidden = [torch.from_numpy(ref[f"hidden_{i}"]) for i in range(fx.config["num_hidden_layers"] + 1)]
        pooled, logits = torch.from_numpy(ref["pooled"]), torch.from_numpy(ref["logits"])
        arrays = core.pack(enc, hidden, self.head.stage, pooled, logits)
        native = native_crosscheck(out, enc, arrays, self.head.stage)
        assert max(native["max_abs_diff"].values()) <= core.ATOL, f"{fx.name}: native transformers GTE differs: {native}"
        margins = core.rank_margins(fx, arrays["logits"])

        c = json.loads(path.read_text(encoding="utf-8"))
        stages = ["embeddings", *(f"layer_{i}" for i in range(c["num_hidden_layers"])), self.head.stage, "logits"]
        tokens = [hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(enc["input_ids"], mask)]
        golden = {
            **core.provenance(fx, "model", self.generator), "family": "GTE (new)",
            "architecture": "NewForSequenceClassification",
            "reference": {**REFERENCE, "ran_with": ref["versions"], "attn_implementation": "eager", "dtype": "float32",
                          "checkpoint_dtype": fx.storage_dtype},
            "checks": {"sdpa": ref["sdpa"], "native_transformers": native,
                       "inv_freq_max_ulps_reference_vs_minibert": inv_freq_ulps(c, ref["inv_freq"]),
                       "buffers_after_from_pretrained_equal_fresh": bool(ref["buffers_equal"])},
            "stages": stages,
            "stage_notes": "layer_i is the reference's hidden_states[i + 1]; pooled is tanh(new.pooler.dense(<s>)), "
                           "the classifier's input",
            "config": {**{k: c[k] for k in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                                            "num_attention_heads", "intermediate_size", "max_position_embeddings",
                                            "type_vocab_size", "layer_norm_eps", "hidden_act", "rope_theta",
                                            "rope_scaling", "pack_qkv", "position_embedding_type",
                                            "layer_norm_type", "pad_token_id")},
                       "num_labels": len(c["id2label"]), "id2label": c["id2label"], "dtype": c["dtype"]},
            "tokenizer": self.tokenizer_summary(fx, out, hf_tok),
            "max_length_arg": fx.max_length_arg, "max_length": max_length, "tokenization": core.TOKENIZATION,
            "tolerance": {"atol": core.ATOL, "rtol": core.RTOL},
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
            "pairs": [list(p) for p in fx.pairs], "tokens": tokens,
            "rank_groups": fx.rank_groups, "rank_group_min_margin": margins,
            "tokenizer_cases": core.tokenizer_cases(self, fx, hf_tok),
        }
        core.write_npz(out / "golden.npz", arrays)
        core.write_json(out / "golden.json", golden)
        lengths = mask.sum(1)
        print(f"{fx.name}: NewForSequenceClassification (new-impl, transformers {ref['versions']['transformers']}) + "
              f"{type(hf_tok).__name__}, B={len(lengths)} T={mask.shape[1]} N={int(lengths.sum())} "
              f"max_length={max_length} ({int((lengths == max_length).sum())} pairs at the limit), "
              f"native GTE max {max(native['max_abs_diff'].values()):.1e}, "
              f"{sum(p.stat().st_size for p in out.iterdir()) / 1024:.0f} KiB")

    def tokenizer_summary(self, fx: GteFixture, out: Path, hf_tok) -> dict:
        return {"class": type(hf_tok).__name__, "files": core.tokenizer_files(out),
                "model_max_length": fx.model_max_length}


# ----------------------------------------------------------------------------------------------
# the scratch environment, and running the reference in it


@dataclass(frozen=True)
class ReferenceEnv:
    python: Path   # the scratch venv's interpreter (transformers 4.57.6)
    root: Path     # the folder holding the newimpl/ package


def reference_env() -> ReferenceEnv:
    """The scratch environment, its files checked against REFERENCE; core.ReferenceUnavailable if it is not set up."""
    root = Path(os.environ.get("GTE_REFERENCE", "/tmp/gte-ref"))
    python, package = root / "bin" / "python", root / "newimpl"
    how = (f"set up the scratch environment as tools/goldens/gte.py's docstring says ({root}/bin/python with "
           f"transformers 4.57.6; {package}/ holding new-impl's modeling.py, configuration.py and an __init__.py)")
    missing = [str(p) for p in (python, package / "__init__.py", *(package / f for f in REFERENCE["files"]))
               if not p.exists()]
    if missing:
        raise core.ReferenceUnavailable(f"missing {', '.join(missing)}: {how}")
    for name, want in REFERENCE["files"].items():
        got = hashlib.sha256((package / name).read_bytes()).hexdigest()
        if got != want["sha256"] and os.environ.get("GTE_REFERENCE_UNPINNED", "") in ("", "0"):
            raise core.ReferenceUnavailable(
                f"{package / name} has sha256 {got}, the fixtures were made from {want['sha256']} ({want['source']}); "
                "GTE_REFERENCE_UNPINNED=1 runs it anyway")
    return ReferenceEnv(python, root)


def run_reference(env: ReferenceEnv, fx: GteFixture, out: Path, new_config: dict, enc) -> dict:
    """Make, save and run the fixture's model with the reference, in the scratch interpreter (this file's
    reference_main); returns its arrays (padded stages), its versions and why it has no sdpa."""
    with tempfile.TemporaryDirectory() as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.npz"
        core.write_json(request, {
            "reference_root": str(env.root), "out": str(out), "result": str(result), "seed": fx.seed,
            "storage_dtype": fx.storage_dtype, "config": new_config,
            "input_ids": enc["input_ids"].tolist(), "attention_mask": enc["attention_mask"].tolist()})
        subprocess.run([str(env.python), __file__, "--reference-run", str(request)], check=True)
        with np.load(result, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays.update(json.loads((Path(tmp) / "versions.json").read_text(encoding="utf-8")))
    return arrays


def reference_main(request_path: Path) -> None:
    """In the scratch interpreter: NewForSequenceClassification built, re-randomized, saved, read back and run."""
    torch.set_num_threads(1)  # the same reductions every run
    req = json.loads(request_path.read_text(encoding="utf-8"))
    sys.path.insert(0, req["reference_root"])
    import transformers
    from newimpl.configuration import NewConfig
    from newimpl.modeling import NewForSequenceClassification

    out = Path(req["out"])
    torch.manual_seed(req["seed"])  # construction draws from the global RNG; randomize_ re-draws everything
    built = NewForSequenceClassification(NewConfig(**req["config"])).eval()
    core.randomize_(built, req["seed"], "classifier")
    if req["storage_dtype"] == "float16":
        built.half()
    built.save_pretrained(out, safe_serialization=True)

    # Everything below is read back from disk, as minibert reads it: float32, eager attention.
    def load(attn_implementation):
        model = NewForSequenceClassification.from_pretrained(out, attn_implementation=attn_implementation,
                                                             dtype=torch.float32).eval()
        assert model.config._attn_implementation == attn_implementation and model.dtype == torch.float32
        return model

    eager = load("eager")
    fresh = NewForSequenceClassification(NewConfig.from_pretrained(out)).eval()  # buffers as __init__ computes them
    buffers_equal = all(torch.equal(b, dict(fresh.named_buffers())[n]) for n, b in eager.named_buffers())
    assert buffers_equal, "from_pretrained changed a non-persistent buffer (rotary tables, position ids)"
    enc = {"input_ids": torch.tensor(req["input_ids"]), "attention_mask": torch.tensor(req["attention_mask"])}
    captured = []
    hook = eager.classifier.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    with torch.no_grad():
        outputs = eager(**enc, output_hidden_states=True)
    hook.remove()
    try:
        load("sdpa")
        raise AssertionError("transformers now accepts sdpa for NewForSequenceClassification: check it against eager")
    except ValueError as exc:   # NewPreTrainedModel declares no _supports_sdpa: transformers refuses it
        sdpa = f"not available: {str(exc).splitlines()[0][:100]}"
    arrays = {f"hidden_{i}": h.numpy() for i, h in enumerate(outputs.hidden_states)}
    arrays.update(pooled=captured[0].numpy(), logits=outputs.logits.numpy(),
                  inv_freq=eager.new.embeddings.rotary_emb.inv_freq.numpy(), buffers_equal=np.array(buffers_equal))
    np.savez(req["result"], **arrays)
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    (Path(req["result"]).parent / "versions.json").write_text(json.dumps({"versions": versions, "sdpa": sdpa}),
                                                             encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# cross-checks: transformers 5's native GTE, and the rotary inverse frequencies


def native_rope_parameters(c: dict) -> dict:
    """The reference's rope as transformers 5's GteConfig says it: NTK (theta * f, then / f^(2 / HD)) is the
    "linear" rope type with factor f^(2 / HD) and theta * f, bitwise; no scaling is the default type."""
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    scaling = c.get("rope_scaling")
    if scaling is None:
        return {"rope_type": "default", "rope_theta": c["rope_theta"]}
    factor = scaling["factor"]
    return {"rope_type": "linear", "factor": factor ** (2 / head_dim), "rope_theta": c["rope_theta"] * factor}


def native_state_dict(tensors: dict, c: dict) -> dict:
    """new-impl's tensor names -> transformers 5 GteForSequenceClassification's (its conversion mapping's renames:
    qkv_proj split into q, k, v; up_gate_proj into up, gate; attn_ln, mlp_ln renamed), widened to float32."""
    I, out = c["intermediate_size"], {}
    for key, value in tensors.items():
        value = value.float()
        key = key.replace("new.", "gte.", 1).replace("encoder.layer.", "layers.")
        key = key.replace(".attn_ln.", ".post_attention_layernorm.").replace(".mlp_ln.", ".post_mlp_layernorm.")
        key = key.replace(".attention.", ".self_attn.")
        if key.endswith(("self_attn.qkv_proj.weight", "self_attn.qkv_proj.bias")):
            for name, part in zip("qkv", value.chunk(3, dim=0)):   # rows: query | key | value
                out[key.replace("qkv_proj", f"{name}_proj")] = part
        elif key.endswith("mlp.up_gate_proj.weight"):
            out[key.replace("up_gate_proj", "up_proj")], out[key.replace("up_gate_proj", "gate_proj")] = value[:I], value[I:]
        else:
            out[key] = value
    return out


def native_crosscheck(out: Path, enc, arrays: dict, head_stage: str) -> dict:
    """max |native transformers GTE - reference| per stage, on the same batch (packed over the valid tokens)."""
    from safetensors.torch import load_file
    from transformers import GteConfig, GteForSequenceClassification

    c = json.loads((out / "config.json").read_text(encoding="utf-8"))
    rope = native_rope_parameters(c)
    config = GteConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
        hidden_act=c["hidden_act"], max_position_embeddings=c["max_position_embeddings"],
        type_vocab_size=c["type_vocab_size"], layer_norm_eps=c["layer_norm_eps"], pad_token_id=c["pad_token_id"],
        num_labels=len(c["id2label"]), rope_parameters=rope, attn_implementation="eager")
    model = GteForSequenceClassification(config).eval()
    model.load_state_dict(native_state_dict(load_file(out / "model.safetensors"), c), strict=True)
    captured = []   # the classifier's input: the pooled stage
    hook = model.classifier.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    with torch.no_grad():
        outputs = model(**enc, output_hidden_states=True)
    hook.remove()
    native = core.pack(enc, list(outputs.hidden_states), head_stage, captured[0], outputs.logits)
    stages = [k for k in arrays if k not in ("lengths", "input_ids", "token_type_ids")]
    diffs = {k: float(np.abs(native[k] - arrays[k]).max()) for k in stages}
    return {"class": "GteForSequenceClassification", "transformers": core.transformers.__version__,
            "rope_parameters": rope, "max_abs_diff": diffs}


def inv_freq_ulps(c: dict, reference_inv_freq: np.ndarray) -> int:
    """How far the reference's float32 inv_freq is from minibert's (ops.rotary_tables' formula), in ulps."""
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    rope = native_rope_parameters(c)
    divisor = rope.get("factor", 1.0)
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    ours = np.float32(1.0) / np.float32(rope["rope_theta"]) ** exponents / np.float32(divisor)
    return int(np.max(np.abs(reference_inv_freq.view(np.int32) - ours.view(np.int32))))


FAMILY = Gte()

if __name__ == "__main__" and sys.argv[1:2] == ["--reference-run"]:
    reference_main(Path(sys.argv[2]))
