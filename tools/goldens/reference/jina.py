"""Runs jina-reranker-v2's own modeling code, in the scratch environment it needs, for tools/goldens/jina.py.

Not a spec (make.py imports only the modules next to core.py): tools/goldens/jina.py runs this file as a
subprocess with the scratch venv's python (transformers 4.57.6: the remote code does not import on
transformers 5), passing a job (JSON) and reading back a result (JSON) and the stages (.npz). It:

1. assembles the reference package in a temporary folder from the files of the job's manifest (each checked
   against its sha256 first; the substitutes get their recorded import edits, each of which must match once),
   next to a copy of the fixture's config.json, as a model repository holds them;
2. builds XLMRobertaForSequenceClassification from that config.json through the remote code
   (AutoConfig / get_class_from_dynamic_module, trust_remote_code), re-randomizes every parameter
   (core.randomize_) and writes the weights into the fixture in the job's format (pytorch_model.bin as
   torch.save'd bf16 or float32 parameters, or model.safetensors);
3. reads the model back as a user does, AutoModelForSequenceClassification.from_pretrained(..., trust_remote_code=True,
   torch_dtype=torch.float32), and runs the job's padded batch (input_ids, attention_mask: what the harness's
   tokenizer made) with hooks: emb_drop's output (embeddings), each encoder.layers[i]'s output, the input of
   classifier.out_proj (head_dense), and the logits.

    /tmp/jina-ref/bin/python tools/goldens/reference/jina.py JOB.json RESULT.json
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

GOLDENS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(GOLDENS))  # core.randomize_: the harness's own re-randomization

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assemble(job: dict, into: Path) -> dict:
    """The reference files, checked and edited, under the names the modeling code imports them by."""
    src = Path(job["src"])
    used = {}
    for name, entry in job["files"].items():
        path = src / entry["local"]
        if not path.is_file():
            raise SystemExit(f"reference file missing: {path} ({entry['how']})")
        digest = sha256(path)
        if digest != entry["sha256"]:
            raise SystemExit(f"{path}: sha256 {digest}, the spec records {entry['sha256']} ({entry['how']})")
        text = path.read_text(encoding="utf-8")
        for old, new in entry.get("edits", ()):
            if text.count(old) != 1:
                raise SystemExit(f"{path}: edit {old!r} matches {text.count(old)} times, not once")
            text = text.replace(old, new)
        (into / name).write_text(text, encoding="utf-8")
        used[name] = {"sha256": digest, "edited": bool(entry.get("edits"))}
    return used


def save_weights(model: torch.nn.Module, out: Path, file: str, dtype: str) -> None:
    """The weights as the Hub repository stores them: pytorch_model.bin is torch.save of the parameters
    (OrderedDict, _rebuild_parameter, BFloat16Storage: the pickle imports the Hub lists for the real file)."""
    model = model.to(getattr(torch, dtype))
    if file == "pytorch_model.bin":
        torch.save(model.state_dict(keep_vars=True), out / file)
    elif file == "model.safetensors":
        from safetensors.torch import save_file
        save_file(OrderedDict((k, v.contiguous()) for k, v in model.state_dict().items()), out / file,
                  metadata={"format": "pt"})
    else:
        raise SystemExit(f"unknown weights file {file}")


def run(job: dict) -> dict:
    import core
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    torch.set_num_threads(1)
    fixture = Path(job["model_dir"])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_MODULES_CACHE"] = str(Path(tmp) / "modules")  # the remote code's copy stays scratch
        repo = Path(tmp) / "jina-reranker-v2"   # a model repository: its code, the fixture's config.json
        repo.mkdir()
        used = assemble(job, repo)
        shutil.copy(fixture / "config.json", repo / "config.json")

        # 1. build, re-randomize, write the weights into the fixture
        config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
        cls = get_class_from_dynamic_module("modeling_xlm_roberta.XLMRobertaForSequenceClassification", repo)
        torch.manual_seed(job["seed"])
        model = cls(config).eval()
        # randomize_ gives the word embeddings their own scale; this transformers cannot find them in remote code
        model.get_input_embeddings = lambda: model.roberta.embeddings.word_embeddings
        core.randomize_(model, job["seed"], job["logits_layer"])
        save_weights(model, fixture, job["weights"]["file"], job["weights"]["dtype"])

        # 2. read back as a user of the repository does, in float32
        shutil.copy(fixture / job["weights"]["file"], repo / job["weights"]["file"])
        model, info = AutoModelForSequenceClassification.from_pretrained(
            repo, trust_remote_code=True, torch_dtype=torch.float32, output_loading_info=True)  # as jina's README
        model.eval()
        assert not any(info.values()), info
        assert type(model).__module__.endswith("modeling_xlm_roberta"), type(model).__module__
        assert model.dtype == torch.float32 and not model.training

        # 3. the padded batch, with every stage captured
        enc = {k: torch.tensor(job[k], dtype=torch.int64) for k in ("input_ids", "attention_mask")}
        captured = {}
        base = model.roberta
        hooks = [base.emb_drop.register_forward_hook(lambda m, a, out: captured.__setitem__("embeddings", out))]
        for i, layer in enumerate(base.encoder.layers):
            hooks.append(layer.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(f"layer_{i}", out)))
        head = model.get_submodule(job["head_module"])
        hooks.append(head.register_forward_pre_hook(lambda m, a: captured.__setitem__(job["head_stage"], a[0])))
        try:
            with torch.no_grad():
                logits = model(**enc).logits
        finally:
            for hook in hooks:
                hook.remove()
        captured["logits"] = logits
        np.savez(job["stages_out"], **{k: v.numpy().astype(np.float32) for k, v in captured.items()})

        # the same pairs through this transformers' own tokenizer: the token ids the reference's users get
        tokenizer = transformers.AutoTokenizer.from_pretrained(fixture)
        pairs = job["pairs"]
        theirs = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                           max_length=job["max_length"])
        same_ids = theirs["input_ids"] == job["input_ids"] and theirs["attention_mask"] == job["attention_mask"]

        return {
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "transformers": transformers.__version__, "einops": _version("einops"),
                         "numpy": np.__version__},
            "model_class": f"{type(model).__module__.rsplit('.', 1)[-1]}.{type(model).__name__}",
            "files": used,
            "loading_info": {k: sorted(v) for k, v in info.items()},
            "token_ids_equal_in_reference_env": same_ids,
            "tokenizer_class_in_reference_env": type(tokenizer).__name__,
        }


def _version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    job_path, result_path = map(Path, sys.argv[1:3])
    result = run(json.loads(job_path.read_text(encoding="utf-8")))
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
