"""minibert against transformers, stage by stage, on the golden files of tools/goldens/make.py.

As llm.c's test_gpt2.c checks its forward pass against the state PyTorch wrote: each stage
(embeddings, every encoder layer, the pooler, the logits) is compared on the valid (non-pad)
tokens with |minibert - golden| <= atol + rtol * |golden|, and a failure names the model, the op
set, the stage, and where the worst element is (pair, token, dimension).

- The stage tests feed the golden's own token ids, so that a tokenizer bug cannot hide (or fake)
  a numerics bug; the tokenizer is checked on its own, pair by pair.
- predict and rank go end to end (text in, scores out): numbers first, then decisions.
- Everything runs for both op sets: the NumPy reference and the Numba kernels (skipped
  only when numba is not installed).

Regenerate the fixtures with `python tools/goldens/make.py` (needs torch + transformers);
`pytest -s` prints the measured max-diffs.
"""

import dataclasses
import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from op_sets import OP_SETS

from minibert import CrossEncoder
from minibert.models import Batch, forward
from minibert.models.chain import Chain
from minibert.models.llama import RMSNorm
from minibert.models.params import LayerNorm

# The golden pairs include ones longer than max_length on purpose: their truncation is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
NAMES = sorted(p.parent.name for p in GOLDENS.glob("*/golden.npz"))  # models: stages + token ids
TOKENIZER_NAMES = sorted(p.parent.name for p in GOLDENS.glob("*/golden.json") if not (p.parent / "golden.npz").exists())
ATOL = RTOL = 1e-5
FORMAT_VERSION = 1




# ----------------------------------------------------------------------------------------------
# golden files


@dataclasses.dataclass(frozen=True)
class Golden:
    name: str
    path: Path
    meta: dict
    arrays: dict  # name -> np.ndarray, packed over valid tokens (see tools/goldens/core.py)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p) for p in self.meta["pairs"]]

    @property
    def stages(self) -> list[str]:
        """The stages in forward order: golden.json's "stages" (every family's goldens name them), else BERT's."""
        if "stages" in self.meta:
            return list(self.meta["stages"])
        layers = [f"layer_{i}" for i in range(self.meta["config"]["num_hidden_layers"])]
        return ["embeddings", *layers, "pooled", "logits"]

    @property
    def offsets(self) -> np.ndarray:
        """Pair b owns packed rows offsets[b]:offsets[b + 1]."""
        return np.concatenate([[0], np.cumsum(self.arrays["lengths"])])

    def unpack(self, name: str) -> list[np.ndarray]:
        o = self.offsets
        return [self.arrays[name][o[b]:o[b + 1]] for b in range(len(o) - 1)]

    def batch(self) -> Batch:
        """The golden's own token ids, packed as minibert runs them (transformers ran them padded)."""
        return Batch.pack(list(zip(self.unpack("input_ids"), self.unpack("token_type_ids"))))


@lru_cache(maxsize=None)
def load_golden(name: str) -> Golden:
    path = GOLDENS / name
    meta = json.loads((path / "golden.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == FORMAT_VERSION, (
        f"{path}/golden.json: format_version {meta['format_version']}, this test reads {FORMAT_VERSION}")
    arrays = {}
    if meta["kind"] == "model":
        with np.load(path / "golden.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return Golden(name, path, meta, arrays)


@lru_cache(maxsize=None)
def load_model(name: str, op_set: str) -> CrossEncoder:
    golden = load_golden(name)
    ops = op_set
    return CrossEncoder(golden.path, max_length=golden.meta["max_length_arg"], ops=ops)


@lru_cache(maxsize=None)
def run_stages(name: str, op_set: str) -> dict:
    """minibert's stages on the golden's own token ids: [N, H] per token stage, like the golden."""
    golden, ce = load_golden(name), load_model(name, op_set)
    _, stages = forward(ce.params, ce.config, golden.batch(), ops=ce.ops, return_stages=True)
    return stages


# ----------------------------------------------------------------------------------------------
# the comparator (llm.c's validate_result: atol + |ref| * rtol)


@dataclasses.dataclass(frozen=True)
class Comparison:
    ok: bool
    max_abs_diff: float
    n_bad: int
    n: int
    worst: tuple  # index of the largest excess over tolerance if not ok, else of the largest diff
    got: float
    want: float


def compare(got: np.ndarray, want: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> Comparison:
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    allowed = atol + rtol * np.abs(want.astype(np.float64))
    bad = ~(diff <= allowed)  # NaN counts as bad
    # Where: the largest excess over the tolerance when something fails, else the largest diff.
    excess = np.where(np.isnan(diff), np.inf, diff - allowed if bad.any() else diff)
    worst = np.unravel_index(int(np.argmax(excess)), diff.shape) if diff.size else ()
    return Comparison(
        ok=not bad.any(),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,  # NaN if any element is NaN
        n_bad=int(bad.sum()), n=int(diff.size), worst=tuple(int(i) for i in worst),
        got=float(got[worst]) if diff.size else 0.0, want=float(want[worst]) if diff.size else 0.0,
    )


def describe(golden: Golden, op_set: str, stage: str, c: Comparison) -> str:
    """One line that says which model, op set, stage and element, llm.c style."""
    where = ""
    if c.worst and not (stage == "embeddings" or stage.startswith("layer_")):  # a head stage: a row per pair
        pair, col = c.worst
        where = f" at pair {pair} {'label' if stage == 'logits' else 'dim'} {col}"
    elif c.worst:
        row, dim = c.worst
        pair = int(np.searchsorted(golden.offsets, row, side="right") - 1)
        token = row - int(golden.offsets[pair])
        where = f" at pair {pair} token {token} ({golden.meta['tokens'][pair][token]!r}) dim {dim}"
    text = f" {tuple(golden.meta['pairs'][pair])!r}"[:120] if c.worst else ""
    status = "OK" if c.ok else "NOT OK"
    return (f"{golden.name} [{op_set}] {stage}: {status} max|diff| {c.max_abs_diff:.2e}{where}: "
            f"got {c.got:.7g}, want {c.want:.7g}; {c.n_bad}/{c.n} outside {ATOL:g} + {RTOL:g}*|want|;{text}")


def stage_comparison(golden: Golden, stages: dict, stage: str) -> Comparison:
    return compare(stages[stage], golden.arrays[stage])


# ----------------------------------------------------------------------------------------------
# the fixtures themselves


@pytest.mark.parametrize("name", NAMES)
def test_golden_files_are_consistent(name):
    golden = load_golden(name)
    a, meta = golden.arrays, golden.meta
    B, N = len(golden.pairs), int(a["lengths"].sum())
    H, L = meta["config"]["hidden_size"], meta["config"]["num_labels"]
    assert a["lengths"].shape == (B,)
    assert a["input_ids"].shape == a["token_type_ids"].shape == (N,)
    for stage in golden.stages:
        assert a[stage].dtype == np.float32, f"{name}: golden {stage} is {a[stage].dtype}"
    token_stages = [s for s in golden.stages if s == "embeddings" or s.startswith("layer_")]
    for stage in token_stages:
        assert a[stage].shape == (N, H), f"{name}: golden {stage} has shape {a[stage].shape}"
    for stage in golden.stages[len(token_stages):-1]:  # the head's stages: one row per pair
        assert a[stage].ndim == 2 and a[stage].shape[0] == B, f"{name}: golden {stage} has shape {a[stage].shape}"
    assert golden.stages[-1] == "logits" and a["logits"].shape == (B, L)
    assert [len(t) for t in meta["tokens"]] == a["lengths"].tolist()
    assert int(a["lengths"].max()) <= meta["max_length"]


def test_goldens_exist():
    assert {"tiny-l1", "tiny-l3"} <= set(NAMES), f"golden fixtures missing under {GOLDENS}: found {NAMES}"
    assert {"tok-mismatch"} <= set(TOKENIZER_NAMES), f"tokenizer goldens missing under {GOLDENS}: found {TOKENIZER_NAMES}"


def test_golden_fixtures_are_small():
    total = sum(p.stat().st_size for p in GOLDENS.rglob("*") if p.is_file())
    # 25 fixtures of up to 600 KiB each (the five decoder rerankers among them)
    assert total < 12 * 1024 * 1024, f"golden fixtures are {total / 1024:.0f} KiB; keep them under 12 MiB"
    for model in GOLDENS.iterdir():
        size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
        assert size < 600 * 1024, f"golden fixture {model.name} is {size / 1024:.0f} KiB; keep each under 600 KiB"


# ----------------------------------------------------------------------------------------------
# tokenizer: token ids and type ids, pair by pair


@pytest.mark.parametrize("name", NAMES)
def test_max_length(name):
    golden = load_golden(name)
    ce = load_model(name, "numpy")
    assert ce.max_length == golden.meta["max_length"], (
        f"{name}: CrossEncoder(max_length={golden.meta['max_length_arg']}) uses max_length {ce.max_length}, "
        f"transformers used {golden.meta['max_length']}")


def _id_mismatches(golden: Golden, encoded, want_ids, want_types, label: str) -> list[str]:
    problems = []
    if len(encoded) != len(want_ids):
        return [f"{label}: {len(encoded)} encodings for {len(want_ids)} pairs"]
    for i, ((ids, types), w_ids, w_types) in enumerate(zip(encoded, want_ids, want_types)):
        ids_ok = np.array_equal(np.asarray(ids), np.asarray(w_ids))
        types_ok = np.array_equal(np.asarray(types), np.asarray(w_types))
        if not (ids_ok and types_ok):
            what = "token ids" if not ids_ok else "token type ids"
            problems.append(
                f"{label} pair {i} {golden.meta['pairs'][i]!r}: {what} differ\n"
                f"    got  ids {np.asarray(ids).tolist()} types {np.asarray(types).tolist()}\n"
                f"    want ids {list(w_ids)} types {list(w_types)}")
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_token_ids(name):
    golden = load_golden(name)
    encoded = load_model(name, "numpy").tokenizer.encode_pairs(golden.pairs)
    for ids, types in encoded:
        assert np.asarray(ids).dtype == np.int64 and np.asarray(types).dtype == np.int64
    problems = _id_mismatches(golden, encoded, golden.unpack("input_ids"), golden.unpack("token_type_ids"), name)
    for i, tokens in enumerate(golden.meta["tokens"]):
        if any(p.startswith(f"{name} pair {i} ") for p in problems):
            problems.append(f"    pair {i} transformers tokens: {tokens}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_token_ids_other_max_lengths(name):
    """More truncation edges (tiny max_lengths, the default rule), ids only: no model run."""
    golden = load_golden(name)
    problems = []
    for case in golden.meta["tokenizer_cases"]:
        ce = CrossEncoder(golden.path, max_length=case["max_length_arg"], ops="numpy")
        label = f"{name} max_length={case['max_length_arg']}"
        if ce.max_length != case["max_length"]:
            problems.append(f"{label}: resolved to {ce.max_length}, transformers used {case['max_length']}")
        encoded = ce.tokenizer.encode_pairs(golden.pairs)
        problems += _id_mismatches(golden, encoded, case["input_ids"], case["token_type_ids"], label)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_tokenizer_only_golden(name):
    """No weights: minibert's tokenizer loader alone, on files where tokenizer.json's normalizer
    disagrees with tokenizer_config.json (transformers follows tokenizer_config.json)."""
    from minibert.runtime.load import load_config, load_tokenizer

    golden = load_golden(name)
    assert golden.meta["kind"] == "tokenizer"
    config = load_config(golden.path)
    problems = []
    for case in golden.meta["tokenizer_cases"]:
        tokenizer = load_tokenizer(golden.path, config, case["max_length_arg"])
        label = f"{name} max_length={case['max_length_arg']}"
        if tokenizer.max_length != case["max_length"]:
            problems.append(f"{label}: resolved to {tokenizer.max_length}, transformers used {case['max_length']}")
        encoded = tokenizer.encode_pairs(golden.pairs)
        problems += _id_mismatches(golden, encoded, case["input_ids"], case["token_type_ids"], label)
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# numbers, stage by stage


def _stage_params():
    for name in NAMES:
        for stage in load_golden(name).stages:
            for op in OP_SETS:
                yield pytest.param(name, stage, op.values[0], id=f"{name}-{stage}-{op.id}", marks=op.marks)


@pytest.mark.parametrize("name, stage, op_set", list(_stage_params()))
def test_stage(name, stage, op_set):
    golden = load_golden(name)
    stages = run_stages(name, op_set)
    c = stage_comparison(golden, stages, stage)
    line = describe(golden, op_set, stage, c)
    print(line)
    assert c.ok, line


@pytest.mark.parametrize("op_set", OP_SETS)
@pytest.mark.parametrize("name", NAMES)
def test_stages_stay_float32(name, op_set):
    stages = run_stages(name, op_set)
    golden = load_golden(name)
    assert list(stages) == golden.stages, f"{name}: stages {list(stages)}, expected {golden.stages}"
    wrong = {k: str(v.dtype) for k, v in stages.items() if v.dtype != np.float32}
    assert not wrong, f"{name} [{op_set}]: stages not float32 (an upcast somewhere): {wrong}"


# ----------------------------------------------------------------------------------------------
# end to end: predict, then the decisions made from it


@pytest.mark.parametrize("batch_size", [32, 3])
@pytest.mark.parametrize("op_set", OP_SETS)
@pytest.mark.parametrize("name", NAMES)
def test_predict(name, op_set, batch_size):
    golden = load_golden(name)
    scores = load_model(name, op_set).predict(golden.pairs, batch_size=batch_size)
    want = golden.arrays["logits"]
    want = want[:, 0] if want.shape[1] == 1 else want
    assert scores.dtype == np.float32, f"predict returned {scores.dtype}"
    assert scores.shape == want.shape, f"predict returned shape {scores.shape}, expected {want.shape}"
    c = compare(scores, want)
    if want.ndim == 1:
        where = f"pair {c.worst[0]} {golden.pairs[c.worst[0]]!r}"
    else:
        where = f"pair {c.worst[0]} {golden.pairs[c.worst[0]]!r} label {c.worst[1]}"
    line = (f"{name} [{op_set}] predict(batch_size={batch_size}): max|diff| {c.max_abs_diff:.2e} at {where}: "
            f"got {c.got:.7g}, want {c.want:.7g}; {c.n_bad}/{c.n} outside tolerance")
    print(line)
    assert c.ok, line

    # Decisions: every pair of scores the golden separates by more than the tolerance must be
    # ordered the same way (ties, such as duplicate pairs, are left out).
    if want.ndim == 1:
        slack = 2 * (ATOL + RTOL * np.abs(want))
        gap = want[:, None] - want[None, :]
        decided = np.abs(gap) > slack[:, None] + slack[None, :]
        flipped = decided & (np.sign(gap) != np.sign(scores[:, None] - scores[None, :]))
        i, j = np.argwhere(flipped)[0] if flipped.any() else (None, None)
        assert not flipped.any(), f"{name} [{op_set}]: pairs {i} and {j} are ranked the other way round"
    else:
        margin = np.sort(want, axis=1)[:, -1] - np.sort(want, axis=1)[:, -2]
        decided = margin > 4 * (ATOL + RTOL * np.abs(want).max(axis=1))
        changed = decided & (scores.argmax(axis=1) != want.argmax(axis=1))
        assert not changed.any(), f"{name} [{op_set}]: predicted label differs for pairs {np.flatnonzero(changed).tolist()}"


@pytest.mark.parametrize("op_set", OP_SETS)
@pytest.mark.parametrize("name", [n for n in NAMES if load_golden(n).meta["rank_groups"]])
def test_rank(name, op_set):
    golden = load_golden(name)
    ce = load_model(name, op_set)
    logits = golden.arrays["logits"][:, 0]
    for group in golden.meta["rank_groups"]:
        queries = {golden.pairs[i][0] for i in group}
        assert len(queries) == 1, f"{name}: rank group {group} mixes queries {queries}"
        query, passages = queries.pop(), [golden.pairs[i][1] for i in group]
        hits = ce.rank(query, passages)
        want_order = np.argsort(-logits[group], kind="stable").tolist()
        got_order = [h["corpus_id"] for h in hits]
        got_scores = np.array([h["score"] for h in hits], dtype=np.float32)
        c = compare(got_scores, logits[group][got_order])
        assert c.ok, f"{name} [{op_set}] rank {query!r}: scores off by {c.max_abs_diff:.2e}"
        assert got_order == want_order, (
            f"{name} [{op_set}] rank {query!r}: order {got_order}, transformers' logits give {want_order} "
            f"(logits {logits[group].tolist()})")


# ----------------------------------------------------------------------------------------------
# the comparator can fail


def test_comparator_finds_a_planted_error():
    golden = load_golden(NAMES[0])
    want = golden.arrays["layer_0"]
    row, dim = 37, 5
    got = want.copy()
    got[row, dim] += np.float32(ATOL + RTOL * abs(want[row, dim])) * 3
    c = compare(got, want)
    assert not c.ok and c.n_bad == 1 and c.worst == (row, dim), c
    line = describe(golden, "numpy", "layer_0", c)
    pair = int(np.searchsorted(golden.offsets, row, side="right") - 1)
    assert "NOT OK" in line and f"pair {pair} token {row - golden.offsets[pair]}" in line, line

    small = want.copy()
    small[row, dim] += np.float32(ATOL * 0.5)
    assert compare(small, want).ok
    nan = want.copy()
    nan[row, dim] = np.nan
    assert not compare(nan, want).ok


@pytest.mark.parametrize("name", NAMES)
def test_a_planted_model_error_fails_the_right_stage(name):
    """Zero the last layer's last norm weight (a LayerNorm, a decoder's RMSNorm; in memory): earlier stages
    still pass, that layer and everything after it fail, and the message names the stage."""
    golden = load_golden(name)
    ce = load_model(name, "numpy")
    model = ce.params.encoder if isinstance(ce.params, Chain) else ce.params   # a chain's encoder holds the layers
    last = model.layers[-1]
    norm = [f.name for f in dataclasses.fields(last) if isinstance(getattr(last, f.name), (LayerNorm, RMSNorm))][-1]
    broken = dataclasses.replace(getattr(last, norm), weight=np.zeros_like(getattr(last, norm).weight))
    broken_last = dataclasses.replace(last, **{norm: broken})
    model = dataclasses.replace(model, layers=(*model.layers[:-1], broken_last))
    params = dataclasses.replace(ce.params, encoder=model) if isinstance(ce.params, Chain) else model
    _, stages = forward(params, ce.config, golden.batch(), ops=ce.ops, return_stages=True)
    ok = {s: stage_comparison(golden, stages, s).ok for s in golden.stages}
    L = golden.meta["config"]["num_hidden_layers"]
    expected = {s: s in ("embeddings",) or (s.startswith("layer_") and int(s[6:]) < L - 1) for s in golden.stages}
    assert ok == expected, f"{name}: stage verdicts {ok}, expected {expected}"
    line = describe(golden, "numpy", f"layer_{L - 1}", stage_comparison(golden, stages, f"layer_{L - 1}"))
    assert f"layer_{L - 1}: NOT OK" in line, line


def test_golden_npz_has_no_pickles():
    assert NAMES
    for name in NAMES:
        with zipfile.ZipFile(GOLDENS / name / "golden.npz") as zf:
            assert all(n.endswith(".npy") for n in zf.namelist())
