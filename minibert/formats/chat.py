"""Pairs -> token ids through a chat template, as sentence-transformers 6 forms a decoder reranker's input.

A decoder reranker (Qwen3-Reranker and its kind) reads a (query, document) pair as a conversation that
its chat template renders to one prompt; the score is read at the prompt's last token. sentence-transformers
6 (base/modules/transformer.py, base/modality.py) does this, and minibert does the same:

1. The pair becomes two messages, roles "query" and "document" (a prompt, if any, goes first as a
   "system" message). Their content is the text itself ("flat") or [{"type": "text", "text": ...}]
   ("structured"), as sentence_bert_config.json's modality_config says, else as the template's source
   suggests (sentence-transformers' patterns: "content[0]", ".type", ...).
2. The template is rendered with Jinja2 as transformers renders it (a sandbox, trim_blocks and
   lstrip_blocks, loop controls, its tojson / raise_exception / strftime_now / namespace), with the
   tokenizer's special tokens as variables and add_generation_prompt false unless asked.
3. The rendered text is tokenized as it is, no special tokens added (the template wrote them).
4. A prompt longer than max_length is cut to its first max_length tokens, and then the template's fixed
   tail (found as the longest common token suffix of two renders with other contents) is written back
   over its last tokens, so that the score is still read after the template's closing tokens.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from minibert.errors import ConfigError, show
from minibert.formats.config import read_json_object
from minibert.formats.tokenizer import build_tokenizer, resolve_max_length

PAIR_ROLES = ("query", "document")
# The special tokens a template sees by name (transformers' SPECIAL_TOKENS_ATTRIBUTES, special_tokens_map).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# sentence-transformers' signs that a template reads content as a list of typed parts (modality.py)
STRUCTURED_PATTERNS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")
# The fillers sentence-transformers renders a conversation with to find the template's tail.
SUFFIX_FILLERS = ("0", "1 2 3 4")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: json.dumps without Jinja's HTML escaping
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str, where: str):
    """A chat template compiled as transformers compiles it; a template Jinja cannot parse is a ConfigError."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt),
                       dict=dict, namespace=jinja2.utils.Namespace)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateError as exc:
        raise ConfigError(f"{where}: the chat template does not compile: {exc}") from None


def guess_message_format(source: str) -> str:
    """"structured" when the template reads typed content parts, else "flat" (sentence-transformers' guess)."""
    return "structured" if any(p in source for p in STRUCTURED_PATTERNS) else "flat"


@dataclass
class ChatPairTokenizer:
    """(query, document) pairs -> token ids of the rendered conversation, cut to max_length with the tail kept."""
    tokenizer: object              # tokenizers.Tokenizer, truncation and padding off
    template: object               # a compiled jinja2 Template
    max_length: int
    source: str                    # where the template came from, for messages
    special_tokens: dict           # bos_token, eos_token, ... as the template sees them
    format: str = "flat"
    add_generation_prompt: bool = False
    restore_suffix: bool = True
    token_types = False            # a decoder has no token types
    prompt_as_message = True       # a prompt is a system message before the pair's two

    def __post_init__(self):
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._suffixes = {}

    def content(self, text: str):
        return text if self.format == "flat" else [{"type": "text", "text": text}]

    def messages(self, query: str, document: str, prompt: str | None = None) -> list[dict]:
        """The conversation sentence-transformers makes of a pair (and a prompt, as a system message)."""
        head = [{"role": "system", "content": self.content(prompt)}] if prompt else []
        return head + [{"role": role, "content": self.content(text)} for role, text in zip(PAIR_ROLES, (query, document))]

    def render(self, messages: list[dict]) -> str:
        try:
            return self.template.render(messages=messages, tools=None, documents=None,
                                        add_generation_prompt=self.add_generation_prompt, **self.special_tokens)
        except jinja2.exceptions.TemplateError as exc:
            raise ConfigError(f"{self.source}: the chat template does not render a query / document pair: "
                              f"{exc}") from None

    def ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.encode(self.render(messages), add_special_tokens=False).ids

    def suffix(self, messages: list[dict]) -> list[int]:
        """The template's tail for conversations shaped like this one (roles, system prompt): the longest
        common token suffix of two renders whose non-system contents are other fillers; [] if the renders
        never differ."""
        def filled(filler):
            return [m if m["role"] == "system" else {**m, "content": self.content(filler)} for m in messages]
        key = repr([(m["role"], m["content"] if m["role"] == "system" else None) for m in messages])
        if key not in self._suffixes:
            first, second = (self.ids(filled(f)) for f in SUFFIX_FILLERS)
            count = 0
            for a, b in zip(reversed(first), reversed(second)):
                if a != b:
                    break
                count += 1
            self._suffixes[key] = first[len(first) - count:] if 0 < count < min(len(first), len(second)) else []
        return self._suffixes[key]

    def untruncated_length(self, query: str, document: str) -> int:
        """The tokens of a pair's whole rendered conversation, before any cut."""
        return len(self.ids(self.messages(query, document)))

    def encode_pairs(self, pairs, first_index=0, prompt: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(query, document), ...] -> [(ids [T_i], zeros [T_i]), ...], int64, unpadded."""
        out = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise ConfigError(f"pair {first_index + i}: expected (query, document) strings, found {show(pair)}")
            messages = self.messages(*pair, prompt=prompt)
            ids = self.ids(messages)
            if len(ids) >= self.max_length:
                ids = ids[:self.max_length]
                tail = self.suffix(messages) if self.restore_suffix else []
                keep = min(len(tail), len(ids))
                if keep:
                    ids[len(ids) - keep:] = tail[len(tail) - keep:]
            ids = np.asarray(ids, dtype=np.int64)
            out.append((ids, np.zeros_like(ids)))
        return out


def read_chat_template(model_dir: Path, tc: dict) -> tuple[str, str] | None:
    """(the chat template's source, where it came from): chat_template.jinja, else tokenizer_config.json's
    chat_template (a string, or a list of named templates: the one named "default"), as transformers reads
    them; None when the directory has none."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), str(jinja)
    template = tc.get("chat_template")
    where = str(model_dir / "tokenizer_config.json")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is None:
        return None
    if not isinstance(template, str):
        raise ConfigError(f"{where}: field 'chat_template' must be a string or a list of named templates, "
                          f"found {show(template)}")
    return template, where


def has_chat_template(model_dir) -> bool:
    """Does the directory's tokenizer have a chat template (sentence-transformers then renders pairs through it)?"""
    model_dir = Path(model_dir)
    tc_path = model_dir / "tokenizer_config.json"
    return read_chat_template(model_dir, read_json_object(tc_path, ConfigError) if tc_path.is_file() else {}) is not None


def read_chat_tokenizer(model_dir, config, default_class: str, max_length=None, message_format=None) -> ChatPairTokenizer:
    """The tokenizer of a decoder reranker's directory: the pipeline of its tokenizer class (default_class when
    tokenizer_config.json names none, as for the encoders), the pair rendered through the chat template; max_length
    as for the encoders (tokenizer_config.json's model_max_length, capped by the positions). message_format: as
    sentence_bert_config.json says it, else guessed from the template."""
    model_dir = Path(model_dir)
    tc_path = model_dir / "tokenizer_config.json"
    tc = read_json_object(tc_path, ConfigError) if tc_path.is_file() else {}
    found = read_chat_template(model_dir, tc)
    if found is None:
        raise ConfigError(f"{model_dir}: the tokenizer has no chat template (chat_template.jinja, or "
                          "tokenizer_config.json's chat_template) to render a query / document pair with")
    source, where = found
    tokenizer, _, _ = build_tokenizer(model_dir, tc, default_class)
    special = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = tc.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        if value is not None:
            special[name] = str(value)
    return ChatPairTokenizer(tokenizer, compile_template(source, where), resolve_max_length(max_length, tc, config,
                             tc_path), where, special, message_format or guess_message_format(source))
