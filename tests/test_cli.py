"""The `minibert` command: in-process through main(argv), and as a real `python -m minibert` process.

Numbers first: every score the CLI prints must read back as exactly the float32 that
CrossEncoder.predict gives for the same pair. Then decisions: order, top-k, ties. Then the
command-line contract: formats, line-numbered errors, exit statuses, a closed stdout.
"""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

import minibert
from minibert import CrossEncoder, SentenceEncoder
from minibert.cli import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    format_score,
    main,
)

REPO = Path(__file__).resolve().parents[1]
GOLDENS = REPO / "tests" / "fixtures" / "goldens"

QUERY = "what is the capital of france"
PASSAGES = [
    "paris is the capital of france",
    "the cat sat on the mat",
    "berlin is the capital of germany",
    "fish swim in the blue river",
    "rome is a big city in italy",
    "what is the capital of france",
]


# Real small models written by transformers (tools/goldens/bert.py): read-only here.
@pytest.fixture(scope="module")
def model_l1():
    return GOLDENS / "tiny-l1"  # num_labels=1, uncased, ships tokenizer.json


@pytest.fixture(scope="module")
def model_l3():
    return GOLDENS / "tiny-l3"  # num_labels=3 (contradiction, entailment, neutral), cased, vocab.txt only


def run(argv, capsys, monkeypatch, stdin: bytes | None = None):
    """main(argv) in-process -> (exit status, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def process_env() -> dict:
    """The environment for `python -m minibert` from this source tree (installed or not)."""
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    env.pop("PYTHONUNBUFFERED", None)   # stdout to a pipe block-buffered, as users have it: flushing is minibert's job
    return env


def default_sigint():
    """preexec_fn of a process a test sends Ctrl-C (SIGINT): the default action, so that Python turns it into
    KeyboardInterrupt even when the test run itself was started with SIGINT ignored (a background job of a
    non-interactive shell is), which a child inherits and Python then leaves ignored."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_process(argv, stdin: bytes = b""):
    """`python -m minibert argv` as a subprocess -> CompletedProcess (bytes)."""
    return subprocess.run([sys.executable, "-m", "minibert", *map(str, argv)], input=stdin,
                          capture_output=True, env=process_env(), cwd=REPO, timeout=300)


def write_lines(path: Path, lines, newline="\n", final_newline=True) -> Path:
    text = newline.join(lines) + (newline if final_newline else "")
    path.write_bytes(text.encode("utf-8"))
    return path


def parse_tsv(out: str) -> list[list[str]]:
    # Split at "\n" only (splitlines would also hide a stray "\r"); the passage may hold tabs.
    assert out.endswith("\n") or out == ""
    return [line.split("\t", 3) for line in out.split("\n")[:-1]]


def assert_one_error_line(err: str, *fragments: str):
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("minibert: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------------------------------------
# rank


def test_rank_tsv_matches_predict_and_rank(model_l1, tmp_path, capsys, monkeypatch):
    passages_file = write_lines(tmp_path / "passages.txt", PASSAGES)
    status, out, err = run(["rank", "--model", model_l1, "--query", QUERY, passages_file],
                           capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")

    ce = CrossEncoder(model_l1)
    expected_scores = ce.predict([(QUERY, p) for p in PASSAGES])       # [n] float32, input order
    rows = parse_tsv(out)
    assert len(rows) == len(PASSAGES)
    for rank, (rank_text, score_text, corpus_id_text, passage) in enumerate(rows, start=1):
        corpus_id = int(corpus_id_text)
        assert int(rank_text) == rank
        assert np.float32(score_text) == expected_scores[corpus_id]    # numbers equal, bit for bit
        assert score_text == format_score(expected_scores[corpus_id])
        assert passage == PASSAGES[corpus_id]

    # The decisions: best first, the same order as CrossEncoder.rank.
    printed_ids = [int(row[2]) for row in rows]
    assert printed_ids == [hit["corpus_id"] for hit in ce.rank(QUERY, PASSAGES)]
    printed_scores = [np.float32(row[1]) for row in rows]
    assert printed_scores == sorted(printed_scores, reverse=True)
    assert len(set(printed_scores)) > 1, "the test model should give different passages different scores"


def test_rank_top_k_is_a_prefix_of_the_full_ranking(model_l1, tmp_path, capsys, monkeypatch):
    passages_file = write_lines(tmp_path / "passages.txt", PASSAGES)
    argv = ["rank", "--model", model_l1, "--query", QUERY, passages_file]
    _, full, _ = run(argv, capsys, monkeypatch)
    status, top, err = run(argv + ["--top-k", 2], capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    assert top.splitlines() == full.splitlines()[:2]
    status, beyond, _ = run(argv + ["--top-k", 100], capsys, monkeypatch)
    assert (status, beyond) == (EXIT_OK, full)


def test_rank_json_is_valid_and_agrees_with_tsv(model_l1, tmp_path, capsys, monkeypatch):
    passages = PASSAGES + ['a "quoted" \\ passage\twith a tab', "caf\u00e9 \u2014 \u6771\u4eac"]
    passages_file = write_lines(tmp_path / "passages.txt", passages)
    argv = ["rank", "--model", model_l1, "--query", QUERY, passages_file]
    _, tsv, _ = run(argv, capsys, monkeypatch)
    status, out, err = run(argv + ["--json"], capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")

    hits = json.loads(out, parse_float=str, parse_int=str)             # keep the printed digits
    assert [set(hit) for hit in hits] == [{"corpus_id", "score", "text"}] * len(passages)
    assert [[str(i), h["score"], h["corpus_id"], h["text"]] for i, h in enumerate(hits, start=1)] \
        == parse_tsv(tsv)
    expected = CrossEncoder(model_l1).predict([(QUERY, p) for p in passages])
    for hit in hits:
        assert np.float32(hit["score"]) == expected[int(hit["corpus_id"])]
        assert hit["text"] == passages[int(hit["corpus_id"])]


def test_rank_ties_keep_input_order(model_l1, tmp_path, capsys, monkeypatch):
    # --batch-size 1: in a shared batch, BLAS may round identical rows differently by position,
    # so duplicates only tie exactly when each pair is scored on its own.
    passages = ["the dog", "blue fish", "the dog", "the dog", "blue fish"]
    status, out, _ = run(["rank", "-m", model_l1, "-q", QUERY, "--batch-size", 1,
                          write_lines(tmp_path / "p.txt", passages)], capsys, monkeypatch)
    assert status == EXIT_OK
    rows = parse_tsv(out)
    by_passage = {}
    for _, score, corpus_id, passage in rows:
        by_passage.setdefault(passage, []).append((score, int(corpus_id)))
    assert by_passage["the dog"] == [(by_passage["the dog"][0][0], i) for i in (0, 2, 3)]
    assert by_passage["blue fish"] == [(by_passage["blue fish"][0][0], i) for i in (1, 4)]


@pytest.mark.parametrize("file_arg", [[], ["-"]], ids=["no-FILE", "dash"])
def test_rank_reads_stdin_with_crlf_and_no_phantom_last_line(model_l1, file_arg, capsys, monkeypatch):
    # A Windows-style file: byte order mark (dropped), CRLF line ends, a final CRLF.
    stdin = "\ufeff".encode("utf-8") + "\r\n".join(PASSAGES[:3] + ["", "the end"]).encode("utf-8") + b"\r\n"
    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY, *file_arg], capsys, monkeypatch, stdin)
    assert (status, err) == (EXIT_OK, "")
    rows = parse_tsv(out)
    assert sorted(int(row[2]) for row in rows) == [0, 1, 2, 3, 4]     # the empty line is a passage
    assert {int(row[2]): row[3] for row in rows} == dict(enumerate(PASSAGES[:3] + ["", "the end"]))


def test_rank_file_without_final_newline(model_l1, tmp_path, capsys, monkeypatch):
    argv = ["rank", "-m", model_l1, "-q", QUERY]
    _, with_newline, _ = run(argv + [write_lines(tmp_path / "a.txt", PASSAGES)], capsys, monkeypatch)
    _, without, _ = run(argv + [write_lines(tmp_path / "b.txt", PASSAGES, final_newline=False)],
                        capsys, monkeypatch)
    assert with_newline == without
    assert len(parse_tsv(without)) == len(PASSAGES)


@pytest.mark.parametrize("argv, expected", [
    (["rank", "-q", QUERY], ""),
    (["rank", "-q", QUERY, "--json"], "[]\n"),
    (["score"], ""),
], ids=["rank", "rank-json", "score"])
def test_empty_input_prints_no_scores(model_l1, argv, expected, capsys, monkeypatch):
    status, out, err = run(argv + ["-m", model_l1], capsys, monkeypatch, stdin=b"")
    assert (status, out, err) == (EXIT_OK, expected, "")


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_rank_on_a_file_of_pairs_says_so_and_points_at_score(fmt, model_l1, tmp_path, capsys, monkeypatch):
    if fmt == "tsv":
        lines = [f"{QUERY}\t{passage}" for passage in PASSAGES]
    else:
        lines = [json.dumps({"query": QUERY, "passage": passage}) for passage in PASSAGES]
    lines[0] = "a passage without a tab or braces"   # most lines, not all
    pairs = write_lines(tmp_path / f"pairs.{fmt}", lines)

    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY, pairs], capsys, monkeypatch)

    assert status == EXIT_OK and len(parse_tsv(out)) == len(lines)   # still ranked: they may be passages after all
    assert err.count("\n") == 1 and err.startswith("minibert: warning: "), err
    for fragment in (f"5 of 6 lines of {pairs}", "`minibert score`"):
        assert fragment in err, err


def test_rank_says_nothing_when_a_few_passages_hold_a_tab(model_l1, tmp_path, capsys, monkeypatch):
    lines = PASSAGES[:3] + [f"{p}\twith a tab" for p in PASSAGES[3:5]] + ['{"query": "q", "passage": "p"}']
    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY, write_lines(tmp_path / "p.txt", lines)],
                           capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "") and len(parse_tsv(out)) == len(lines)


def test_rank_needs_a_single_label_model(model_l3, tmp_path, capsys, monkeypatch):
    status, out, err = run(["rank", "-m", model_l3, "-q", QUERY, write_lines(tmp_path / "p.txt", PASSAGES)],
                           capsys, monkeypatch)
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err)


# ---------------------------------------------------------------------------------------------
# score


def test_score_tsv_and_json_lines_match_predict(model_l1, tmp_path, capsys, monkeypatch):
    pairs = [(QUERY, p) for p in PASSAGES] + [("a query", "a passage\twith a tab"), ("", "empty query")]
    lines = [f"{q}\t{p}" for q, p in pairs]
    lines[1] = json.dumps({"query": pairs[1][0], "passage": pairs[1][1]})
    lines[-2] = json.dumps({"passage": pairs[-2][1], "query": pairs[-2][0], "id": 7})
    status, out, err = run(["score", "-m", model_l1, write_lines(tmp_path / "pairs.tsv", lines)],
                           capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    expected = CrossEncoder(model_l1).predict(pairs)                     # [n]
    printed = out.splitlines()
    assert len(printed) == len(pairs)
    assert [np.float32(s) for s in printed] == list(expected)
    assert printed == [format_score(s) for s in expected]


@pytest.mark.parametrize("activation", [None, "softmax", "sigmoid"])
def test_score_multi_label_prints_one_column_per_label(model_l3, activation, tmp_path, capsys, monkeypatch):
    pairs = [(QUERY, p) for p in PASSAGES]
    argv = ["score", "-m", model_l3, write_lines(tmp_path / "pairs.tsv", [f"{q}\t{p}" for q, p in pairs])]
    argv += ["--activation", activation] if activation else []
    status, out, err = run(argv, capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    expected = CrossEncoder(model_l3).predict(pairs, activation=activation)  # [n, 3]
    assert expected.shape == (len(pairs), 3)
    printed = np.array([[np.float32(s) for s in line.split("\t")] for line in out.splitlines()])
    np.testing.assert_array_equal(printed, expected)


def test_score_reads_stdin(model_l1, capsys, monkeypatch):
    stdin = f"{QUERY}\t{PASSAGES[0]}\r\n{QUERY}\t{PASSAGES[1]}".encode("utf-8")
    status, out, err = run(["score", "-m", model_l1], capsys, monkeypatch, stdin)
    assert (status, err) == (EXIT_OK, "")
    expected = CrossEncoder(model_l1).predict([(QUERY, PASSAGES[0]), (QUERY, PASSAGES[1])])
    assert out.splitlines() == [format_score(s) for s in expected]


@pytest.mark.parametrize("bad_line, fragment", [
    ("no tab on this line", "no tab"),
    ("", "no tab"),
    ('{"query": "q", "passage": ', "not valid JSON"),
    ('{"query": "q"}', '"passage"'),
    ('{"query": "q", "passage": 3}', '"passage"'),
])
def test_score_malformed_line_names_its_number(model_l1, bad_line, fragment, tmp_path, capsys, monkeypatch):
    # The lines before the bad one are scored and written (output streams); nothing after it.
    good = [(QUERY, PASSAGES[0]), ("q", "p")]
    lines = [f"{QUERY}\t{PASSAGES[0]}", json.dumps({"query": "q", "passage": "p"}), bad_line, "q\tp"]
    path = write_lines(tmp_path / "pairs.tsv", lines)
    status, out, err = run(["score", "-m", model_l1, path], capsys, monkeypatch)
    assert status == EXIT_USAGE
    assert out == "".join(format_score(s) + "\n" for s in CrossEncoder(model_l1).predict(good))
    assert_one_error_line(err, f"{path}, line 3:", fragment)


def test_invalid_utf8_names_the_line(model_l1, capsys, monkeypatch):
    stdin = b"good passage\nanother\nbad \xff byte\n"
    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY], capsys, monkeypatch, stdin)
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "<stdin>, line 3:", "UTF-8", "byte 5", "0xff")


# ---------------------------------------------------------------------------------------------
# Errors and exit statuses


def test_missing_model_directory_is_bad_usage(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no-such-model"
    status, out, err = run(["rank", "-m", missing, "-q", QUERY], capsys, monkeypatch, b"a passage\n")
    assert (status, out) == (EXIT_USAGE, "")  # as a missing input FILE is
    assert_one_error_line(err, str(missing), "no such model directory")
    status, out, err = run(["score", "-m", "nobody/typo"], capsys, monkeypatch, b"q\tp\n")  # offline: the cache only
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "no such model directory nobody/typo", "not in the HuggingFace cache")
    status, out, err = run(["score", "-m", "weights/typo"], capsys, monkeypatch, b"q\tp\n")  # weights/ is a folder here
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "no such model directory weights/typo")
    assert "Hub" not in err.replace("a Hub id", "")


def test_model_path_to_a_file_says_a_directory_is_wanted(model_l1, capsys, monkeypatch):
    status, out, err = run(["score", "-m", model_l1 / "config.json"], capsys, monkeypatch, b"q\tp\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, f"{model_l1 / 'config.json'} is a file; expected a model directory", f"{model_l1}?")


def test_rank_on_a_multi_label_model_points_at_score(model_l3, capsys, monkeypatch):
    status, out, err = run(["rank", "-m", model_l3, "-q", QUERY], capsys, monkeypatch, b"a passage\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "3 labels (contradiction, entailment, neutral)", "`minibert score`")
    assert "predict" not in err


def test_score_on_a_sentence_encoder_says_what_works(sentence_model, capsys, monkeypatch):
    status, out, err = run(["score", "-m", sentence_model], capsys, monkeypatch, b"q\tp\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "is a sentence encoder", "`minibert rank` (cosine similarity)", "`minibert embed`")


# One cause, one exit status: a --model that holds no model to load is bad usage (2), whatever the reason.
@pytest.mark.parametrize("case", ["missing", "empty folder", "no config.json", "hub id offline",
                                  "hub id, hub unreachable"])
def test_no_model_here_exits_2_in_one_line(case, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants
    import huggingface_hub.utils._http as hf_http

    model, fragment = tmp_path / "model", "no such model directory"
    if case == "empty folder":
        model.mkdir()
        fragment = "is not a model directory: it holds no config.json"
    elif case == "no config.json":
        shutil.copytree(tiny_model_dir(), model)
        (model / "config.json").unlink()
        fragment = "is not a model directory: it holds no config.json"
    elif case == "hub id offline":
        model, fragment = "nobody/nothing", "not in the HuggingFace cache"
    elif case == "hub id, hub unreachable":
        monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)   # huggingface_hub's retries, if any
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        model, fragment = "nobody/nothing", "is unreachable"    # HF_ENDPOINT: conftest's closed port
    status, out, err = run(["score", "-m", model], capsys, monkeypatch, b"q\tp\n")
    assert (status, out) == (EXIT_USAGE, ""), err
    assert_one_error_line(err, fragment)


@pytest.fixture(scope="module")
def encoders(tiny_model_dir, tmp_path_factory):
    """{"sentence encoder": all-MiniLM-L6-v2's layout (a bare BertModel + modules.json), "bare encoder": no
    modules.json}: neither has a classification head."""
    root = tmp_path_factory.mktemp("encoders")
    bare = shutil.copytree(tiny_model_dir(seed=7), root / "bare")
    tensors = {k[len("bert."):]: v for k, v in load_file(str(bare / "model.safetensors")).items()
               if k.startswith("bert.")}     # a BertModel saves no prefix and no classifier
    save_file(tensors, str(bare / "model.safetensors"))
    sentence = shutil.copytree(bare, root / "sentence")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (sentence / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (sentence / "1_Pooling").mkdir()
    (sentence / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return {"sentence encoder": sentence, "bare encoder": bare}


# (rank is left out for the sentence encoder: rank ranks with one, by cosine similarity)
@pytest.mark.parametrize(("kind", "command"), [
    *(("sentence encoder", command) for command in ["score", "explain", "trace", "compare"]),
    *(("bare encoder", command) for command in ["score", "explain", "trace", "compare", "rank"])])
def test_a_model_that_is_no_cross_encoder_exits_2_and_says_what_works(kind, command, encoders, model_l1, tmp_path,
                                                                      capsys, monkeypatch):
    ours = tmp_path / "ours.safetensors"
    assert run(["trace", "-m", model_l1, "--out", ours], capsys, monkeypatch, b"q\tp\n")[0] == EXIT_OK
    model = encoders[kind]
    argv = {"score": ["score", "-m", model],
            "explain": ["explain", "-m", model, "-q", "q", "-p", "p"],
            "trace": ["trace", "-m", model, "--out", tmp_path / "t.safetensors"],
            "compare": ["compare", "-m", model, ours],
            "rank": ["rank", "-m", model, "-q", "q"]}[command]
    status, out, err = run(argv, capsys, monkeypatch, b"q\tp\n")
    assert (status, out) == (EXIT_USAGE, ""), err
    assert_one_error_line(err, "not a cross-encoder", "`minibert embed`",
                          "`minibert fetch all-MiniLM-L6-v2 --demo-cross-encoder` builds a demonstration")
    if kind == "sentence encoder":
        assert "`minibert rank`" in err
    assert not (tmp_path / "t.safetensors").exists()


def test_broken_checkpoint_error_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    broken = shutil.copytree(tiny_model_dir(num_labels=1), tmp_path / "broken")
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["bert.pooler.dense.weight"], tensors["bert.encoder.layer.1.output.dense.bias"]
    save_file(tensors, str(broken / "model.safetensors"))
    status, out, err = run(["score", "-m", broken], capsys, monkeypatch, b"q\tp\n")
    assert (status, out) == (EXIT_FAILURE, "")
    assert_one_error_line(err, "pooler.dense.weight", "encoder.layer.1.output.dense.bias")


def test_unreadable_file_is_a_usage_error(model_l1, tmp_path, capsys, monkeypatch):
    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY, tmp_path / "absent.txt"], capsys, monkeypatch)
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "absent.txt", "No such file")


@pytest.mark.parametrize("max_length", [2, 10_000])
def test_max_length_outside_the_model_is_a_usage_error(model_l1, max_length, capsys, monkeypatch):
    status, out, err = run(["score", "-m", model_l1, "--max-length", max_length], capsys, monkeypatch, b"q\tp\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "max_length")


def test_max_length_changes_scores_as_predict_does(model_l1, capsys, monkeypatch):
    long_passage = " ".join(["the capital of france is paris"] * 20)
    stdin = f"{QUERY}\t{long_passage}\n".encode("utf-8")
    status, out, _ = run(["score", "-m", model_l1, "--max-length", 12], capsys, monkeypatch, stdin)
    assert status == EXIT_OK
    assert np.float32(out.strip()) == CrossEncoder(model_l1, max_length=12).predict([(QUERY, long_passage)])[0]


@pytest.mark.parametrize("argv, fragment", [
    ([], "COMMAND"),
    (["shuffle"], "shuffle"),
    (["rank", "-m", "x"], "--query"),
    (["rank", "-q", "x"], "--model"),
    (["rank", "-m", "x", "-q", "y", "--top-k", "0"], "--top-k"),
    (["score", "-m", "x", "--batch-size", "many"], "--batch-size"),
    (["score", "-m", "x", "--activation", "tanh"], "--activation"),
])
def test_bad_usage_exits_2_with_one_line(argv, fragment, capsys, monkeypatch):
    status, out, err = run(argv, capsys, monkeypatch)
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, fragment)


def test_help_says_what_minibert_does_for_every_family(capsys, monkeypatch):
    from minibert.models import FAMILIES

    status, out, err = run(["--help"], capsys, monkeypatch)
    text = " ".join(out.split())
    assert (status, err) == (EXIT_OK, "")
    assert "a BERT cross-encoder" not in text and "sentence encoder" in text
    assert all(family.name in text for family in FAMILIES), text


def test_version(capsys, monkeypatch):
    status, out, err = run(["--version"], capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    assert out == f"minibert {minibert.__version__}\n"


def test_keyboard_interrupt_exits_130_quietly(model_l1, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("minibert.cli.CrossEncoder", interrupted)
    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY], capsys, monkeypatch, b"p\n")
    assert (status, out, err) == (EXIT_INTERRUPTED, "", "")


def test_closed_stdout_ends_quietly_in_process(model_l1, tmp_path, capsys, monkeypatch):
    # A real pipe whose reader has gone: the first write raises BrokenPipeError.
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = open(write_end, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stdout)
    status = main(["rank", "-m", str(model_l1), "-q", QUERY, str(write_lines(tmp_path / "p.txt", PASSAGES))])
    assert status == EXIT_OK
    stdout.write("still writable: the descriptor now points at devnull\n")
    stdout.close()
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# format_score


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_format_score_round_trips_float32(value):
    text = format_score(np.float32(value))
    assert np.float32(text) == np.float32(value)
    assert "e" not in text.lower()
    json.loads(text)  # a valid JSON number


def test_format_score_is_shortest():
    assert [format_score(v) for v in (np.float32(1.0), np.float32(0.1), np.float32(-2.5))] == ["1", "0.1", "-2.5"]


# ---------------------------------------------------------------------------------------------
# As a real process: `python -m minibert`


def test_process_rank_output_matches_in_process(model_l1, capsys, monkeypatch):
    stdin = "\n".join(PASSAGES).encode("utf-8")
    proc = run_process(["rank", "-m", model_l1, "-q", QUERY, "--json"], stdin)
    assert (proc.returncode, proc.stderr) == (0, b"")
    _, out, _ = run(["rank", "-m", model_l1, "-q", QUERY, "--json"], capsys, monkeypatch, stdin)
    assert proc.stdout.decode("utf-8") == out


@pytest.mark.parametrize("argv, stdin, status, fragment", [
    (["rank", "-m", "/nonexistent/model", "-q", QUERY], b"p\n", 2, "/nonexistent/model"),
    (["score", "-m", "MODEL_L1"], b"q\tp\nno tab here\n", 2, "<stdin>, line 2:"),
    (["score", "-m", "MODEL_L1"], b"q\tp\n\xc3\x28\n", 2, "<stdin>, line 2:"),
    (["rank", "-q", QUERY], b"p\n", 2, "--model"),
], ids=["missing-model", "malformed-line", "bad-utf8", "usage"])
def test_process_errors_are_one_line_with_exit_status(model_l1, argv, stdin, status, fragment):
    argv = [model_l1 if a == "MODEL_L1" else a for a in argv]
    proc = run_process(argv, stdin)
    assert proc.returncode == status
    # score streams: the good line before the bad one is written; rank sorts, so it writes nothing.
    assert proc.stdout.count(b"\n") == (1 if argv[0] == "score" else 0)
    assert b"Traceback" not in proc.stderr
    assert_one_error_line(proc.stderr.decode("utf-8"), fragment)


def test_process_closed_stdout_exits_0_quietly(model_l1, tmp_path):
    # `minibert rank ... | head -1`. The output (~250 KB) is far larger than a pipe's buffer
    # (64 KB on Linux), so the process is still writing when the reader closes its end.
    passages = [f"passage {i} about the capital of france " + "x" * 150 for i in range(1500)]
    passages_file = write_lines(tmp_path / "many.txt", passages)
    proc = subprocess.Popen(
        [sys.executable, "-m", "minibert", "rank", "-m", str(model_l1), "-q", QUERY, "--max-length", "16",
         str(passages_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env(), cwd=REPO)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    returncode = proc.wait(timeout=300)
    assert first.startswith(b"1\t")
    assert (returncode, stderr) == (0, b"")


# ---------------------------------------------------------------------------------------------
# embed, and rank with a sentence encoder (a tiny random model in sentence-transformers' layout)


@pytest.fixture(scope="module")
def sentence_model(tiny_model_dir, tmp_path_factory):
    """A tiny sentence encoder: mean + cls pooling, no Normalize module (so that --normalize shows)."""
    model = shutil.copytree(tiny_model_dir(num_labels=1, seed=5), tmp_path_factory.mktemp("sentence") / "model")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode": ["mean", "cls"]}), encoding="utf-8")
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}), encoding="utf-8")
    return model


TEXTS = PASSAGES + ['a "quoted" \\ text\twith a tab', "caf\u00e9 \u2014 \u6771\u4eac", ""]


def test_embed_npy_is_exactly_encode(sentence_model, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out" / "embeddings.npy"
    output.parent.mkdir()
    status, out, err = run(["embed", "-m", sentence_model, write_lines(tmp_path / "t.txt", TEXTS), "--output", output],
                           capsys, monkeypatch)
    assert (status, out, err) == (EXIT_OK, "", "")
    embeddings = np.load(output, allow_pickle=False)
    expected = SentenceEncoder(sentence_model).encode(TEXTS)                # [n, 64]
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(embeddings, expected)
    assert [p.name for p in output.parent.iterdir()] == ["embeddings.npy"]  # no partial file left behind


def test_embed_jsonl_round_trips_float32(sentence_model, tmp_path, capsys, monkeypatch):
    status, out, err = run(["embed", "-m", sentence_model, write_lines(tmp_path / "t.txt", TEXTS)], capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    expected = SentenceEncoder(sentence_model).encode(TEXTS)
    records = [json.loads(line, parse_float=str) for line in out.split("\n")[:-1]]
    assert [set(r) for r in records] == [{"index", "embedding"}] * len(TEXTS)
    assert [r["index"] for r in records] == list(range(len(TEXTS)))
    for record in records:
        assert [np.float32(v) for v in record["embedding"]] == list(expected[record["index"]])
        assert record["embedding"] == [format_score(v) for v in expected[record["index"]]]
    # The same lines in a file with --output, and the format chosen explicitly.
    output = tmp_path / "e.jsonl"
    status, _, _ = run(["embed", "-m", sentence_model, tmp_path / "t.txt", "-o", output, "--format", "jsonl"],
                       capsys, monkeypatch)
    assert status == EXIT_OK and output.read_text(encoding="utf-8") == out


def test_embed_options_match_the_api(sentence_model, tmp_path, capsys, monkeypatch):
    stdin = "\r\n".join(TEXTS[:4]).encode("utf-8")
    for argv, kwargs in ((["--normalize"], {"normalize": True}), (["--max-length", "5"], {"max_length": 5}),
                         (["--batch-size", "1"], {})):
        status, out, err = run(["embed", "-m", sentence_model, *argv], capsys, monkeypatch, stdin)
        assert (status, err) == (EXIT_OK, "")
        got = np.array([json.loads(line)["embedding"] for line in out.splitlines()], dtype=np.float32)
        encoder = SentenceEncoder(sentence_model, max_length=kwargs.pop("max_length", None))
        assert np.abs(got - encoder.encode(TEXTS[:4], **kwargs)).max() <= 1e-6
        if argv == ["--normalize"]:
            assert np.abs(np.linalg.norm(got, axis=1) - 1).max() <= 1e-6


def test_embed_empty_input(sentence_model, tmp_path, capsys, monkeypatch):
    assert run(["embed", "-m", sentence_model], capsys, monkeypatch, b"") == (EXIT_OK, "", "")
    status, _, _ = run(["embed", "-m", sentence_model, "-o", tmp_path / "e.npy"], capsys, monkeypatch, b"")
    assert status == EXIT_OK
    empty = np.load(tmp_path / "e.npy")
    assert empty.shape == (0, 64) and empty.dtype == np.float32


@pytest.mark.parametrize("argv, fragment", [
    (["embed", "-m", "MODEL", "--format", "npy"], "--output"),
    (["embed", "-m", "MODEL", "--format", "csv"], "--format"),
    (["embed", "--format", "jsonl"], "--model"),
    (["embed", "-m", "MODEL", "--max-length", "1000"], "max_length"),
])
def test_embed_bad_usage_exits_2(sentence_model, argv, fragment, capsys, monkeypatch):
    argv = [sentence_model if a == "MODEL" else a for a in argv]
    status, out, err = run(argv, capsys, monkeypatch, b"a text\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, fragment)


def test_embed_missing_model_is_bad_usage(tmp_path, capsys, monkeypatch):
    status, out, err = run(["embed", "-m", tmp_path / "nowhere"], capsys, monkeypatch, b"a text\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, "nowhere")


def test_rank_with_a_sentence_encoder_prints_cosine_similarities(sentence_model, tmp_path, capsys, monkeypatch):
    passages_file = write_lines(tmp_path / "passages.txt", PASSAGES)
    status, out, err = run(["rank", "-m", sentence_model, "-q", QUERY, passages_file], capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    encoder = SentenceEncoder(sentence_model)
    embeddings = encoder.encode([QUERY] + PASSAGES).astype(np.float64)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit[1:] @ unit[0]                                               # [n], float64
    hits = encoder.rank(QUERY, PASSAGES)
    rows = parse_tsv(out)
    # Numbers: the API's float32 scores, printed exactly; they are cosine similarities.
    assert [(int(r[0]), r[1], int(r[2]), r[3]) for r in rows] == [
        (rank, format_score(h["score"]), h["corpus_id"], PASSAGES[h["corpus_id"]]) for rank, h in enumerate(hits, 1)]
    assert max(abs(float(r[1]) - cosine[int(r[2])]) for r in rows) <= 1e-6
    # Decisions: the passage equal to the query first, then by cosine.
    assert int(rows[0][2]) == PASSAGES.index(QUERY)
    assert [int(r[2]) for r in rows] == sorted(range(len(PASSAGES)), key=lambda i: -cosine[i])
    # JSON: the same fields as for a cross-encoder.
    status, out, _ = run(["rank", "-m", sentence_model, "-q", QUERY, passages_file, "--json", "--top-k", 2],
                         capsys, monkeypatch)
    assert status == EXIT_OK
    assert json.loads(out) == [{"corpus_id": h["corpus_id"], "score": float(format_score(h["score"])),
                                "text": PASSAGES[h["corpus_id"]]} for h in hits[:2]]


def test_process_embed_npy_to_stdout(sentence_model):
    proc = run_process(["embed", "-m", sentence_model, "--output", "-"], "\n".join(TEXTS + [""]).encode("utf-8"))
    assert (proc.returncode, proc.stderr) == (0, b"")
    np.testing.assert_array_equal(np.load(io.BytesIO(proc.stdout), allow_pickle=False),
                                  SentenceEncoder(sentence_model).encode(TEXTS))


def test_threads_option(model_l1, tmp_path, capsys, monkeypatch):
    passages = write_lines(tmp_path / "p.txt", PASSAGES)
    plain = run(["rank", "--model", model_l1, "--query", QUERY, passages], capsys, monkeypatch)
    one = run(["rank", "--model", model_l1, "--query", QUERY, "--threads", "1", passages], capsys, monkeypatch)
    assert plain[0] == one[0] == 0
    assert [line.split("\t")[2] for line in one[1].splitlines()] == \
        [line.split("\t")[2] for line in plain[1].splitlines()]
    pairs = write_lines(tmp_path / "pairs.tsv", [f"{QUERY}\t{p}" for p in PASSAGES])
    assert run(["score", "--model", model_l1, "--threads", "2", pairs], capsys, monkeypatch)[0] == 0
    status, out, err = run(["score", "--model", model_l1, "--threads", "0", pairs], capsys, monkeypatch)
    assert status == 2 and out == "" and "--threads" in err


# ---------------------------------------------------------------------------------------------
# --skip-bad: a bad line is reported with its number and left out; the rest is scored


BAD_LINES = [  # (line bytes, what the report says)
    (b"no tab on this line", "no tab"),
    (b'{"query": "q", "passage": ', "not valid JSON"),
    (b'{"query": "q", "passage": 3}', '"passage"'),
    (b'{"query": "\\ud800", "passage": "p"}', "not valid Unicode"),   # a JSON escape for a lone surrogate
    (b"bad \xff byte\tp", "not valid UTF-8"),
]


def skip_reports(err: str) -> dict[int, str]:
    """{line number: report} of the 'minibert: skipped <source>, line N: ...' lines of stderr."""
    reports = {}
    for line in err.splitlines():
        if ", line " in line:
            assert line.startswith("minibert: skipped "), line
            reports[int(line.split(", line ")[1].split(":")[0])] = line
    return reports


def test_score_skip_bad_scores_the_good_lines(model_l1, tmp_path, capsys, monkeypatch):
    good = [(QUERY, p) for p in PASSAGES]
    lines, bad_numbers = [], {}
    for i, (query, passage) in enumerate(good):
        lines.append(f"{query}\t{passage}".encode("utf-8"))
        if i < len(BAD_LINES):
            lines.append(BAD_LINES[i][0])
            bad_numbers[len(lines)] = BAD_LINES[i][1]
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")

    status, out, err = run(["score", "-m", model_l1, "--skip-bad", path], capsys, monkeypatch)
    assert status == EXIT_OK
    assert out == "".join(format_score(s) + "\n" for s in CrossEncoder(model_l1).predict(good))
    reports = skip_reports(err)
    assert sorted(reports) == sorted(bad_numbers)
    for number, fragment in bad_numbers.items():
        assert f"{path}, line {number}: " in reports[number] and fragment in reports[number]
    assert err.splitlines()[-1] == f"minibert: skipped {len(BAD_LINES)} of {len(lines)} lines"
    assert "Traceback" not in err

    # Without --skip-bad the first bad line stops the command, after the output of the lines before it.
    status, out, err = run(["score", "-m", model_l1, path], capsys, monkeypatch)
    assert (status, out.count("\n")) == (EXIT_USAGE, 1)
    assert_one_error_line(err, f"{path}, line 2:", "no tab")


def test_score_lone_surrogate_in_json_names_the_line(model_l1, capsys, monkeypatch):
    status, out, err = run(["score", "-m", model_l1], capsys, monkeypatch,
                           b'q\tp\n{"query": "q", "passage": "a\\udc80b"}\n')
    assert (status, out.count("\n")) == (EXIT_USAGE, 1)
    assert_one_error_line(err, "<stdin>, line 2:", "passage", "not valid Unicode")


def test_rank_skip_bad_keeps_line_indices_as_corpus_ids(model_l1, capsys, monkeypatch):
    stdin = b"paris is the capital of france\n\xff\xfe\nthe cat sat on the mat\n\xc3\x28\nrome is a big city\n"
    status, out, err = run(["rank", "-m", model_l1, "-q", QUERY, "--skip-bad", "--json"], capsys, monkeypatch, stdin)
    assert status == EXIT_OK
    hits = json.loads(out)
    texts = {hit["corpus_id"]: hit["text"] for hit in hits}
    assert texts == {0: "paris is the capital of france", 2: "the cat sat on the mat", 4: "rome is a big city"}
    expected = CrossEncoder(model_l1).predict([(QUERY, texts[i]) for i in (0, 2, 4)])
    assert {hit["corpus_id"]: np.float32(hit["score"]) for hit in hits} == dict(zip((0, 2, 4), expected))
    assert sorted(skip_reports(err)) == [2, 4]
    assert err.splitlines()[-1] == "minibert: skipped 2 of 5 lines"


def test_embed_skip_bad_jsonl_index_is_the_line_index(sentence_model, capsys, monkeypatch):
    stdin = b"first text\n\xff\nthird text\n"
    status, out, err = run(["embed", "-m", sentence_model, "--skip-bad"], capsys, monkeypatch, stdin)
    assert status == EXIT_OK
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in records] == [0, 2]
    expected = SentenceEncoder(sentence_model).encode(["first text", "third text"])
    np.testing.assert_array_equal(np.array([r["embedding"] for r in records], dtype=np.float32), expected)
    assert sorted(skip_reports(err)) == [2]


def test_embed_npy_skip_bad_and_error(sentence_model, tmp_path, capsys, monkeypatch):
    output = tmp_path / "e.npy"
    stdin = b"first text\n\xff\nthird text\n"
    status, _, err = run(["embed", "-m", sentence_model, "--skip-bad", "-o", output], capsys, monkeypatch, stdin)
    assert status == EXIT_OK
    np.testing.assert_array_equal(np.load(output), SentenceEncoder(sentence_model).encode(["first text", "third text"]))
    # Without --skip-bad: exit 2 and no output file at all (it appears only once complete).
    output.unlink()
    status, _, err = run(["embed", "-m", sentence_model, "-o", output], capsys, monkeypatch, stdin)
    assert status == EXIT_USAGE and not output.exists() and not list(tmp_path.iterdir())
    assert_one_error_line(err, "<stdin>, line 2:", "UTF-8")


# ---------------------------------------------------------------------------------------------
# Streaming: windows of lines, each scored as predict scores it; output a whole line at a time


def test_score_streams_windows_scored_as_predict_scores_them(model_l1, tmp_path, capsys, monkeypatch):
    from minibert.runtime.runner import WINDOW_ITEMS
    rng = np.random.default_rng(0)
    words = np.array("the cat sat on a mat paris is capital of france rome fish river blue".split())
    pairs = [(" ".join(rng.choice(words, 5)), " ".join(rng.choice(words, rng.integers(1, 40))))
             for _ in range(2 * WINDOW_ITEMS + 300)]
    pairs += pairs[:50]   # duplicates across windows
    path = write_lines(tmp_path / "pairs.tsv", [f"{q}\t{p}" for q, p in pairs])
    status, out, err = run(["score", "-m", model_l1, path], capsys, monkeypatch)
    assert (status, err) == (EXIT_OK, "")
    printed = np.array([np.float32(line) for line in out.splitlines()])
    ce = CrossEncoder(model_l1)
    windows = [ce.predict(pairs[i:i + WINDOW_ITEMS]) for i in range(0, len(pairs), WINDOW_ITEMS)]
    np.testing.assert_array_equal(printed, np.concatenate(windows))             # the same numbers, in order
    np.testing.assert_allclose(printed, ce.predict(pairs), rtol=1e-5, atol=1e-5)  # as one call, to rounding


def read_available_lines(stream, count: int, timeout: float) -> list[bytes]:
    """Up to `count` lines from a pipe, waiting at most `timeout` seconds in all."""
    import selectors
    import time
    lines, pending, deadline = [], b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while len(lines) < count and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            lines += [line + b"\n" for line in complete]
    assert pending == b"", f"a partial line was written: {pending!r}"
    return lines


@pytest.mark.parametrize("end", ["eof", "ctrl-c"])
def test_process_score_output_arrives_before_the_input_ends(model_l1, end):
    # The writer keeps stdin open: the first window's scores must come out while the input is still open.
    # Then either the input ends (the rest is scored) or Ctrl-C comes while the command waits for input.
    import signal

    from minibert.runtime.runner import WINDOW_ITEMS
    proc = subprocess.Popen([sys.executable, "-m", "minibert", "score", "-m", str(model_l1)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=process_env(), cwd=REPO, preexec_fn=default_sigint)
    try:
        proc.stdin.write(b"".join(f"query {i}\tpassage {i}\n".encode() for i in range(WINDOW_ITEMS + 5)))
        proc.stdin.flush()
        first = read_available_lines(proc.stdout, WINDOW_ITEMS, timeout=120)
        assert len(first) == WINDOW_ITEMS
        if end == "eof":
            proc.stdin.close()
        else:
            proc.send_signal(signal.SIGINT)
        rest, stderr = proc.stdout.read(), proc.stderr.read()
        returncode = proc.wait(timeout=120)
    finally:
        proc.kill()
    if end == "eof":
        assert (returncode, stderr, rest.count(b"\n")) == (EXIT_OK, b"", 5) and rest.endswith(b"\n")
    else:
        assert (returncode, stderr, rest) == (EXIT_INTERRUPTED, b"", b"")
    expected = CrossEncoder(model_l1).predict([(f"query {i}", f"passage {i}") for i in range(WINDOW_ITEMS)])
    assert [np.float32(line) for line in first] == list(expected)


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_process_ctrl_c_ends_quietly_between_lines(model_l1, tmp_path, delay):
    # SIGINT while the command reads, scores and writes: exit 130, nothing on stderr, only whole lines.
    import signal
    import time
    path = write_lines(tmp_path / "pairs.tsv", [f"query {i}\t" + "passage words " * 20 for i in range(20_000)])
    proc = subprocess.Popen([sys.executable, "-m", "minibert", "score", "-m", str(model_l1), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env(), cwd=REPO,
                            preexec_fn=default_sigint)
    try:
        assert read_available_lines(proc.stdout, 1, timeout=120)   # whole lines: it is streaming now
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        stderr = proc.stderr.read()
        returncode = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert (returncode, stderr) == (EXIT_INTERRUPTED, b"")
    assert rest == b"" or rest.endswith(b"\n")
    assert all(np.isfinite(np.float32(line)) for line in rest.splitlines())


def test_process_stream_memory_is_bounded_by_the_window(model_l1):
    # 20,000 more pairs of 2,000 characters are 40 MB more input (120 MB if held as bytes, lines and
    # pairs, as the CLI once did). Streaming keeps one window: peak RSS must not grow with the pairs.
    # (Measured: 1k 309, 5k 327, 20k 328, 60k 338 MiB; allocator arenas settle after a few windows.)
    def peak_rss_mib(n_pairs: int) -> float:
        proc = subprocess.Popen([sys.executable, "-m", "minibert", "score", "-m", str(model_l1)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=process_env(), cwd=REPO)
        import threading
        counted = []
        reader = threading.Thread(target=lambda: counted.append(sum(1 for _ in proc.stdout)))
        reader.start()
        passage = ("the capital of france is paris " * 70)[:2000]
        for start in range(0, n_pairs, 1000):
            proc.stdin.write(b"".join(f"query {i}\t{passage}\n".encode() for i in range(start, start + 1000)))
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
        assert (proc.returncode, counted) == (0, [n_pairs])
        return usage.ru_maxrss / 1024   # KiB on Linux

    small, large = peak_rss_mib(4_000), peak_rss_mib(24_000)
    print(f"\npeak RSS: 4,000 pairs {small:.0f} MiB, 24,000 pairs {large:.0f} MiB")
    assert large - small < 25, (small, large)


# ---------------------------------------------------------------------------------------------
# Output formats and paths, the terminal, progress


def test_embed_format_follows_the_output_extension(sentence_model, tmp_path, capsys, monkeypatch):
    texts = write_lines(tmp_path / "t.txt", TEXTS[:3])
    expected = SentenceEncoder(sentence_model).encode(TEXTS[:3])
    assert run(["embed", "-m", sentence_model, texts, "-o", tmp_path / "e.jsonl"], capsys, monkeypatch)[0] == EXIT_OK
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    np.testing.assert_array_equal(np.array([r["embedding"] for r in rows], np.float32), expected)
    assert run(["embed", "-m", sentence_model, texts, "-o", tmp_path / "e.json"], capsys, monkeypatch)[0] == EXIT_OK
    assert json.loads((tmp_path / "e.json").read_text()) == rows           # one JSON array of the same objects
    assert run(["embed", "-m", sentence_model, texts, "-o", tmp_path / "E.NPY"], capsys, monkeypatch)[0] == EXIT_OK
    np.testing.assert_array_equal(np.load(tmp_path / "E.NPY"), expected)
    status, out, err = run(["embed", "-m", sentence_model, texts, "-o", tmp_path / "e.txt"], capsys, monkeypatch)
    assert (status, out) == (EXIT_USAGE, "") and not (tmp_path / "e.txt").exists()
    assert_one_error_line(err, "e.txt", ".npy, .jsonl or .json", "--format")
    status, _, _ = run(["embed", "-m", sentence_model, texts, "-o", tmp_path / "e.txt", "--format", "jsonl"],
                       capsys, monkeypatch)
    assert status == EXIT_OK and (tmp_path / "e.txt").read_text() == (tmp_path / "e.jsonl").read_text()
    status, out, _ = run(["embed", "-m", sentence_model, texts, "--format", "json"], capsys, monkeypatch)
    assert status == EXIT_OK and json.loads(out) == rows
    assert run(["embed", "-m", sentence_model, "--format", "json"], capsys, monkeypatch, b"")[1] == "[]\n"


@pytest.mark.parametrize("where, fragment", [
    ("missing/e.npy", "no directory"),
    ("a-directory", "is a directory; expected a file name"),
])
def test_embed_output_errors_name_the_users_path(sentence_model, tmp_path, where, fragment, capsys, monkeypatch):
    (tmp_path / "a-directory").mkdir()
    output = tmp_path / where
    status, out, err = run(["embed", "-m", sentence_model, "-o", output, "--format", "npy"], capsys, monkeypatch,
                           b"a text\n")
    assert (status, out) == (EXIT_USAGE, "")
    assert_one_error_line(err, str(output), fragment)
    assert "partial" not in err and not list(tmp_path.rglob("*partial*"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_embed_output_that_cannot_be_written_names_the_users_path(sentence_model, capsys, monkeypatch):
    status, out, err = run(["embed", "-m", sentence_model, "-o", "/proc/e.npy"], capsys, monkeypatch, b"a text\n")
    assert (status, out) == (EXIT_FAILURE, "")   # /proc takes no new files, not even from root
    assert_one_error_line(err, "cannot write /proc/e.npy: ")
    assert "partial" not in err


class TerminalStdin(io.TextIOWrapper):
    def isatty(self):
        return True


def test_a_terminal_on_stdin_gets_one_hint_line(model_l1, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", TerminalStdin(io.BytesIO(b"a passage\n"), encoding="utf-8"))
    status = main(["rank", "-m", str(model_l1), "-q", QUERY])
    out, err = capsys.readouterr()
    assert status == EXIT_OK and out.startswith("1\t")
    assert err == "minibert: reading passages from the terminal, one per line; end with Ctrl-D\n"
    status, _, err = run(["rank", "-m", model_l1, "-q", QUERY], capsys, monkeypatch, b"a passage\n")  # a pipe: quiet
    assert (status, err) == (EXIT_OK, "")


@pytest.mark.parametrize("command", ["rank", "score", "embed"])
def test_progress_bar_on_request_and_never_on_a_pipe(command, model_l1, sentence_model, tmp_path, capsys,
                                                     monkeypatch):
    model = sentence_model if command == "embed" else model_l1
    lines = ["q\tp"] * 3 if command == "score" else ["a", "b", "a"]
    argv = [command, "-m", model, write_lines(tmp_path / "in.txt", lines)] + (["-q", QUERY] if command == "rank" else [])
    status, out, err = run(argv + ["--progress"], capsys, monkeypatch)
    bar = err.rstrip("\n").rpartition("\r")[2]
    assert status == EXIT_OK and "3/3" in bar and "/s" in bar, err   # the lines given, duplicates included
    assert run(argv, capsys, monkeypatch)[2] == ""                   # stderr is not a terminal: no bar
    assert run(argv + ["--no-progress"], capsys, monkeypatch)[2] == ""


def test_python_m_minibert_from_a_folder_holding_a_clone_named_minibert(tmp_path):
    # `python -m minibert` run from tmp_path: its minibert/ (a clone without __init__.py at its top) comes
    # first on sys.path and makes `minibert` a namespace package; an editable install then still finds
    # this checkout's minibert/__main__.py through that namespace. The state it leaves, built by hand:
    (tmp_path / "minibert" / "minibert").mkdir(parents=True)
    (tmp_path / "minibert" / "README.md").write_text("a clone\n")
    script = ("import runpy, sys; sys.path.insert(0, ''); import minibert; "
              f"assert minibert.__file__ is None; minibert.__path__.append({str(REPO / 'minibert')!r}); "
              "sys.argv = ['minibert', '--version']; "
              f"runpy.run_path({str(REPO / 'minibert' / '__main__.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=tmp_path, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert (done.returncode, done.stderr.decode()) == (0, "")
    assert done.stdout.decode() == f"minibert {minibert.__version__}\n"
