"""Traces made by minibert itself, and captured from transformers or from sentence-transformers, in the
trace format (trace.py).

trace_from_transformers and trace_from_sentence_transformers need the `golden` extra (torch,
transformers, sentence-transformers); minibert itself never imports torch, so it is imported when
they run.
"""

import numpy as np

from minibert.errors import InputError
from minibert.formats.safetensors import write_safetensors
from minibert.models import find_family, forward
from minibert.models.batch import Batch
from minibert.ops import NUMPY
from minibert.oracle.trace import FORMAT, INPUTS, write_trace


def trace_with_minibert(ce, pairs, path, layout: str = "packed") -> None:
    """minibert's own trace of `pairs` (CrossEncoder `ce`), every stage, reference ops."""
    if not len(pairs):
        raise InputError("no pairs to trace")
    batch = Batch.pack(ce.tokenizer.encode_pairs(pairs))
    _, stages = forward(ce.params, ce.config, batch, NUMPY, return_stages=True)
    write_trace(path, stages, batch, layout, producer="minibert", model=str(ce.path),
                pad_token_id=ce.config.pad_token_id or 0, token_types=ce.tokenizer.token_types)


def trace_from_transformers(model, tokenizer, pairs, path, layout: str = "padded", max_length=None) -> None:
    """A trace of `pairs` by a transformers *ForSequenceClassification (eval mode) and its tokenizer.

    Needs the `golden` extra (torch, transformers). Tokenized as sentence-transformers' CrossEncoder does
    (padding=True, truncation="longest_first"); stages: hidden_states[0] -> embeddings,
    hidden_states[i + 1] -> layer_i, the family's head stage (the input of its Family.head_module), logits.
    """
    import torch  # the golden extra; minibert itself never imports torch

    pairs = [tuple(p) for p in pairs]
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                    max_length=max_length, return_tensors="pt")
    captured, hooks = {}, []
    family = find_family(model.config.model_type)
    if family is not None:
        module = model.get_submodule(family.head_module)
        hooks.append(module.register_forward_pre_hook(
            lambda mod, inp: captured.__setitem__(family.head_stage, inp[0])))
    model.eval()
    try:
        with torch.no_grad():
            out = model(**enc.to(model.device), output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    tensors = {name: enc[name].cpu().numpy().astype(np.int64) for name in INPUTS if name in enc}
    stages = {"embeddings": out.hidden_states[0]}
    stages.update({f"layer_{i}": h for i, h in enumerate(out.hidden_states[1:])})
    stages.update(captured)
    stages["logits"] = out.logits
    tensors.update({name: value.float().cpu().numpy() for name, value in stages.items()})
    _write_captured(path, tensors, layout, f"transformers {_version('transformers')}",
                    str(getattr(model.config, "_name_or_path", "") or model.config.model_type))


def _write_captured(path, tensors: dict, layout: str, producer: str, model: str) -> None:
    """Write a captured padded batch (inputs and stages [B, T, ...] / [B, X]) as a trace, packed if asked."""
    if layout == "packed":
        mask = tensors.pop("attention_mask").astype(bool)                    # [B, T]
        lengths = mask.sum(axis=1)
        for name in tensors:
            if name in INPUTS or tensors[name].ndim == 3:                    # [B, T, ...] -> [N, ...]
                tensors[name] = tensors[name][mask]
        tensors = {"input_ids": tensors.pop("input_ids"),
                   "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), **tensors}
    write_safetensors(path, tensors, {"format": FORMAT, "layout": layout, "producer": producer, "model": model})


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def trace_from_sentence_transformers(model, pairs, path, layout: str = "padded") -> None:
    """A trace of `pairs` by a sentence-transformers CrossEncoder whose Transformer (feature-extraction) is
    followed by modules (modules.json: Pooling, Dense, LayerNorm, ...): the encoder's hidden states, each
    module's output named by its folder as minibert names the stage ("1_Pooling", "2_Dense", ...), and the
    scores as `logits`, before any activation. Needs torch and sentence-transformers.
    """
    import torch  # as trace_from_transformers: the golden extra

    pairs = [tuple(p) for p in pairs]
    model.eval()
    features = model.preprocess(pairs)
    inputs = {name: features[name] for name in INPUTS if name in features}
    folders = [module_folder(model, i) for i in range(len(model))]
    outputs, hooks = {}, []
    def keep(i, out):   # every module writes into one feature dict: copy its output as it is made
        key = "scores" if "scores" in out else "sentence_embedding"
        outputs[i] = ("logits" if key == "scores" else folders[i], out[key].clone())

    for i in range(1, len(model)):
        hooks.append(model[i].register_forward_hook(lambda mod, inp, out, i=i: keep(i, out)))
    try:
        with torch.no_grad():
            hidden = model[0].model(**inputs, output_hidden_states=True).hidden_states
            model(features)
    finally:
        for hook in hooks:
            hook.remove()
    stages = {"embeddings": hidden[0], **{f"layer_{i}": h for i, h in enumerate(hidden[1:])}}
    stages.update(dict(outputs[i] for i in sorted(outputs)))
    tensors = {name: value.cpu().numpy().astype(np.int64) for name, value in inputs.items()}
    tensors.update({name: value.float().cpu().numpy() for name, value in stages.items()})
    _write_captured(path, tensors, layout, f"sentence-transformers {_version('sentence_transformers')}",
                    str(getattr(model[0].model.config, "_name_or_path", "")))


def module_folder(model, index: int) -> str:
    """The folder sentence-transformers saves module `index` of `model` in ("1_Pooling"): minibert's stage name."""
    return "" if index == 0 else f"{index}_{type(model[index]).__name__}"
