"""Traces made by minibert itself, and captured from transformers or from sentence-transformers, in the
trace format (trace.py).

trace_from_transformers and trace_from_sentence_transformers need the `golden` extra (torch,
transformers, sentence-transformers); minibert itself never imports torch, so it is imported when
they run.

A decoder reranker (a Family with decoder=True: Qwen3's *ForSequenceClassification, or its *ForCausalLM scored
from the logits of a few tokens as sentence-transformers' LogitScore scores it) is captured on its chat
conversations, right-padded: causal attention never lets a real token see the padding after it, so every stage
of every real token is the unpadded pair's.
"""

import numpy as np

from minibert.errors import InputError
from minibert.formats.chat import PAIR_ROLES
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


def trace_from_transformers(model, tokenizer, pairs, path, layout: str = "padded", max_length=None, *,
                            prompt: str | None = None, score_tokens=None) -> None:
    """A trace of `pairs` by a transformers *ForSequenceClassification (eval mode) and its tokenizer.

    Needs the `golden` extra (torch, transformers). Tokenized as sentence-transformers' CrossEncoder does
    (padding=True, truncation="longest_first"); stages: hidden_states[0] -> embeddings,
    hidden_states[i + 1] -> layer_i, the family's head stage (the input of its Family.head_module), logits.

    A decoder reranker's family (Family.decoder) is traced by trace_decoder: `prompt` (its system message) and
    `score_tokens` (a *ForCausalLM's) are for it alone.
    """
    import torch  # the golden extra; minibert itself never imports torch

    family = find_family(model.config.model_type)
    if family is not None and family.decoder:
        return trace_decoder(model, tokenizer, pairs, path, layout, max_length, prompt=prompt,
                             score_tokens=score_tokens)
    if prompt is not None or score_tokens is not None:
        raise InputError("prompt and score_tokens are a decoder reranker's; this model is an encoder")
    pairs = [tuple(p) for p in pairs]
    enc = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="longest_first",
                    max_length=max_length, return_tensors="pt")
    captured, hooks = {}, []
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


def trace_decoder(model, tokenizer, pairs, path, layout: str = "padded", max_length=None, *,
                  prompt: str | None = None, score_tokens=None) -> None:
    """A trace of `pairs` by a decoder reranker in transformers (eval mode): a *ForSequenceClassification, or a
    *ForCausalLM scored from the logits of `score_tokens` at each pair's last token.

    Each pair is the conversation sentence-transformers makes of it (a `prompt` as a "system" message, then the
    roles "query" and "document", flat text), rendered by the tokenizer's own apply_chat_template without the
    generation prompt and tokenized as it is (no special tokens added). A conversation longer than max_length is
    an InputError: cutting one as sentence-transformers does (the template's tail written back over its end) is
    sentence-transformers' own step, which trace_from_sentence_transformers captures.
    Stages: hidden_states[0] -> embeddings, hidden_states[i + 1] -> layer_i (the last after the final norm), the
    family's head stage (the last layer at the row the head reads: a *ForSequenceClassification's last token
    that is not pad_token_id, as transformers picks it; a *ForCausalLM's last token), and the logits:
    the classifier's, or logit(true) - logit(false) of score_tokens = (true, false), or logit(true) of (true,).
    score_tokens=None: the tokens "yes" and "no", as sentence-transformers picks them for a bare *ForCausalLM.
    """
    import torch  # the golden extra

    family = find_family(model.config.model_type)
    ids = [_conversation_ids(tokenizer, tuple(pair), prompt, max_length, i) for i, pair in enumerate(pairs)]
    if not ids:
        raise InputError("no pairs to trace")
    lengths = torch.tensor([len(row) for row in ids])                                   # [B]
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), int(lengths.max())), pad, dtype=torch.long)        # [B, T], right-padded
    mask = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]                 # [B, T] real tokens
    input_ids[mask] = torch.tensor([t for row in ids for t in row])
    lm_head = model.get_output_embeddings()   # a *ForCausalLM's lm_head; None for a *ForSequenceClassification
    model.eval()
    with torch.no_grad():
        if lm_head is None:
            out = model(input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True)
            # transformers' sequence classification reads each row's last token that is not pad_token_id
            real = input_ids != model.config.pad_token_id if model.config.pad_token_id is not None else mask
            rows = (torch.arange(input_ids.shape[1]) * real).argmax(dim=1)            # [B]
            hidden, logits = out.hidden_states, out.logits                             # logits [B, L]
        else:
            out = model.get_decoder()(input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True)
            rows, hidden = lengths - 1, out.hidden_states
            tokens = _score_tokens(tokenizer, score_tokens)
            vocab = lm_head(hidden[-1][torch.arange(len(ids)), rows])[:, tokens]      # [B, H] -> [B, K]
            logits = vocab[:, :1] - vocab[:, 1:] if len(tokens) == 2 else vocab          # [B, 1]
    stages = {"embeddings": hidden[0], **{f"layer_{i}": h for i, h in enumerate(hidden[1:])},
              family.head_stage: hidden[-1][torch.arange(len(ids)), rows], "logits": logits}
    tensors = {"input_ids": input_ids.numpy(), "attention_mask": mask.long().numpy()}
    tensors.update({name: value.float().cpu().numpy() for name, value in stages.items()})
    _write_captured(path, tensors, layout, f"transformers {_version('transformers')}",
                    str(getattr(model.config, "_name_or_path", "") or model.config.model_type))


def _conversation_ids(tokenizer, pair, prompt, max_length, index) -> list[int]:
    """One pair's token ids: its conversation rendered by transformers' apply_chat_template, tokenized as it is."""
    if not (len(pair) == 2 and all(isinstance(text, str) for text in pair)):
        raise InputError(f"pair {index}: expected (query, document) strings, found {pair!r}")
    system = [{"role": "system", "content": prompt}] if prompt else []
    messages = system + [{"role": role, "content": text} for role, text in zip(PAIR_ROLES, pair)]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_length is not None and len(ids) > max_length:
        raise InputError(f"pair {index}: its conversation is {len(ids)} tokens, more than max_length {max_length}; "
                         "trace_from_transformers does not cut a decoder's conversation (sentence-transformers writes "
                         "the template's tail back over a cut one: trace it with trace_from_sentence_transformers)")
    return ids


def _score_tokens(tokenizer, score_tokens) -> list[int]:
    """The vocabulary rows a *ForCausalLM reranker is scored from: score_tokens, else "yes" and "no"."""
    if score_tokens is not None:
        tokens = [int(t) for t in score_tokens]
        if len(tokens) not in (1, 2):
            raise InputError(f"score_tokens: expected (true_token_id,) or (true_token_id, false_token_id), found "
                             f"{score_tokens!r}")
        return tokens
    vocab = tokenizer.get_vocab()
    missing = [word for word in ("yes", "no") if word not in vocab]
    if missing:
        raise InputError(f"the tokenizer has no token {missing[0]!r} to score with; pass score_tokens")
    return [vocab["yes"], vocab["no"]]


def _write_captured(path, tensors: dict, layout: str, producer: str, model: str) -> None:
    """Write a captured padded batch (inputs and stages [B, T, ...] / [B, X]) as a trace, packed if asked. A
    left-padded batch (sentence-transformers pads a decoder on the left) is written right-padded."""
    mask = tensors["attention_mask"].astype(bool)                              # [B, T]
    lengths = mask.sum(axis=1)
    right = np.arange(mask.shape[1])[None, :] < lengths[:, None]               # [B, T] the same tokens, first
    token_rows = [name for name in tensors if name in INPUTS or tensors[name].ndim == 3]
    if layout == "packed":
        for name in token_rows:
            tensors[name] = tensors[name][mask]                                  # [B, T, ...] -> [N, ...]
        del tensors["attention_mask"]
        tensors = {"input_ids": tensors.pop("input_ids"),
                   "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), **tensors}
    elif (right != mask).any():
        for name in token_rows:
            moved = np.zeros_like(tensors[name])
            moved[right] = tensors[name][mask]                                   # each row's real tokens first
            tensors[name] = moved
    write_safetensors(path, tensors, {"format": FORMAT, "layout": layout, "producer": producer, "model": model})


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def trace_from_sentence_transformers(model, pairs, path, layout: str = "padded") -> None:
    """A trace of `pairs` by a sentence-transformers CrossEncoder whose Transformer (feature-extraction) is
    followed by modules (modules.json: Pooling, Dense, LayerNorm, ...): the encoder's hidden states, each
    module's output named by its folder as minibert names the stage ("1_Pooling", "2_Dense", ...), and the
    scores as `logits`, before any activation. Needs torch and sentence-transformers.

    A decoder reranker's (Transformer text-generation, then LogitScore) is captured on the token ids
    sentence-transformers forms, long conversations cut with the template's tail kept: its hidden states, the
    family's head stage (the last layer at each pair's last token) and LogitScore's scores as `logits`.
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
    family = find_family(model[0].model.config.model_type)
    if family is not None and family.decoder:   # the last layer at each pair's last real token (any padding side)
        mask = inputs["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)                   # [B]
        stages[family.head_stage] = hidden[-1][torch.arange(len(last)), last]
    stages.update(dict(outputs[i] for i in sorted(outputs)))
    tensors = {name: value.cpu().numpy().astype(np.int64) for name, value in inputs.items()}
    tensors.update({name: value.float().cpu().numpy() for name, value in stages.items()})
    _write_captured(path, tensors, layout, f"sentence-transformers {_version('sentence_transformers')}",
                    str(getattr(model[0].model.config, "_name_or_path", "")))


def module_folder(model, index: int) -> str:
    """The folder sentence-transformers saves module `index` of `model` in ("1_Pooling"): minibert's stage name."""
    return "" if index == 0 else f"{index}_{type(model[index]).__name__}"
