"""jina-reranker-v2 goldens: XLM-RoBERTa maths in the model repository's own flash-attention code
(jinaai/jina-reranker-v2-base-multilingual: modeling_xlm_roberta.py and the modules it imports), which
transformers does not contain and which does not import on transformers 5. So the reference runs in a
scratch environment of its own, never in the project: tools/goldens/reference/jina.py, started by this spec
with that environment's python, builds the model from the fixture's config.json through the remote code,
re-randomizes every parameter (LayerNorms too), writes the weights, reads them back with
from_pretrained(trust_remote_code=True, torch_dtype=torch.float32) and captures every stage.

- jina-bf16-bin: the Hub's config.json layout (no model_type; auto_map to configuration_xlm_roberta
  .XLMRobertaFlashConfig), one label, weights torch.save'd in bfloat16 as pytorch_model.bin (as the Hub's
  562 MB file), 66 positions: the default max_length is 64 (model_max_length 1024, as jina's), and several
  pairs are cut to it.
- jina-f32-safetensors: three named labels, float32 model.safetensors, a config.json that leaves out
  layer_norm_eps, type_vocab_size and hidden_act (XLMRobertaFlashConfig's defaults: 1e-12, 2 and "gelu"),
  head size 4; max_length 40.
Both: head size a power of 4 (16, 4), so that the reference's key pre-scaling by 1/sqrt(HD) is exact; a
"<pad>" token inside pairs (RoBERTa's numbering skips it); the tokenizer is XLM-R's kind (a SentencePiece
Unigram with a Precompiled charsmap, no Lowercase trap: transformers 4 and 5 must read it alike, and the
reference environment's own tokenizer is checked to give the harness's ids).

Cross-check (golden.json "checks"): the same weights renamed into transformers' own
XLMRobertaForSequenceClassification (Wqkv split into query, key, value; the renames vLLM serves this model
with), eager, float32: every stage within ATOL of the reference, max |diff| recorded.

The reference, and how to make its environment (REFERENCE below records each file's origin, size, sha256):

    python3 -m venv /tmp/jina-ref
    /tmp/jina-ref/bin/pip install torch==2.13.0 'transformers==4.57.6' 'huggingface-hub<1.0' \\
        'tokenizers<=0.23.0' einops safetensors numpy
    # the model repository's three files, into /tmp/jina-ref/src/ (from the Hub repository, or by their
    # code-index ids), then flash-attention's four modules the repository adapts, at abbc1311:
    python tools/goldens/jina.py --upstream PATH/TO/flash-attention   # a git clone with that commit

JINA_REFERENCE_PYTHON and JINA_REFERENCE_SRC override /tmp/jina-ref/bin/python and /tmp/jina-ref/src.
Without them, make.py says NOT WRITTEN / NOT CHECKED for these fixtures and fails (core.ReferenceUnavailable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import core
import numpy as np
import roberta
import torch
from tokenizers import normalizers
from transformers import (
    AutoTokenizer,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

SEED = 20261301
PAD_ID = 1
RUNNER = Path(__file__).resolve().parent / "reference" / "jina.py"
PYTHON = Path(os.environ.get("JINA_REFERENCE_PYTHON", "/tmp/jina-ref/bin/python"))
SRC = Path(os.environ.get("JINA_REFERENCE_SRC", "/tmp/jina-ref/src"))
HUB = "jinaai/jina-reranker-v2-base-multilingual"
FLASH_ATTENTION = "Dao-AILab/flash-attention"
FLASH_COMMIT = "abbc1311731867310635f9edc2a9ec18317c8c48"  # the commit modeling_xlm_roberta.py says it adopts
STOCHASTIC_DEPTH = '''class StochasticDepth(nn.Module):
    """Substituted for torchvision.ops.StochasticDepth (jina's block.py inlines torchvision's): the identity in
    eval mode, or with p = 0."""

    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input):
        assert not self.training or self.p == 0.0, "the reference runs in eval mode"
        return input
'''

# The reference: each file under the name modeling_xlm_roberta.py imports it by, where it came from, and the
# exact bytes used (sha256 of the file in SRC before any edit).
REFERENCE = {
    "configuration_xlm_roberta.py": {
        "local": "configuration_xlm_roberta.py", "status": "the model repository's file",
        "origin": {"repository": f"huggingface.co/{HUB}", "path": "configuration_xlm_roberta.py",
                   "url": f"https://huggingface.co/{HUB}/raw/main/configuration_xlm_roberta.py",
                   "code_index_id": "14050025355"},
        "size": 2728, "sha256": "d107ec206af5ff360a659e69332aeea072e1a67929b4d6bbf08c629d43cc1656",
        "identity": "the code index's copy; its size is the Hub's (2.73 kB); byte identity with the Hub not verified",
    },
    "modeling_xlm_roberta.py": {
        "local": "modeling_xlm_roberta.py", "status": "the model repository's file",
        "origin": {"repository": f"huggingface.co/{HUB}", "path": "modeling_xlm_roberta.py",
                   "url": f"https://huggingface.co/{HUB}/raw/main/modeling_xlm_roberta.py",
                   "code_index_id": "14189768850"},
        "size": 43806, "sha256": "a7010dc6bc774efe88c86cc910041610dcacfb7eee5f159aa3ca930c1aa1f2b9",
        "identity": "the code index's copy (with compute_score / rerank, the reranker's); its size is the Hub's "
                    "(43.8 kB since 1d1bb09 'fix: add missing module'); byte identity with the Hub not verified",
    },
    "embedding.py": {
        "local": "embedding.py", "status": "the model repository's file",
        "origin": {"repository": f"huggingface.co/{HUB}", "path": "embedding.py",
                   "url": f"https://huggingface.co/{HUB}/raw/main/embedding.py", "code_index_id": "14887155644"},
        "size": 2557, "sha256": "321d10722fa6eb59ab65a5e4a2b453e92d19b71b9ac280ab0cce16a53862f22f",
        "identity": "the code index's copy; its size is the Hub's (2.56 kB); byte identity with the Hub not verified",
    },
    "mha.py": {
        "local": "flash_attn/mha.py", "status": "SUBSTITUTE for the repository's mha.py (28 kB, not found)",
        "origin": {"repository": f"github.com/{FLASH_ATTENTION}", "commit": FLASH_COMMIT,
                   "path": "flash_attn/modules/mha.py", "git_blob": "144aa481ec77376be0700a110c9d00a24dd91212"},
        "size": 42211, "sha256": "d90f342083bc086b724f3c076e2f1814839ea270c27c63a591d4bb47e92ec005",
        "identity": "upstream's module, which the repository's adapts (its CPU path, SelfAttention and MHA without "
                    "flash_attn, is the same from abbc1311 to 320fb594, the last commit before the repository's "
                    "upload); the edit drops an import only ParallelMHA uses",
        "edits": [["from flash_attn.utils.distributed import get_dim_for_local_rank\n",
                   "get_dim_for_local_rank = None  # substituted: only ParallelMHA (tensor parallel) uses it\n"]],
    },
    "mlp.py": {
        "local": "flash_attn/mlp.py", "status": "SUBSTITUTE for the repository's mlp.py (6.21 kB, not found)",
        "origin": {"repository": f"github.com/{FLASH_ATTENTION}", "commit": FLASH_COMMIT,
                   "path": "flash_attn/modules/mlp.py", "git_blob": "23584d3098a245bcb2b09653bdf0f426eb63bde2"},
        "size": 6033, "sha256": "1ba28f41a81f2aad43467ee1411277387ce71492d91e3fcf8a275913fcdc2e08",
        "identity": "upstream's module, unedited (Mlp: fc1, activation, fc2)",
    },
    "block.py": {
        "local": "flash_attn/block.py", "status": "SUBSTITUTE for the repository's block.py (19.7 kB, not found)",
        "origin": {"repository": f"github.com/{FLASH_ATTENTION}", "commit": FLASH_COMMIT,
                   "path": "flash_attn/modules/block.py", "git_blob": "be8e8b864b600220068c2ec16aba5e2f1a81c121"},
        "size": 17349, "sha256": "58b8bb24a8fdfd9a64f3da69cc2ed64c8a3290927b4cb3896d449978f3675b51",
        "identity": "upstream's module (Block, prenorm=False: the post-LN path); the edits make its imports "
                    "relative, as the repository's are, and replace torchvision's StochasticDepth (the repository's "
                    "current block.py inlines it) by the identity it is in eval mode",
        "edits": [["from torchvision.ops import StochasticDepth\n", STOCHASTIC_DEPTH],
                  ["from flash_attn.modules.mha import MHA\n", "from .mha import MHA\n"],
                  ["from flash_attn.modules.mlp import Mlp\n", "from .mlp import Mlp\n"]],
    },
    "xlm_padding.py": {
        "local": "flash_attn/bert_padding.py", "status": "SUBSTITUTE for the repository's xlm_padding.py (not found)",
        "origin": {"repository": f"github.com/{FLASH_ATTENTION}", "commit": FLASH_COMMIT,
                   "path": "flash_attn/bert_padding.py", "git_blob": "eff42c9d674aeda98e0cbe6f423869e20538c4ba"},
        "size": 9124, "sha256": "2cadf665e8cbe0784048f50c41907beaf81525417eef39f15657396db2d68593",
        "identity": "upstream's module, unedited; used only on the flash-attention path (unpad), not on CPU",
    },
}
REFERENCE_LABEL = (f"jina-reranker-v2's remote code: {HUB}'s configuration_xlm_roberta.py, modeling_xlm_roberta.py "
                   f"and embedding.py (size-matched copies) with SUBSTITUTES for mha.py, mlp.py, block.py and "
                   f"xlm_padding.py: {FLASH_ATTENTION}'s modules at {FLASH_COMMIT[:8]}, import edits only")

# The Hub config.json's keys, in its order (67b96c4, unchanged since), with the fixture's values where they differ.
HUB_CONFIG = {
    "architectures": ["XLMRobertaForSequenceClassification"], "attention_probs_dropout_prob": 0.1,
    "auto_map": {"AutoConfig": "configuration_xlm_roberta.XLMRobertaFlashConfig",
                 "AutoModel": "modeling_xlm_roberta.XLMRobertaModel",
                 "AutoModelForSequenceClassification": "modeling_xlm_roberta.XLMRobertaForSequenceClassification"},
    "bos_token_id": 0, "classifier_dropout": None, "emb_pooler": None, "eos_token_id": 2, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "num_labels": 1, "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02, "intermediate_size": 3072, "label2id": {"LABEL_0": 0}, "layer_norm_eps": 1e-5,
    "max_position_embeddings": 1026, "num_attention_heads": 12, "num_hidden_layers": 12, "output_past": True,
    "pad_token_id": PAD_ID, "position_embedding_type": "absolute", "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0", "type_vocab_size": 1, "use_cache": False, "use_flash_attn": True,
    "vocab_size": 250002,
}

topic = core.topic
PAIRS_RANK = [
    ("how do I define a function?", "A function definition defines a user-defined function object."),
    ("how do I define a function?", "The for statement is used to iterate over the elements of a sequence."),
    ("how do I define a function?", "Functions are defined with the def keyword, a name and parameters."),
    ("how do I define a function?", "Raising an exception with the raise statement."),
    (topic("if", 0, 400), topic("while", 0, 400)),            # both sides longer than max_length
    ("what is a lambda?", topic("lambda", 0, 400)),           # only the passage is cut
    (topic("try", 0, 300), topic("try", 0, 300)),             # a longest_first tie
    # a "<pad>" inside, an empty query, an empty passage, CJK, full-width and combining marks, "<mask>"
    *(roberta.COMMON_PAIRS[i] for i in (0, 1, 2, 5, 7, 11)),
]


@dataclass(frozen=True, kw_only=True)
class JinaFixture(core.Fixture):
    weights_file: str                 # "pytorch_model.bin" or "model.safetensors"
    weights_dtype: str                # "bfloat16" or "float32": how the weights are stored
    omit: tuple[str, ...] = ()        # Hub config.json keys left out (XLMRobertaFlashConfig's defaults apply)


class Jina(core.Family):
    head = core.Head("head_dense", "classifier.out_proj", reads=True)
    logits_layer = "classifier.out_proj"
    fixtures = (
        JinaFixture(
            name="jina-bf16-bin", seed=SEED + 1, weights_file="pytorch_model.bin", weights_dtype="bfloat16",
            model_max_length=1024,
            config=dict(hidden_size=32, num_attention_heads=2, intermediate_size=37, num_hidden_layers=2,
                        max_position_embeddings=66, layer_norm_eps=1e-5, num_labels=1),
            pairs=PAIRS_RANK, rank_groups=[[0, 1, 2, 3]], tokenizer_case_lengths=(None, 5, 9, 17),
        ),
        JinaFixture(
            name="jina-f32-safetensors", seed=SEED + 2, weights_file="model.safetensors", weights_dtype="float32",
            model_max_length=1024, max_length_arg=40, omit=("layer_norm_eps", "type_vocab_size", "hidden_act"),
            config=dict(hidden_size=20, num_attention_heads=5, intermediate_size=29, num_hidden_layers=3,
                        max_position_embeddings=130, num_labels=3,
                        id2label={"0": "contradiction", "1": "entailment", "2": "neutral"},
                        label2id={"contradiction": 0, "entailment": 1, "neutral": 2}),
            pairs=roberta.PAIRS_XLMR, tokenizer_case_lengths=(None, 7, 24),
        ),
    )

    def max_tokens(self, fx: JinaFixture) -> int:
        return fx.config["max_position_embeddings"] - PAD_ID - 1  # positions count from pad_token_id + 1

    def write_tokenizer(self, fx: JinaFixture, out: Path) -> dict[str, int]:
        """XLM-R's kind, as the repository's: a Unigram whose normalizer is a Precompiled charsmap alone."""
        tok, specials, tc = roberta.unigram_tokenizer(camembert=False)
        tok.normalizer = normalizers.Precompiled(core.precompiled_charsmap(roberta.CHARSMAP_RULES))
        tc["model_max_length"] = fx.model_max_length
        tc["added_tokens_decoder"] = {
            str(tok.token_to_id(t.content)): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                              "rstrip": t.rstrip, "single_word": t.single_word, "special": True}
            for t in specials}
        core.write_json(out / "tokenizer_config.json", tc)
        (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
        return tok.get_vocab(with_added_tokens=True)

    def hub_config(self, fx: JinaFixture, vocab: dict[str, int]) -> dict:
        config = {**HUB_CONFIG, **fx.config, "vocab_size": len(vocab), "torch_dtype": fx.weights_dtype}
        assert set(config) == set(HUB_CONFIG), sorted(set(config) - set(HUB_CONFIG))
        return {k: config[k] for k in HUB_CONFIG if k not in fx.omit}

    def build(self, fx: JinaFixture, out: Path) -> None:
        missing = reference_missing()
        if missing:
            raise core.ReferenceUnavailable(missing)
        core.fresh_dir(out)
        vocab = self.write_tokenizer(fx, out)
        config = self.hub_config(fx, vocab)
        core.write_json(out / "config.json", config)

        hf_tok = AutoTokenizer.from_pretrained(out, trust_remote_code=False)  # the tokenizer is stock; the config is not
        max_length = core.effective_max_length(self, fx, fx.max_length_arg)
        enc = core.hf_encode(hf_tok, fx.pairs, max_length)
        assert "token_type_ids" not in enc, "XLMRobertaTokenizer gives the model no token type ids"
        result, stages = run_reference(self, fx, out, enc, max_length)
        assert result["token_ids_equal_in_reference_env"], "transformers 4.57.6 tokenizes the pairs otherwise"

        L = fx.config["num_hidden_layers"]
        hidden = [torch.from_numpy(stages["embeddings"])] + [torch.from_numpy(stages[f"layer_{i}"]) for i in range(L)]
        arrays = core.pack(enc, hidden, self.head.stage, torch.from_numpy(stages[self.head.stage]),
                           torch.from_numpy(stages["logits"]))
        names = ["embeddings", *(f"layer_{i}" for i in range(L)), self.head.stage, "logits"]
        renamed = crosscheck_xlm_roberta(out, fx, config, enc, arrays, names, self.head)
        core.write_npz(out / "golden.npz", arrays)
        mask = enc["attention_mask"].bool()
        tokens = [hf_tok.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(enc["input_ids"], mask)]
        pads = sum(int((row[m] == PAD_ID).sum()) for row, m in zip(enc["input_ids"], mask))
        core.write_json(out / "golden.json", {
            **core.provenance(fx, "model", self.generator),
            "architecture": "XLMRobertaForSequenceClassification (remote code, auto_map)",
            "reference": reference_block(result),
            "attn_implementation": "the remote code's CPU path (SelfAttention: -10000 mask, keys pre-scaled)",
            "dtype": "float32 (from_pretrained(torch_dtype=torch.float32) of weights stored in "
                     f"{fx.weights_dtype}, {fx.weights_file})",
            "checks": {"reference_env_token_ids_equal": result["token_ids_equal_in_reference_env"],
                       "transformers_xlm_roberta_renamed_vs_golden_max_abs_diff": renamed},
            "config": config,
            "tokenizer": {"class": type(hf_tok).__name__, "files": core.tokenizer_files(out),
                          "model_max_length": fx.model_max_length},
            "stages": names,
            "max_length_arg": fx.max_length_arg,
            "max_length": max_length,
            "tokenization": core.TOKENIZATION,
            "tolerance": {"atol": core.ATOL, "rtol": core.RTOL},
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
            "pairs": [list(p) for p in fx.pairs],
            "tokens": tokens,
            "pad_tokens_inside_pairs": pads,
            "rank_groups": fx.rank_groups,
            "rank_group_min_margin": core.rank_margins(fx, arrays["logits"]),
            "tokenizer_cases": core.tokenizer_cases(self, fx, hf_tok),
        })
        lengths = mask.sum(1)
        worst = max(renamed.values())
        print(f"{fx.name}: {result['model_class']} (remote code, transformers {result['versions']['transformers']}) "
              f"+ {type(hf_tok).__name__}, B={len(lengths)} N={int(lengths.sum())} max_length={max_length} "
              f"({int((lengths == max_length).sum())} at the limit, {pads} <pad> inside), weights "
              f"{fx.weights_dtype} {fx.weights_file}; stock XLM-R on the renamed weights within {worst:.1e}")


# ----------------------------------------------------------------------------------------------
# the reference environment


def reference_missing() -> str | None:
    """What is missing to run the reference here, with how to get it; None when nothing is."""
    if not PYTHON.is_file():
        return (f"no python at {PYTHON} (JINA_REFERENCE_PYTHON): make the scratch venv as tools/goldens/jina.py's "
                "docstring says (transformers 4.57.6, einops)")
    problems = []
    for entry in REFERENCE.values():
        path = SRC / entry["local"]
        if not path.is_file():
            problems.append(f"{path} missing ({how(entry)})")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{path} is not the recorded file (sha256 {entry['sha256'][:12]}...; {how(entry)})")
    return "; ".join(problems) or None


def how(entry: dict) -> str:
    o = entry["origin"]
    if "commit" in o:
        return f"git show {o['commit']}:{o['path']} in a clone of {o['repository']}, or python tools/goldens/jina.py --upstream"
    return f"{o['url']}, or the code index's file {o['code_index_id']}"


def run_reference(family: Jina, fx: JinaFixture, out: Path, enc: dict, max_length: int) -> tuple[dict, dict]:
    """The scratch environment's run: the weights written into `out`, the result and the padded stages."""
    with tempfile.TemporaryDirectory() as tmp:
        job = {
            "src": str(SRC), "files": {name: {**e, "how": how(e)} for name, e in REFERENCE.items()},
            "model_dir": str(out), "seed": fx.seed, "logits_layer": family.logits_layer,
            "head_module": family.head.module, "head_stage": family.head.stage,
            "weights": {"file": fx.weights_file, "dtype": fx.weights_dtype},
            "input_ids": enc["input_ids"].tolist(), "attention_mask": enc["attention_mask"].tolist(),
            "pairs": [list(p) for p in fx.pairs], "max_length": max_length,
            "stages_out": str(Path(tmp) / "stages.npz"),
        }
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.run([str(PYTHON), str(RUNNER), str(job_path), str(result_path)], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"the reference run failed ({PYTHON} {RUNNER}):\n{proc.stdout}\n{proc.stderr}")
        with np.load(job["stages_out"]) as npz:
            stages = {k: npz[k] for k in npz.files}
        return json.loads(result_path.read_text(encoding="utf-8")), stages


def reference_block(result: dict) -> dict:
    """golden.json's account of where the numbers come from."""
    files = {}
    for name, entry in REFERENCE.items():
        assert result["files"][name]["sha256"] == entry["sha256"]
        files[name] = {k: entry[k] for k in ("status", "origin", "size", "sha256", "identity")}
        files[name]["edits"] = [{"replace": old, "with": new} for old, new in entry.get("edits", ())]
    return {"label": REFERENCE_LABEL, "runner": "tools/goldens/reference/jina.py",
            "model_class": result["model_class"], "environment": result["versions"],
            "loaded_with": "AutoModelForSequenceClassification.from_pretrained(<fixture + the files below>, "
                           "trust_remote_code=True, torch_dtype=torch.float32), eval mode, CPU",
            "loading_info": result["loading_info"], "files": files}


# ----------------------------------------------------------------------------------------------
# the cross-check: transformers' own XLM-RoBERTa on the same weights, renamed


# jina name -> XLM-R name, per layer, as vLLM's jina_to_vllm_mapper renames them (Wqkv is split, [q; k; v])
LAYER_RENAMES = {"mixer.out_proj": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                 "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "norm2": "output.LayerNorm"}


def renamed_state(state: dict[str, torch.Tensor], H: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        value = value.float()
        layer = re.fullmatch(r"roberta\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if key.startswith("roberta.emb_ln."):
            out[key.replace("roberta.emb_ln.", "roberta.embeddings.LayerNorm.")] = value
        elif layer and layer[2] == "mixer.Wqkv":
            for part, chunk in zip(("query", "key", "value"), value.split(H)):
                out[f"roberta.encoder.layer.{layer[1]}.attention.self.{part}.{layer[3]}"] = chunk
        elif layer:
            out[f"roberta.encoder.layer.{layer[1]}.{LAYER_RENAMES[layer[2]]}.{layer[3]}"] = value
        else:
            out[key] = value
    return out


def read_weights(out: Path, fx: JinaFixture) -> dict[str, torch.Tensor]:
    if fx.weights_file == "pytorch_model.bin":
        return torch.load(out / fx.weights_file, map_location="cpu", weights_only=True)
    from safetensors.torch import load_file
    return load_file(out / fx.weights_file)


def crosscheck_xlm_roberta(out: Path, fx: JinaFixture, config: dict, enc: dict, arrays: dict, names: list,
                           head: core.Head) -> dict[str, float]:
    """max |transformers' XLMRobertaForSequenceClassification - reference| per stage, held to ATOL."""
    c = {"layer_norm_eps": 1e-12, "type_vocab_size": 2, "hidden_act": "gelu", **config}
    xlmr = XLMRobertaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
        hidden_act=c["hidden_act"], max_position_embeddings=c["max_position_embeddings"],
        type_vocab_size=c["type_vocab_size"], layer_norm_eps=c["layer_norm_eps"], pad_token_id=c["pad_token_id"],
        id2label={int(k): v for k, v in c["id2label"].items()})
    model = XLMRobertaForSequenceClassification(xlmr).eval()
    model.load_state_dict(renamed_state(read_weights(out, fx), c["hidden_size"]), strict=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        model = core.load_model(Path(tmp), "eager")
    hidden, stage, logits = core.run_model(model, dict(enc), head)
    theirs = core.pack(enc, hidden, head.stage, stage, logits)
    diffs = {name: float(np.abs(theirs[name] - arrays[name]).max()) for name in names}
    assert max(diffs.values()) <= core.ATOL, f"{fx.name}: stock XLM-R differs from the reference: {diffs}"
    return diffs


def upstream(flash_attention: Path) -> None:
    """Write flash-attention's four modules, at FLASH_COMMIT, into SRC (from a git clone of it)."""
    for entry in REFERENCE.values():
        o = entry["origin"]
        if "commit" not in o:
            continue
        data = subprocess.run(["git", "-C", str(flash_attention), "show", f"{o['commit']}:{o['path']}"],
                              check=True, capture_output=True).stdout
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], o["path"]
        (SRC / entry["local"]).parent.mkdir(parents=True, exist_ok=True)
        (SRC / entry["local"]).write_bytes(data)
        print(f"wrote {SRC / entry['local']} ({len(data)} bytes, {o['path']} at {o['commit'][:8]})")


FAMILY = Jina()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Put flash-attention's modules of the jina reference into "
                                                 f"{SRC} (JINA_REFERENCE_SRC).")
    parser.add_argument("--upstream", type=Path, required=True, metavar="FLASH_ATTENTION_GIT_DIR")
    upstream(parser.parse_args().upstream)
    sys.exit(0)
