"""Fuzz harness (issue 5): untrusted input may only ever raise a MinibertError.

Targets, each fed arbitrary values by hypothesis:
  config  config_from_dict / load_config on JSON with BERT's field names and random values
  pairs   CrossEncoder.predict (tiny-l1 golden model) on random text pairs and non-pair junk
  cli     parse_pair and read_lines, with and without --skip-bad (random lines and bytes), main() on random argv lists
  shards  the shard index reader (model.safetensors.index.json) and the fetch record reader
(The safetensors header and the .bin reader are fuzzed in test_unsafe_bin.py.)

Budget: MINIBERT_FUZZ_EXAMPLES examples per test (default 200) and MINIBERT_FUZZ_DEADLINE_MS
per example (default 5000: generous, as CI machines are shared). At the end of the module one line per target goes to the terminal,
capture or not: "fuzz: config 400 cases, pairs 200 cases, ...".

Bugs found and not yet fixed are listed in KNOWN_BUGS: the fuzz tests let exactly those
exceptions through (and count them); none is left. Each bug found so far has a reproducer at the
end of this file that must raise a MinibertError.
"""

import codecs
import dataclasses
import io
import json
import math
import os
import re
import sys
from collections import Counter
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import SUMMARY_LINES
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from minibert import CrossEncoder, InputError, MinibertError
from minibert.cli import Records, main, parse_pair, read_lines
from minibert.errors import ModelFormatError
from minibert.formats.checkpoint import (
    FETCH_RECORD,
    SAFETENSORS_INDEX,
    check_fetch_complete,
    read_checkpoint,
)
from minibert.formats.config import HFConfig
from minibert.models import config_from_dict
from minibert.models.bert import BertConfig
from minibert.runtime.load import load_config

TINY = Path(__file__).parent / "fixtures" / "goldens" / "tiny-l1"

EXAMPLES = int(os.environ.get("MINIBERT_FUZZ_EXAMPLES", "200"))
DEADLINE_MS = int(os.environ.get("MINIBERT_FUZZ_DEADLINE_MS", "5000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=DEADLINE_MS,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CASES = Counter()       # target -> examples run (shrinking and replays included)
KNOWN_HITS = Counter()  # (target, known bug) -> examples that hit it
EXIT_STATUSES = Counter()  # main()'s exit statuses, to see that the fuzz gets past argparse


# --- known bugs: the only non-MinibertError exceptions a fuzz test lets through -------------

# name -> (exact exception type, message pattern, targets where it is known to escape)
KNOWN_BUGS = {}  # none left: the bugs this harness found are fixed (see the tests at the end)


def known_bug(target: str, exc: BaseException):
    for name, (kind, pattern, targets) in KNOWN_BUGS.items():
        if type(exc) is kind and target in targets and re.search(pattern, str(exc)):
            return name
    return None


def attempt(target: str, call):
    """("ok", value) | ("error", MinibertError) | ("known", exc); anything else propagates."""
    CASES[target] += 1
    try:
        return "ok", call()
    except MinibertError as exc:
        return "error", exc
    except (ValueError, RecursionError, OverflowError) as exc:
        name = known_bug(target, exc)
        if name is None:
            raise
        KNOWN_HITS[target, name] += 1
        return "known", exc


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    yield
    lines = [f"fuzz: {', '.join(f'{t} {n} cases' for t, n in CASES.items())} "
             f"(MINIBERT_FUZZ_EXAMPLES={EXAMPLES})"]
    if EXIT_STATUSES:
        lines.append("fuzz: main exit statuses: " + ", ".join(f"{k} x{n}" for k, n in sorted(EXIT_STATUSES.items())))
    if KNOWN_HITS:
        lines.append("fuzz: known bugs hit: " + ", ".join(f"{t}/{b} {n}" for (t, b), n in KNOWN_HITS.items()))
    request.config.stash.setdefault(SUMMARY_LINES, []).extend(lines)  # printed in the terminal summary


@contextmanager
def unlimited_int_digits():
    """For writing test files that hold huge integer literals (json.dumps reprs them)."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


# --- JSON values -------------------------------------------------------------------------------

# Built when drawn (a sampled_from list would be repr'd by hypothesis, and repr refuses > 4300 digits).
huge_ints = st.builds(lambda power, sign: sign * (10 ** power + 1), st.sampled_from([19, 309, 400, 4301]),
                      st.sampled_from([1, -1]))
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 70) | huge_ints
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["gelu", "absolute", "bert", "relu", "0", "1e-12", ""]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10)

BERT_FIELDS = sorted({f.name for f in dataclasses.fields(BertConfig)} - {f.name for f in dataclasses.fields(HFConfig)})
FIELDS = BERT_FIELDS + ["model_type", "num_labels", "id2label", "label2id", "is_decoder",
                              "add_cross_attention", "architectures"]
VALID_CONFIG = json.loads((TINY / "config.json").read_text())
id2labels = st.dictionaries(st.sampled_from(["0", "1", "2", "-1", "01", " 1", "1.0", "x", "\u0661"]) | st.text(max_size=3),
                            json_values, max_size=4)
configs = st.builds(
    lambda base, overrides: {**base, **overrides},
    st.sampled_from([{}, VALID_CONFIG]),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6)
    | st.fixed_dictionaries({}, optional={"id2label": id2labels, "num_labels": json_values,
                                         "layer_norm_eps": json_values, "hidden_size": json_values,
                                         "num_attention_heads": json_values, "pad_token_id": json_values,
                                         "vocab_size": json_values}))


def check_config_result(outcome):
    kind, value = outcome
    if kind == "ok":
        assert isinstance(value, BertConfig)
        assert value.hidden_size % value.num_attention_heads == 0
        assert value.num_labels >= 1 and math.isfinite(value.layer_norm_eps) and value.layer_norm_eps > 0


# --- (a) config --------------------------------------------------------------------------------

@FUZZ
@given(raw=configs)
def test_config_from_dict_raises_only_config_errors(raw):
    check_config_result(attempt("config", lambda: config_from_dict(raw, source="fuzz.json")))


# Whole config.json files: a random config, or random text / bytes, or a JSON document that is
# too deep or holds a too-long integer literal.
deep_json = st.integers(1, 5000).map(lambda n: '{"hidden_size": ' + "[" * n + "]" * n + "}")
long_literal = st.integers(4000, 4400).map(lambda n: '{"vocab_size": ' + "7" * n + "}")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(content=configs.map(lambda c: ("json", c)) | st.text(max_size=200).map(lambda t: ("text", t))
       | st.binary(max_size=200).map(lambda b: ("bytes", b)) | deep_json.map(lambda t: ("text", t))
       | long_literal.map(lambda t: ("text", t)))
def test_load_config_raises_only_config_errors(scratch, content):
    kind, value = content
    path = scratch / "config" / "config.json"
    path.parent.mkdir(exist_ok=True)
    if kind == "json":
        with unlimited_int_digits():
            path.write_text(json.dumps(value), encoding="utf-8")
    elif kind == "text":
        path.write_text(value, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(value)
    check_config_result(attempt("load_config", lambda: load_config(path.parent)))


# --- (b) pairs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    model = CrossEncoder(TINY)
    model.predict([("warm up", "the kernels")])  # compile the Numba kernels before any deadline
    return model


any_char = st.characters(exclude_categories=())  # surrogates included
control = st.characters(max_codepoint=0x1F) | st.sampled_from(["\x7f", "\x85", "\u2028", "\ufeff", "\u200b", "\x00"])
short_text = st.text(any_char, max_size=30) | st.lists(control | st.sampled_from(["a", " ", "é", "##", "[SEP]"]), max_size=20).map("".join)
long_text = st.builds(lambda piece, n: (piece * n)[:20_000], st.text(any_char, min_size=1, max_size=12),
                      st.integers(100, 20_000))
texts = short_text | long_text | st.sampled_from(["", " ", "\ud800", "a\udfffb", "[CLS]", "\t\r\n"])
pairs = st.tuples(texts, texts) | st.lists(texts, min_size=2, max_size=2)
junk = (st.none() | st.integers() | st.floats() | st.binary(max_size=8) | st.booleans()
        | st.tuples(texts) | st.tuples(texts, texts, texts) | st.lists(st.lists(texts, max_size=2), max_size=2)
        | st.tuples(texts, st.none() | st.integers() | st.binary(max_size=4)) | st.dictionaries(texts, texts, max_size=2))
items = pairs | junk
inputs = (pairs.map(lambda p: ("single", p))
          | st.lists(items, max_size=5).map(lambda xs: ("list", xs))
          | st.lists(pairs, max_size=5).map(lambda xs: ("list", xs))
          | st.lists(items, max_size=3).map(lambda xs: ("tuple", tuple(xs)))
          | (junk | texts).map(lambda x: ("junk", x)))


def valid_text(text) -> bool:
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_pair(pair) -> bool:
    return isinstance(pair, (tuple, list)) and len(pair) == 2 and all(valid_text(t) for t in pair)


@pytest.mark.filterwarnings("ignore:minibert. an input was longer than max_length")  # a warning, not an error
@FUZZ
@given(case=inputs, batch_size=st.integers(1, 4), activation=st.sampled_from([None, "sigmoid"]))
def test_predict_scores_or_raises_input_error(encoder, case, batch_size, activation):
    _, sentences = case
    kind, value = attempt("pairs", lambda: encoder.predict(sentences, batch_size=batch_size, activation=activation))
    # The documented contract: a lone pair (q, p) gives one score, any other iterable a score per pair.
    single = isinstance(sentences, (tuple, list)) and len(sentences) == 2 and isinstance(sentences[0], str)
    many = not single and not isinstance(sentences, (str, bytes)) and hasattr(sentences, "__iter__")
    ok = valid_pair(sentences) if single else many and all(valid_pair(p) for p in sentences)
    if not ok:
        assert kind == "error" and isinstance(value, InputError), (kind, value)
        return
    assert kind == "ok", value
    assert isinstance(value, (np.ndarray, np.float32)) and value.dtype == np.float32
    assert np.shape(value) == (() if single else (len(sentences),))
    assert np.all(np.isfinite(value))


# --- (c) the command line ----------------------------------------------------------------------

def dumps_any(value, **options) -> str:
    with unlimited_int_digits():
        return json.dumps(value, **options)


json_lines = st.builds(lambda q, p, extra: dumps_any({"query": q, "passage": p, **extra}, ensure_ascii=False),
                       json_values | texts, json_values | texts, st.dictionaries(st.text(max_size=4), json_values, max_size=2))
lines = (texts | json_lines | st.text(any_char, max_size=40).map(lambda t: "{" + t)
         | st.builds(lambda q, p: f"{q}\t{p}", texts, texts)
         | st.integers(1, 5000).map(lambda n: '{"query": ' + "[" * n)
         | st.integers(4000, 4400).map(lambda n: '{"query": ' + "9" * n + "}"))


@FUZZ
@given(line=lines, number=st.integers(1, 10 ** 6))
def test_parse_pair_returns_the_pair_or_raises_input_error(line, number):
    kind, value = attempt("parse_pair", lambda: parse_pair(line, "fuzz.tsv", number))
    if kind == "error":
        assert isinstance(value, InputError) and f"fuzz.tsv, line {number}: " in str(value)
    elif kind == "ok":
        query, passage = value
        assert isinstance(query, str) and isinstance(passage, str)
        if line.startswith("{"):
            record = json.loads(line)
            assert (query, passage) == (record["query"], record["passage"])
        else:
            assert f"{query}\t{passage}" == line and "\t" not in query


pieces = st.sampled_from([b"\n", b"\r", b"\r\n", codecs.BOM_UTF8, b"\xff", b"\xc3", b"\xed\xa0\x80", "é".encode(),
                          "\u2028".encode(), b"a", b"\t", b"\x00", b"q\tp"]) | st.binary(max_size=6)
files = st.lists(pieces, max_size=30).map(b"".join)


def expected_lines(data: bytes):
    """The documented reading: split at b'\\n', one final newline ends the last line, one '\\r'
    before a '\\n' dropped, a UTF-8 BOM at the very start dropped; None if a line is not UTF-8."""
    raw = data.split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    raw = [r[:-1] if r.endswith(b"\r") else r for r in raw]
    if raw and raw[0].startswith(codecs.BOM_UTF8):
        raw[0] = raw[0][3:]
    try:
        return [r.decode("utf-8") for r in raw]
    except UnicodeDecodeError:
        return None


@FUZZ
@given(data=files)
def test_read_lines_reads_the_documented_lines_or_raises_input_error(scratch, data):
    path = scratch / "lines.txt"
    path.write_bytes(data)
    kind, value = attempt("read_lines", lambda: read_lines(str(path)))
    expected = expected_lines(data)
    if expected is None:
        assert kind == "error" and isinstance(value, InputError) and "not valid UTF-8" in str(value), (kind, value)
    else:
        assert kind == "ok", value
        assert value == (str(path), expected)


@FUZZ
@given(data=files)
def test_skip_bad_reads_every_good_line_with_its_number(scratch, data):
    # --skip-bad: every line that decodes comes through, numbered as in the file; each other is reported.
    path = scratch / "skip.txt"
    path.write_bytes(data)
    raw = data.split(b"\n")
    raw = raw[:-1] if raw[-1] == b"" else raw
    expected = []
    for number, line in enumerate(raw, start=1):
        line = line[:-1] if line.endswith(b"\r") else line
        line = line[3:] if number == 1 and line.startswith(codecs.BOM_UTF8) else line
        try:
            expected.append((number, line.decode("utf-8")))
        except UnicodeDecodeError:
            pass
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        kind, value = attempt("read_lines", lambda: _read_skipping(str(path)))
    assert kind == "ok", value
    assert value == expected
    reports = [line for line in stderr.getvalue().splitlines() if ", line " in line]
    assert len(reports) == len(raw) - len(expected)


def _read_skipping(path):
    with Records(path, skip_bad=True) as records:
        lines = list(records.lines())
        records.finish()
    return lines


@pytest.fixture(scope="module")
def cli_files(scratch, encoder):
    """Absolute paths the random command lines may name (all inside the scratch folder)."""
    folder = scratch / "cli"
    folder.mkdir()
    contents = {"pairs.tsv": b"what is paris\tparis is a city\n{\"query\": \"q\", \"passage\": \"p\"}\n",
                "passages.txt": b"paris is a city\r\nthe cat sat\n\n",
                "bad.txt": b"ok\n\xff\xfe\n", "empty.txt": b"",
                "huge.jsonl": b'{"query": ' + b"9" * 4400 + b', "passage": "p"}\n'}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in contents] + [str(TINY)]


WORDS = ["rank", "score", "embed", "--model", "-m", "--query", "-q", "--top-k", "--json", "--batch-size",
         "--threads", "--max-length", "--activation", "--output", "-o", "--format", "--normalize", "--version", "--skip-bad",
         "--help", "-h", "-", "--", "sigmoid", "softmax", "npy", "jsonl", "out.npy", "0", "1", "-1", "3", "64",
         "65", "1e3", "nan", "9" * 30, "\u0663", "", "--model=", "--top-k=2"]


def argv_word(paths):
    # No '/' in random words: every path the command may write to stays in the scratch folder.
    return (st.sampled_from(WORDS) | st.sampled_from(paths)
            | st.text(any_char, max_size=10).filter(lambda t: "/" not in t and "\x00" not in t))


def command_lines(paths):
    """A valid command line with a few words replaced, inserted or dropped, or random words."""
    model, pairs_file, passages_file = paths[-1], paths[0], paths[1]
    valid = [["score", "--model", model, pairs_file], ["score", "-m", model, "--activation", "sigmoid", "-"],
             ["rank", "--model", model, "--query", "what is paris", passages_file, "--top-k", "2"],
             ["rank", "-m", model, "-q", "cat", "--json", "-"], ["embed", "--model", model, passages_file],
             ["embed", "-m", model, "--normalize", "--output", "out.npy", "-"],
             ["score", "--model", model, "--max-length", "5", "--batch-size", "1", pairs_file]]
    word = argv_word(paths)

    def mutate(argv, edits):
        argv = list(argv)
        for kind, at, new in edits:
            at = at % (len(argv) + 1)
            if kind == "insert":
                argv.insert(at, new)
            elif argv and kind == "replace":
                argv[at % len(argv)] = new
            elif argv:
                del argv[at % len(argv)]
        return argv

    edits = st.lists(st.tuples(st.sampled_from(["insert", "replace", "drop"]), st.integers(0, 20), word), max_size=3)
    return st.builds(mutate, st.sampled_from(valid), edits) | st.lists(word, max_size=10)


@FUZZ
@given(data=st.data(), stdin=files | st.sampled_from([b"q\tp\n", b"paris\ncat\n"]))
def test_main_returns_an_exit_status_and_never_raises(cli_files, scratch, data, stdin):
    argv = data.draw(command_lines(cli_files))
    assume(not any(word and "fetch".startswith(word) for word in argv))  # no network, no weights/ folder
    assume("serve" not in argv)  # a server runs until it is stopped
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(scratch / "cli")
    try:
        with mock.patch("minibert.cli.fetch", side_effect=AssertionError("fuzz must not fetch")), \
                mock.patch.object(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")), \
                redirect_stdout(out), redirect_stderr(err):
            kind, value = attempt("main", lambda: main(argv))
    finally:
        os.chdir(cwd)
    assert kind != "error", f"main({argv!r}) raised {value!r}"
    if kind == "ok":
        assert type(value) is int and value in (0, 1, 2), (argv, value, err.getvalue())
        EXIT_STATUSES[value] += 1
        if value != 0:
            assert "error" in err.getvalue() or "usage" in err.getvalue(), (argv, err.getvalue())


# --- (d) the shard index and the fetch record ----------------------------------------------------

SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


@pytest.fixture(scope="module")
def sharded(scratch):
    """tiny-l1's weights in two safetensors shards; the test writes the index."""
    folder = scratch / "sharded"
    folder.mkdir()
    tensors = load_file(str(TINY / "model.safetensors"))
    names = sorted(tensors)
    for k, shard in enumerate(SHARDS):
        save_file({n: tensors[n] for n in names[k::2]}, str(folder / shard))
    return folder, {n: SHARDS[i % 2] for i, n in enumerate(names)}


shard_names = (st.sampled_from(SHARDS + ["model.safetensors", "../" + SHARDS[0], "/etc/passwd.safetensors",
                                         "a\x00.safetensors", "\ud800.safetensors", ".safetensors", "pytorch_model.bin"])
               | st.text(any_char, max_size=12).map(lambda t: t + ".safetensors") | json_values)


@FUZZ
@given(data=st.data())
def test_shard_index_reader_raises_only_model_format_errors(sharded, data):
    folder, true_map = sharded
    mode = data.draw(st.sampled_from(["mutated", "random map", "random document", "text", "bytes"]))
    if mode == "mutated":  # the true weight map with a few entries dropped, moved, or added
        weight_map = dict(true_map)
        for name in data.draw(st.lists(st.sampled_from(sorted(true_map)), max_size=3)):
            weight_map.pop(name, None)
        for name in data.draw(st.lists(st.sampled_from(sorted(true_map)) | st.text(max_size=6), max_size=3)):
            weight_map[name] = data.draw(shard_names)
        document = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    elif mode == "random map":
        document = {"weight_map": data.draw(st.dictionaries(st.sampled_from(sorted(true_map)) | st.text(max_size=6),
                                                             shard_names, max_size=6))}
    else:
        document = data.draw(json_values)
    index = folder / SAFETENSORS_INDEX
    if mode == "text":
        index.write_text(data.draw(st.text(any_char, max_size=200) | deep_json | long_literal),
                         encoding="utf-8", errors="surrogatepass")
    elif mode == "bytes":
        index.write_bytes(data.draw(st.binary(max_size=200)))
    else:
        with unlimited_int_digits():
            index.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
    kind, value = attempt("shards", lambda: read_checkpoint(index))
    if kind == "error":
        assert isinstance(value, ModelFormatError) and SAFETENSORS_INDEX in str(value), value
    elif kind == "ok":  # only an index that tells the truth about every tensor loads
        assert mode == "mutated" and document["weight_map"] == true_map, document


@FUZZ
@given(content=json_values.map(lambda v: ("json", v)) | st.fixed_dictionaries({"complete": json_values}).map(lambda v: ("json", v))
       | st.binary(max_size=100).map(lambda b: ("bytes", b)) | deep_json.map(lambda t: ("text", t))
       | long_literal.map(lambda t: ("text", t)))
def test_fetch_record_reader_raises_only_model_format_errors(scratch, content):
    kind, value = content
    folder = scratch / "fetch-record"
    folder.mkdir(exist_ok=True)
    path = folder / FETCH_RECORD
    if kind == "json":
        with unlimited_int_digits():
            path.write_text(json.dumps(value), encoding="utf-8", errors="surrogatepass")
    elif kind == "text":
        path.write_text(value, encoding="utf-8")
    else:
        path.write_bytes(value)
    outcome, result = attempt("fetch_record", lambda: check_fetch_complete(folder))
    unfinished = kind == "json" and isinstance(value, dict) and value.get("complete") is False
    if outcome == "error":
        assert unfinished and isinstance(result, ModelFormatError), result
    elif outcome == "ok":
        assert not unfinished and result is None


# --- the bugs this harness found, one reproducer each, fixed: each must raise a MinibertError ------


def raises_a_minibert_error(call):
    try:
        call()
    except MinibertError:
        return True
    return False


def test_config_layer_norm_eps_beyond_float_range():
    assert raises_a_minibert_error(lambda: config_from_dict({"layer_norm_eps": 10 ** 400}))


@pytest.mark.parametrize("raw", [{"hidden_size": -(10 ** 4301)}, {"id2label": {"0": 10 ** 4301}}],
                         ids=["repr-in-message", "str-of-label"])
def test_config_integer_of_more_than_4300_digits(raw):
    assert raises_a_minibert_error(lambda: config_from_dict(raw))


@pytest.mark.parametrize("text", ['{"vocab_size": ' + "7" * 4301 + "}", "[" * 5000], ids=["long-literal", "deep"])
def test_load_config_unparsable_json(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    assert raises_a_minibert_error(lambda: load_config(tmp_path))


@pytest.mark.parametrize("line", ['{"query": ' + "9" * 4301 + "}", '{"query": ' + "[" * 5000], ids=["long-literal", "deep"])
def test_parse_pair_unparsable_json(line):
    assert raises_a_minibert_error(lambda: parse_pair(line, "pairs.jsonl", 1))


def test_cli_score_line_with_a_long_integer(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"query": ' + "9" * 4301 + ', "passage": "p"}\n')
    assert main(["score", "--model", str(TINY), str(pairs)]) == 2


@pytest.mark.parametrize("text", ['{"complete": ' + "1" * 4301 + "}", "[" * 5000], ids=["long-literal", "deep"])
def test_fetch_record_unparsable_json(tmp_path, text):
    (tmp_path / FETCH_RECORD).write_text(text)
    assert check_fetch_complete(tmp_path) is None  # an unreadable record is "not ours to judge"
