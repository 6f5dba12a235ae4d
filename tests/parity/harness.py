"""The live-parity harness: what every family's parity tests share, written once.

A family plugs in with a `Spec` (its variants, its transformers classes, the options it refuses) and a
test class naming it (battery.py's ParityBattery). For each variant the harness builds, once per
session and in a temp dir:

    tokenizer files   copied from a golden fixture (tests/fixtures/goldens/<name>/), whose
                      vocabularies tools/goldens/ builds deterministically: the same tokens, hence
                      the same model, in every process (tokenizers' own WordPiece and Unigram trainers
                      break ties differently from run to run); tokenizer_config.json edited as the
                      variant says
    the model         the family's *ForSequenceClassification with the variant's config, every
                      parameter re-drawn from a generator seeded with the variant's seed
                      (tools/goldens/core.py's randomize_: LayerNorm too, as default init would hide a
                      swapped or missing one), saved with save_pretrained; or real weights, only the
                      classifier drawn
    the bare encoder  the family's base model read from that checkpoint and saved without its head
                      (real weights are one already)
    the reference     transformers (eager attention, float32) on PAIRS, tokenized as
                      sentence-transformers' CrossEncoder tokenizes: token ids, logits, every stage
                      of the probe pairs (hidden_states and the input of the family's head module),
                      and the probe pairs' logits in float64

The texts are CPython's pydoc topics (English that ships with Python: no download, the same text
everywhere), sliced by tools/goldens/core.py's `topic`.
"""

import copy
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from minibert.models import Family, find_family

REPO = Path(__file__).resolve().parents[2]
GOLDENS = REPO / "tests" / "fixtures" / "goldens"


def _goldens_core():
    """tools/goldens/core.py, the golden generators' shared core (tools/ is no package: loaded by path)."""
    name = "goldens_core"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "goldens" / "core.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


core = _goldens_core()
Scale = core.Scale
ATOL, RTOL = core.ATOL, core.RTOL   # |minibert - transformers| <= ATOL + RTOL |transformers|, as the goldens
BATCH = 8                           # pairs per forward pass, on both sides


# ----------------------------------------------------------------------------------------------
# texts

QUERIES = [
    "How do I handle an exception raised in a block of code?",
    "What does the with statement do with a context manager?",
    "How does Python find and load a module when importing it?",
    "Café, naïve façade: 日本語 and emoji 🐍?",
]
# Short passages, then two long ones: "import" is cut at every max_length but ModernBERT's 2048 (1,300
# ModernBERT tokens, 830 WordPiece), "formatstrings" at the short ones (600 ModernBERT tokens, 410 WordPiece).
# Then an empty passage, accents, CJK and emoji, and special tokens written in the text.
PASSAGES = [
    *(core.topic(name, 0, n_chars) for name, n_chars in
      (("try", 250), ("with", 400), ("class", 800), ("yield", 900), ("import", 3300), ("formatstrings", 1500))),
    "", "Über die Straße: crème brûlée, 東京, 👍🏽 done", "a <pad> inside, and <s> too; [SEP] and [CLS] as well",
]
PAIRS = [(query, passage) for query in QUERIES for passage in PASSAGES]  # one ranking group per query

# For the sentence encoder: texts alone, one cut at every max_length but ModernBERT's.
SENTENCES = [*QUERIES, PASSAGES[0], core.topic("import", 0, 2400), "", "a <pad> inside a text",
             "ＡＢＣ ﬁne RÉSUMÉ"]

# Sides longer than max_length * 101 characters go through the tokenizer's long-text path
# (minibert/formats/tokenizer.py, PairTokenizer._encode_long); they must keep transformers' ids. Just
# over: transformers is slow on long pairs.
LONG_MAX_LENGTH = 32
_LONG, _OTHER = core.topic("formatstrings", 0, 3500), core.topic("import", 0, 3500)
LONG_PAIRS = [("short query", _LONG), (_LONG, "short passage"), (_LONG, _OTHER), (_LONG[:2500], _OTHER)]


# ----------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class Refused:
    """A config.json value the family does not implement: CrossEncoder must raise a ConfigError that
    names the file and the field, and says `says`."""
    field: str
    value: object   # None: null in config.json
    says: str


@dataclass(frozen=True)
class Variant:
    """One live model of a family."""
    name: str                       # the test id
    seed: int                       # torch's seed for construction, and randomize_'s
    config: dict                    # keyword arguments of the transformers config: sizes and options
    tokenizer: str | Path           # a golden fixture's name (its tokenizer files are copied) or a directory
    max_length: int                 # where transformers cuts the pairs: minibert's default must be the same
    truncates: bool = True          # some pairs, one per query at least, are cut at max_length
    tokenizer_config: dict = field(default_factory=dict)   # changes to tokenizer_config.json
    token_types: bool = True        # the tokenizer makes token type ids (the passage's are 1)
    scales: dict = field(default_factory=dict)   # randomize_'s exceptions: name -> Scale, or None (kept)
    weights: Path | None = None     # real weights of a bare encoder: only the classifier is drawn
    probe_queries: int | None = None  # stages and float64 on the first n queries' pairs only (None: all)
    expect: Callable | None = None  # (Live) -> None: asserts the variant reaches what it is meant for

    @property
    def tokenizer_dir(self) -> Path:
        return GOLDENS / self.tokenizer if isinstance(self.tokenizer, str) else self.tokenizer

    @property
    def probe(self) -> list[int]:
        """The pairs whose stages and float64 logits are compared."""
        n = len(QUERIES) if self.probe_queries is None else self.probe_queries
        return list(range(n * len(PASSAGES)))


@dataclass(frozen=True)
class Spec:
    """What the battery needs to know of one family (a Family of minibert.models.FAMILIES)."""
    model_type: str                 # config.json's: names the minibert Family
    model_class: str                # transformers' *ForSequenceClassification
    base_class: str                 # its bare encoder, as AutoModel loads it
    variants: tuple[Variant, ...]   # the first one is small: refusals and the planted difference use it
    refused: tuple[Refused, ...]
    # config fields set from the tokenizer: field -> the tokenizer's attribute
    token_ids: dict = field(default_factory=lambda: {"pad_token_id": "pad_token_id"})
    after_save: Callable | None = None  # (variant, directory): rewrite what save_pretrained wrote

    @property
    def family(self) -> Family:
        return find_family(self.model_type)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


# ----------------------------------------------------------------------------------------------
# building


def write_tokenizer(variant: Variant, directory: Path) -> None:
    """The tokenizer files of the variant's source, tokenizer_config.json edited as it says."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in core.tokenizer_files(variant.tokenizer_dir):
        shutil.copy(variant.tokenizer_dir / name, directory / name)
    if variant.tokenizer_config:
        edit_json(directory / "tokenizer_config.json", variant.tokenizer_config)


def edit_json(path: Path, changes: dict) -> None:
    """Set keys of a JSON file (None: null)."""
    content = json.loads(path.read_text(encoding="utf-8"))
    content.update(changes)
    path.write_text(json.dumps(content, indent=2), encoding="utf-8")


def copy_with_config(directory: Path, where: Path, changes: dict) -> Path:
    """A copy of a model directory with config.json's keys changed."""
    shutil.copytree(directory, where)
    edit_json(where / "config.json", changes)
    return where


def random_model(spec: Spec, variant: Variant, tokenizer) -> torch.nn.Module:
    """The family's classifier of the variant's config, every parameter re-drawn (randomize_'s scales by
    module kind; the logits layer, the family's head module, wider so that scores spread)."""
    ids = {name: getattr(tokenizer, attribute) for name, attribute in spec.token_ids.items()}
    config = transformers.AutoConfig.for_model(spec.model_type, vocab_size=len(tokenizer), **ids, **variant.config)
    torch.manual_seed(variant.seed)  # construction draws from the global generator; randomize_ re-draws all
    model = getattr(transformers, spec.model_class)(config).eval()
    core.randomize_(model, variant.seed, spec.family.head_module, variant.scales)
    return model


def real_model(spec: Spec, variant: Variant) -> torch.nn.Module:
    """Real weights of a bare encoder with a classifier drawn from the variant's seed, all else kept."""
    if not (variant.weights / "config.json").is_file():
        pytest.fail(f"{variant.weights} has no checkpoint: run `python tools/get_minilm.py` first")
    model = getattr(transformers, spec.model_class).from_pretrained(variant.weights, **variant.config).eval()
    head = spec.family.head_module + "."
    kept = {name: None for name, _ in model.named_parameters() if not name.startswith(head)}
    core.randomize_(model, variant.seed, spec.family.head_module, kept)
    return model


def build(spec: Spec, variant: Variant, directory: Path) -> None:
    """The variant's classification checkpoint and tokenizer in `directory`, its bare encoder in
    `directory`/bare (but for real weights, which are one)."""
    write_tokenizer(variant, directory)
    # no config.json yet: the model_type tells AutoTokenizer the class where tokenizer_config.json names none
    config = transformers.AutoConfig.for_model(spec.model_type)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, config=config)
    model = real_model(spec, variant) if variant.weights else random_model(spec, variant, tokenizer)
    model.save_pretrained(directory, safe_serialization=True)
    if spec.after_save:
        spec.after_save(variant, directory)
    if variant.weights:
        return
    torch.manual_seed(variant.seed)  # a base model may have what the classifier lacks (a pooler): drawn alike
    base = getattr(transformers, spec.base_class).from_pretrained(directory)
    base.save_pretrained(directory / "bare", safe_serialization=True)
    write_tokenizer(variant, directory / "bare")


# ----------------------------------------------------------------------------------------------
# transformers' side


@dataclass(frozen=True)
class Reference:
    """What transformers made of PAIRS."""
    max_length: int
    ids: list           # per pair, unpadded: input_ids
    type_ids: list      # per pair: token_type_ids, zeros where the tokenizer makes none
    token_types: bool   # the tokenizer made token_type_ids
    logits: np.ndarray  # [n, L] float32
    probe: list         # the pairs of `stages` and `exact`
    stages: dict        # stage -> [N, H] over the probe pairs' tokens, or [B, H] / [B, L] per probe pair
    offsets: np.ndarray  # [B + 1]: probe pair b owns rows offsets[b]:offsets[b + 1] of a token stage
    exact: np.ndarray   # [B, L] float64 logits of the probe pairs
    exact_stages: dict  # stage -> float64 (transformers' model in double, one pair at a time), as `stages`


TINY = 5_000_000  # parameters: a model built here, not real weights


@contextmanager
def torch_threads(model: torch.nn.Module):
    """A tiny model runs on one thread, as tools/goldens runs them: its ops are too small to share, and on
    a busy machine a second thread makes each of them wait (40x slower). Real weights: torch's own count."""
    threads = torch.get_num_threads()
    if sum(p.numel() for p in model.parameters()) < TINY:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_classifier(spec: Spec, directory: Path) -> torch.nn.Module:
    """The checkpoint read back as minibert reads it: eager attention, float32."""
    return getattr(transformers, spec.model_class).from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32).eval()


def run(spec: Spec, model, tokenizer, pairs, max_length: int, probe=(), batch: int = BATCH):
    """Logits [n, L] of every pair and the stages of the `probe` pairs (pair -> stage -> array), in
    batches of similar length padded within each batch, as sentence-transformers' CrossEncoder runs them.
    The head's stage is the input of the family's head module (as minibert/oracle/capture.py captures it)."""
    head = core.Head(spec.family.head_stage, spec.family.head_module, reads=True)
    lengths = [len(ids) for ids in tokenizer([q for q, _ in pairs], [p for _, p in pairs],
                                             truncation="longest_first", max_length=max_length)["input_ids"]]
    order = sorted(range(len(pairs)), key=lengths.__getitem__)
    logits, stages = np.empty((len(pairs), model.config.num_labels), np.float64), {}
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        enc = core.hf_encode(tokenizer, [pairs[i] for i in rows], max_length)
        with torch_threads(model):
            hidden, head_input, out = core.run_model(model, enc, head)
        logits[rows] = out.double().numpy()
        mask = enc["attention_mask"].bool()
        for k, i in enumerate(rows):
            if i in probe:
                stages[i] = {"embeddings": hidden[0][k][mask[k]],
                             **{f"layer_{j}": h[k][mask[k]] for j, h in enumerate(hidden[1:])},
                             head.stage: head_input[k], "logits": out[k]}
    return logits, stages


def reference(spec: Spec, model, tokenizer, max_length: int, probe=()) -> Reference:
    """What transformers' model and tokenizer make of PAIRS."""
    unpadded = tokenizer([q for q, _ in PAIRS], [p for _, p in PAIRS], truncation="longest_first",
                         max_length=max_length)
    logits, per_pair = run(spec, model, tokenizer, PAIRS, max_length, set(probe))
    stages = {name: np.concatenate([np.atleast_2d(per_pair[i][name].numpy()) for i in probe]).astype(np.float32)
              for name in per_pair[probe[0]]} if probe else {}
    lengths = [len(unpadded["input_ids"][i]) for i in probe]
    # float64 one pair at a time: padding's masks turn some families' float64 paths to NaN (ModernBERT's)
    exact, per_pair = run(spec, copy.deepcopy(model).double(), tokenizer, [PAIRS[i] for i in probe], max_length,
                          set(range(len(probe))), batch=1)
    exact_stages = {name: np.concatenate([np.atleast_2d(per_pair[k][name].numpy()) for k in range(len(probe))])
                    for name in stages}
    return Reference(
        max_length, unpadded["input_ids"], core.type_ids(unpadded), "token_type_ids" in unpadded,
        logits.astype(np.float32), list(probe), stages, np.concatenate([[0], np.cumsum(lengths)]), exact,
        exact_stages)


@dataclass
class Live:
    """A built variant: its directories, transformers' model and tokenizer, and the reference."""
    spec: Spec
    variant: Variant
    directory: Path     # the *ForSequenceClassification checkpoint with its tokenizer
    model: torch.nn.Module
    tokenizer: object
    reference: Reference

    @property
    def bare_directory(self) -> Path:
        return self.variant.weights or self.directory / "bare"

    @property
    def what(self) -> str:
        return f"{self.spec.model_type} {self.variant.name}"

    @cached_property
    def sentence_embeddings(self) -> np.ndarray:
        """sentence-transformers on the bare encoder (without modules.json: a Transformer and mean pooling)."""
        st = pytest.importorskip("sentence_transformers")
        model = st.SentenceTransformer(str(self.bare_directory), device="cpu")
        with torch_threads(model):
            return model.encode(SENTENCES, convert_to_numpy=True).astype(np.float32)


class LiveModels:
    """Builds each variant once per session, under `root`: calling it with (spec, variant) gives its Live."""

    def __init__(self, root: Path):
        self.root, self.built = root, {}

    def __call__(self, spec: Spec, variant: Variant | str) -> Live:
        variant = spec.variant(variant) if isinstance(variant, str) else variant
        key = (spec.model_type, variant.name)
        if key not in self.built:
            directory = self.root / f"{spec.model_type}-{variant.name}"
            build(spec, variant, directory)
            model, tokenizer = load_classifier(spec, directory), transformers.AutoTokenizer.from_pretrained(directory)
            ref = reference(spec, model, tokenizer, variant.max_length, variant.probe)
            self.built[key] = Live(spec, variant, directory, model, tokenizer, ref)
        return self.built[key]


# ----------------------------------------------------------------------------------------------
# comparisons


def assert_close(got: np.ndarray, want: np.ndarray, what: str, where=str) -> None:
    """|got - want| <= ATOL + RTOL |want| everywhere (want: the reference), got in float32; the message names
    the worst element, through `where` (its index -> words)."""
    assert got.dtype == np.float32 and got.shape == want.shape, f"{what}: {got.dtype} {got.shape} for {want.shape}"
    diff = np.abs(got.astype(np.float64) - want)
    excess = np.where(np.isnan(diff), np.inf, diff - (ATOL + RTOL * np.abs(want)))
    worst = np.unravel_index(int(np.argmax(excess)), diff.shape)
    line = f"{what}: max |diff| {diff.max():.2e} (worst at {where(worst)}: {got[worst]:.7g} vs {want[worst]:.7g})"
    print(line)
    assert excess.max() <= 0, line


def assert_same_rankings(got: np.ndarray, want: np.ndarray, groups: int, what: str) -> None:
    """Per query (rows of `groups` equal parts): every two passages whose transformers scores are further
    apart than the tolerance allows in total are in the same order. Random weights put two scores within
    the tolerance now and then; such near ties are left out, and most pairs must be clear of them so that
    the check compares something."""
    tol = ATOL + RTOL * np.abs(want).max()
    g = got.reshape(groups, -1).astype(np.float64)
    w = want.reshape(groups, -1).astype(np.float64)
    dw = w[:, :, None] - w[:, None, :]
    dg = g[:, :, None] - g[:, None, :]
    clear = np.abs(dw) > 2 * tol
    off_diagonal = ~np.eye(g.shape[1], dtype=bool)[None]
    assert clear.sum() >= 0.9 * off_diagonal.sum() * groups, f"{what}: too many of transformers' scores tie"
    wrong = np.argwhere(clear & (np.sign(dg) != np.sign(dw)))
    assert not len(wrong), f"{what}: (query, passage, passage) ordered unlike transformers: {wrong[:5].tolist()}"


def assert_same_ids(encoded, want_ids, want_types, pairs, what: str) -> None:
    """minibert's (ids, type ids) of each pair are transformers'."""
    bad = [i for i, ((ids, types), w_ids, w_types) in enumerate(zip(encoded, want_ids, want_types, strict=True))
           if ids.tolist() != list(w_ids) or types.tolist() != list(w_types)]
    assert not bad, (f"{what}: token ids differ from transformers' for pairs {bad}; first {pairs[bad[0]]!r}"[:300]
                     + f"\n  got  {encoded[bad[0]][0].tolist()}\n  want {list(want_ids[bad[0]])}")


# ----------------------------------------------------------------------------------------------
# sentence-transformers' directory layout


def write_sentence_transformers_layout(directory: Path, hidden_size: int,
                                       config_file: str = "sentence_bert_config.json", **settings) -> None:
    """modules.json (a Transformer, then mean Pooling), 1_Pooling/config.json and `config_file` with
    `settings` (max_seq_length, do_lower_case), as sentence-transformers saves such a model."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (directory / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden_size, "pooling_mode_mean_tokens": True}), encoding="utf-8")
    (directory / config_file).write_text(json.dumps(settings), encoding="utf-8")
