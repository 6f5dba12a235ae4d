"""minibert.batch and `minibert batch`: the callables on every kind of batch, then a real local Ray.

Numbers first: every score must be CrossEncoder.predict's for the row's pair (within 1e-5), and
every input row must come out exactly once, however the rows are cut into blocks and batches,
also when an actor process is killed in the middle of the run. Then the errors that must come
before any scoring. One local Ray serves the module (started on the loopback address, no
dashboard, no usage report); after it stops, no process it started may be left.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minibert import CrossEncoder, InputError, SentenceEncoder
from minibert.batch import ACTOR_RESTARTS, TASK_RETRIES, CrossEncoderScorer, SentenceEmbedder
from minibert.cli import EXIT_FAILURE, EXIT_USAGE, main
from minibert.formats.fetch import make_demo_cross_encoder

REPO = Path(__file__).resolve().parents[1]
TINY_L1 = REPO / "tests" / "fixtures" / "goldens" / "tiny-l1"   # 1 label
TINY_L3 = REPO / "tests" / "fixtures" / "goldens" / "tiny-l3"   # contradiction, entailment, neutral
QWEN3 = REPO / "tests" / "fixtures" / "goldens" / "qwen3-reranker"   # a decoder reranker
MINILM = REPO / "weights" / "all-MiniLM-L6-v2"
# A local Ray that reaches nothing: loopback only (Ray binds the machine's address otherwise), no usage report.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

WORDS = ("the a of and to in is what how city capital paris france berlin germany rome italy cat dogs sat on "
         "mat cheese moon sun river fish bird tree water blue green red big small fast slow").split()


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n rows {id, query, passage, tag}: varied lengths, some repeated pairs, a column to pass through."""
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, rng.integers(1, 6))) for _ in range(n // 10 + 1)]
    rows = []
    for i in range(n):
        passage = " ".join(rng.choice(WORDS, rng.integers(0, 30)))
        rows.append({"id": i, "query": queries[rng.integers(len(queries))], "passage": passage, "tag": f"t{i % 3}"})
    if n > 7:
        rows[7].update(query=rows[3]["query"], passage=rows[3]["passage"])   # a duplicate pair
    return rows


def expected_scores(model_dir, rows, **predict_args) -> np.ndarray:
    return CrossEncoder(model_dir).predict([(r["query"], r["passage"]) for r in rows], **predict_args)


def check_output(ids, scores, rows, expected) -> None:
    """Every input row exactly once, with predict's score."""
    ids = np.asarray(ids)
    assert len(ids) == len(rows), f"{len(ids)} output rows for {len(rows)} input rows"
    assert sorted(ids.tolist()) == list(range(len(rows))), "rows lost or duplicated"
    order = np.argsort(ids)
    np.testing.assert_allclose(np.asarray(scores, dtype=np.float32)[order], expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The callables, on one batch (no Ray)


def test_importing_minibert_imports_no_extra():
    code = ("import sys, minibert, minibert.cli, minibert.batch\n"
            "loaded = sorted(m for m in ('ray', 'pandas', 'pyarrow') if m in sys.modules)\n"
            "assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind", ["numpy", "pandas", "pyarrow"])
def test_scorer_adds_predicts_scores_and_keeps_the_other_columns(kind):
    rows = make_rows(300)
    table = pa.Table.from_pylist(rows)
    batch = {"numpy": lambda: {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names},
             "pandas": table.to_pandas, "pyarrow": lambda: table}[kind]()
    out = CrossEncoderScorer(TINY_L1)(batch)

    assert type(out) is type(batch)
    frame = pa.table(out) if kind == "numpy" else pa.Table.from_pandas(out) if kind == "pandas" else out
    assert frame.column_names == ["id", "query", "passage", "tag", "score"]
    assert frame.column("id").to_pylist() == list(range(300))
    assert frame.column("tag").to_pylist() == [r["tag"] for r in rows]
    np.testing.assert_allclose(frame.column("score").to_numpy(), expected_scores(TINY_L1, rows), rtol=0, atol=1e-5)
    assert frame.column("score").type == pa.float32()


def test_multi_label_model_gets_one_column_per_label_and_the_activation():
    rows = make_rows(50)
    out = CrossEncoderScorer(TINY_L3, activation="softmax")(pa.Table.from_pylist(rows))
    labels = ["score_contradiction", "score_entailment", "score_neutral"]
    assert out.column_names == ["id", "query", "passage", "tag"] + labels
    scores = np.stack([out.column(c).to_numpy() for c in labels], axis=1)
    np.testing.assert_allclose(scores, expected_scores(TINY_L3, rows, activation="softmax"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "pandas", "pyarrow"])
def test_a_bad_row_is_an_error_naming_its_columns_and_values(kind):
    rows = make_rows(5)
    rows[2]["query"] = None
    table = pa.Table.from_pylist(rows)
    batch = {"numpy": lambda: {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names},
             "pandas": table.to_pandas, "pyarrow": lambda: table}[kind]()
    with pytest.raises(InputError) as info:
        CrossEncoderScorer(TINY_L1)(batch)
    message = str(info.value)
    assert "row 2" in message and "id=2" in message and "query=null" in message
    assert f"passage={rows[2]['passage']!r}"[:60] in message and "tag='t2'" in message
    assert "column 'query' is null, expected a string" in message


def test_skip_scores_the_other_rows_and_writes_a_null_score_and_an_error():
    rows = make_rows(6)
    rows[1]["passage"], rows[4]["query"] = None, 17
    good = [r for i, r in enumerate(rows) if i not in (1, 4)]
    frame = pd.DataFrame(rows)    # query holds a str or an int: only pandas (or NumPy) can hold that
    out = CrossEncoderScorer(TINY_L1, on_bad="skip")(frame)
    assert list(out.columns) == ["id", "query", "passage", "tag", "score", "error"]
    assert out["score"].isna().tolist() == [i in (1, 4) for i in range(6)]
    np.testing.assert_allclose(out["score"].dropna().to_numpy(), expected_scores(TINY_L1, good), rtol=0, atol=1e-5)
    assert out["error"][1] == "column 'passage' is null, expected a string"
    assert out["error"][4] == "column 'query' holds a int, expected a string"
    assert out["error"].isna().sum() == 4

    arrow = CrossEncoderScorer(TINY_L1, on_bad="skip")(pa.Table.from_pandas(frame.drop(index=4)))
    assert arrow.column("score").null_count == 1 and arrow.column("error").null_count == 4
    assert arrow.column("score").type == pa.float32() and arrow.column("error").type == pa.string()

    # A batch of bad rows only still has typed columns (a parquet writer needs the same schema in every batch).
    every_bad = CrossEncoderScorer(TINY_L3, on_bad="skip")(pa.table({"query": [None, None], "passage": ["a", None]}))
    assert every_bad.schema.types[2:] == [pa.float32(), pa.float32(), pa.float32(), pa.string()]
    assert every_bad.column("score_neutral").null_count == 2


def test_missing_column_and_taken_output_column_are_errors():
    with pytest.raises(InputError, match=r"no column 'question' \(its columns: id, query, passage, tag\)"):
        CrossEncoderScorer(TINY_L1, query_column="question")(pa.Table.from_pylist(make_rows(3)))
    with pytest.raises(InputError, match="already has a column 'tag'"):
        CrossEncoderScorer(TINY_L1, output_column="tag")(pa.Table.from_pylist(make_rows(3)))


def test_scorer_pickles_by_its_arguments_as_dask_and_spark_ship_it():
    scorer = CrossEncoderScorer(TINY_L1, output_column="s", batch_size=7)
    data = pickle.dumps(scorer)
    assert len(data) < 2000          # the arguments, not the weights
    frame = pd.DataFrame(make_rows(40))
    pd.testing.assert_frame_equal(pickle.loads(data)(frame), scorer(frame))


def test_sentence_embedder_writes_encodes_embeddings():
    texts = [r["passage"] for r in make_rows(60)]
    table = pa.table({"id": list(range(60)), "text": texts})
    expected = SentenceEncoder(MINILM).encode(texts, normalize=True)
    embedder = SentenceEmbedder(MINILM, normalize=True)
    numpy_batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    for embeddings in (embedder(numpy_batch)["embedding"],                                  # [n, D]
                       np.stack(embedder(table.to_pandas())["embedding"].to_list()),        # an array per row
                       np.stack(embedder(table).column("embedding").to_numpy(zero_copy_only=False))):  # fixed-size lists
        assert embeddings.shape == (60, 384) and embeddings.dtype == np.float32
        np.testing.assert_allclose(embeddings, expected, rtol=0, atol=1e-5)
    assert embedder(table).column("embedding").type == pa.list_(pa.float32(), 384)


# ---------------------------------------------------------------------------------------------
# `minibert batch` without Ray, and its checks before any scoring


def write_inputs(folder: Path, rows, files=3, fmt="parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        part = rows[k::files]
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(part), folder / f"part-{k}.parquet", row_group_size=37)
        else:
            (folder / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return folder


def cli(argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "minibert", *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), **RAY_ENV), timeout=timeout)


def run_main(argv, capsys):
    """main(argv) in this process -> (exit status, stderr)."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def read_output(folder: Path) -> pa.Table:
    files = sorted(folder.glob("*.parquet"))
    assert files, f"no parquet file in {folder}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_batch_in_process_on_json_lines(tmp_path):
    rows = make_rows(500)
    write_inputs(tmp_path / "in", rows, fmt="jsonl")
    proc = cli(["batch", "-m", TINY_L1, "--input", tmp_path / "in" / "*.jsonl", "--output", tmp_path / "out"])
    assert proc.returncode == 0, proc.stderr
    out = read_output(tmp_path / "out")
    assert out.column_names == ["id", "query", "passage", "tag", "score"]
    check_output(out.column("id").to_numpy(), out.column("score").to_numpy(), rows, expected_scores(TINY_L1, rows))
    assert "scored 500/500 rows" in proc.stderr and "wrote 500 rows" in proc.stderr


def test_batch_skip_bad_writes_a_null_score_and_the_error(tmp_path, capsys):
    rows = make_rows(40)
    rows[5]["passage"] = None
    write_inputs(tmp_path / "in", rows, files=1)
    status, stderr = run_main(["batch", "-m", TINY_L1, "--input", tmp_path / "in" / "part-0.parquet",
                               "--output", tmp_path / "out", "--skip-bad"], capsys)
    assert status == 0, stderr
    out = read_output(tmp_path / "out")
    assert out.column_names == ["id", "query", "passage", "tag", "score", "error"]
    assert out.column("score").to_pylist()[5] is None and out.column("score").null_count == 1
    assert out.column("error").to_pylist()[5] == "column 'passage' is null, expected a string"
    good = [r for r in rows if r["passage"] is not None]
    scores = [s for s in out.column("score").to_pylist() if s is not None]
    np.testing.assert_allclose(scores, expected_scores(TINY_L1, good), rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["malformed parquet", "malformed json", "missing column", "not strings",
                                  "output is a file", "output under a file", "output not empty", "taken column"])
def test_batch_errors_before_any_scoring_name_the_file_or_column(tmp_path, capsys, case):
    inputs = write_inputs(tmp_path / "in", make_rows(30), files=2, fmt="jsonl" if "json" in case else "parquet")
    output = tmp_path / "out"
    argv = ["--output-column", "tag"] if case == "taken column" else []
    if case == "malformed parquet":
        (inputs / "part-1.parquet").write_bytes(b"PAR1 not really")
        expected = f"{inputs / 'part-1.parquet'}: not a readable parquet file"
    elif case == "malformed json":
        with open(inputs / "part-1.jsonl", "a", encoding="utf-8") as f:
            f.write('{"id": 99, "query": "q", "passage": \n')
        expected = f"{inputs / 'part-1.jsonl'}: not a readable JSON lines file"
    elif case == "missing column":
        pq.write_table(pa.table({"query": ["q"], "text": ["p"]}), inputs / "part-1.parquet")
        expected = f"{inputs / 'part-1.parquet'}: no column 'passage' (its columns: query, text)"
    elif case == "not strings":
        pq.write_table(pa.table({"query": [1], "passage": ["p"]}), inputs / "part-0.parquet")
        expected = f"{inputs / 'part-0.parquet'}: column 'query' holds int64, expected strings"
    elif case == "output is a file":
        output.write_text("x")
        expected = f"--output {output}: exists and is not a folder"
    elif case == "output under a file":
        (tmp_path / "file").write_text("x")
        output = tmp_path / "file" / "out"
        expected = f"--output {output}: cannot write there"
    elif case == "output not empty":
        output.mkdir()
        (output / "old.parquet").write_bytes(b"")
        expected = f"--output {output}: the folder is not empty"
    else:
        expected = "already has a column 'tag', which the output would add"
    # With --ray local: a check that failed to stop the run would start Ray and score.
    status, stderr = run_main(["batch", "-m", TINY_L1, "--input", inputs, "--output", output, "--ray", "local", *argv],
                              capsys)
    assert status == EXIT_USAGE, stderr
    assert stderr.startswith("minibert: error: ") and expected in stderr, stderr
    assert "Ray" not in stderr and "ray" not in sys.modules
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("missing, argv", [("pyarrow", []), ("pyarrow", ["--ray", "local"]),
                                           ("ray", ["--ray", "local"])],
                         ids=["pyarrow in-process", "pyarrow on ray", "ray"])
def test_batch_without_its_extra_says_what_to_install_in_one_line(missing, argv, tmp_path, capsys, monkeypatch):
    """`pip install -e '.[fast]'` has neither pyarrow nor ray: one line that says what to install, as serve does."""
    monkeypatch.setitem(sys.modules, missing, None)   # `import pyarrow` raises ModuleNotFoundError
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"query": "q", "passage": "p"}\n')
    status, stderr = run_main(["batch", "-m", TINY_L1, "--input", inputs, "--output", tmp_path / "out", *argv],
                              capsys)
    assert status == EXIT_FAILURE, stderr
    assert stderr.startswith("minibert: error: ") and stderr.count("\n") == 1, stderr
    assert f"needs {missing}" in stderr and "pip install 'minibert-ce[ray]'" in stderr, stderr
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_batch_help_says_which_extra_each_path_needs(capsys):
    assert main(["batch", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "in this process (needs pyarrow" in text and "'ray' extra" in text


# ---------------------------------------------------------------------------------------------
# On a real local Ray


def test_batch_on_a_local_ray_it_starts_itself(tmp_path):
    """--ray local on this 2-core machine: two actors beside Ray's read and write tasks, no deadlock."""
    rows = make_rows(400, seed=3)
    write_inputs(tmp_path / "in", rows, files=2, fmt="jsonl")
    proc = cli(["batch", "-m", TINY_L1, "--input", tmp_path / "in", "--output", tmp_path / "out", "--ray", "local"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 actor(s) of 1 thread(s), 0.5 CPU reserved each" in proc.stderr
    out = read_output(tmp_path / "out")
    check_output(out.column("id").to_numpy(), out.column("score").to_numpy(), rows, expected_scores(TINY_L1, rows))


def _descendants() -> set[int]:
    """pids of this process's descendants (Ray's GCS, raylet and workers, when it started them)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def ray_address():
    saved = {name: os.environ.get(name) for name in [*RAY_ENV, "PYTHONPATH"]}
    os.environ.update(RAY_ENV, PYTHONPATH=str(REPO))   # the workers import this tree's minibert
    import ray
    import ray.data

    before = _descendants()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = _descendants() - before
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    deadline = time.monotonic() + 30
    while (left := started & _descendants()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left after shutdown: {[_cmdline(pid)[:80] for pid in left]}"


def map_batches(dataset, model, actors=2, options=None, **kwargs):
    """The README's recipe: an actor pool of one-thread scorers, each reserving half a CPU here.
    options: CrossEncoderScorer's other arguments."""
    import ray.data
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")   # max_restarts, ...
        return dataset.map_batches(CrossEncoderScorer,
                                   fn_constructor_kwargs={"model": str(model), "threads": 1, **(options or {})},
                                   compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=0.5,
                                   max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES, **kwargs)


def test_ray_scores_every_row_exactly_once_however_split(ray_address):
    """7 blocks cut into batches of 97 rows (the command below: 3 files of row groups of 37, batches of 1024)."""
    import ray.data
    rows = make_rows(2000, seed=1)
    dataset = ray.data.from_items(rows, override_num_blocks=7)
    out = map_batches(dataset, TINY_L1, batch_size=97, batch_format="numpy").to_pandas()
    assert list(out.columns) == ["id", "query", "passage", "tag", "score"]
    check_output(out["id"], out["score"], rows, expected_scores(TINY_L1, rows))
    assert out.set_index("id").sort_index()["tag"].tolist() == [r["tag"] for r in rows]


def test_ray_scorer_takes_the_long_passage_options(ray_address):
    """long_passages / stride reach the actors: a long passage's score is predict's best window."""
    import ray.data
    rows = make_rows(60, seed=8)
    for row in rows[::3]:
        row["passage"] = " ".join(WORDS * 3) + " " + row["passage"]   # about 4 windows of tiny-l1's 48 tokens
    out = map_batches(ray.data.from_items(rows, override_num_blocks=2), TINY_L1, actors=1, batch_size=25,
                      batch_format="numpy", options={"long_passages": "max", "stride": 8}).to_pandas()
    expected = expected_scores(TINY_L1, rows, long_passages="max", stride=8)
    assert not np.allclose(expected, expected_scores(TINY_L1, rows))
    check_output(out["id"], out["score"], rows, expected)


def test_ray_scores_a_decoder_reranker(ray_address):
    """A decoder reranker (the qwen3-reranker golden: Qwen3ForCausalLM + LogitScore through its chat template) on
    the actors: predict's scores, every row once."""
    import ray.data
    rows = make_rows(40, seed=5)
    out = map_batches(ray.data.from_items(rows, override_num_blocks=2), QWEN3, actors=1, batch_size=13,
                      batch_format="numpy").to_pandas()
    check_output(out["id"], out["score"], rows, expected_scores(QWEN3, rows))


def test_batch_command_on_a_running_ray(ray_address, tmp_path, capsys):
    """In a process already connected to Ray (the module's), `minibert batch` scores on that Ray."""
    rows = make_rows(1500, seed=5)
    write_inputs(tmp_path / "in", rows, files=3)
    status, stderr = run_main(["batch", "-m", TINY_L1, "--input", tmp_path / "in", "--output", tmp_path / "out",
                               "--ray", ray_address, "--actors", "2", "--actor-cpus", "0.5"], capsys)
    assert status == 0, stderr[-3000:]
    assert "scoring on Ray (2 CPUs, 1 node(s)): 2 actor(s) of 1 thread(s), 0.5 CPU reserved each" in stderr
    out = read_output(tmp_path / "out")
    assert out.column_names == ["id", "query", "passage", "tag", "score"]
    check_output(out.column("id").to_numpy(), out.column("score").to_numpy(), rows, expected_scores(TINY_L1, rows))


def test_a_bad_row_on_ray_stops_the_run_with_its_columns_and_values(ray_address, tmp_path, capsys):
    rows = make_rows(200, seed=6)
    rows[150]["passage"] = None
    write_inputs(tmp_path / "in", rows, files=1)
    status, stderr = run_main(["batch", "-m", TINY_L1, "--input", tmp_path / "in", "--output", tmp_path / "out",
                               "--ray", ray_address, "--actors", "1", "--actor-cpus", "0.5"], capsys)
    assert status == EXIT_USAGE, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("minibert: error: ") and "id=150" in last and "passage=null" in last, last
    assert "column 'passage' is null, expected a string" in last
    assert not (tmp_path / "out").exists()


def test_a_killed_actor_is_restarted_and_no_row_is_lost_or_duplicated(ray_address, tmp_path):
    """SIGKILL one scoring actor after the first scored batch: Ray restarts it and retries its batches."""
    import ray.data
    # The demonstration MiniLM-L6 cross-encoder (tools/bench.py's): slow enough per batch that the actors are
    # busy when hit.
    model = make_demo_cross_encoder(MINILM, tmp_path / "minilm-ce")
    rows = make_rows(480, seed=7)
    dataset = ray.data.from_items(rows, override_num_blocks=12)
    scored = map_batches(dataset, model, batch_size=20, batch_format="pyarrow")

    ids, scores, killed, received_at_kill = [], [], None, None
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        ids += batch.column("id").to_pylist()
        scores += batch.column("score").to_pylist()
        if killed is None:
            workers = sorted(pid for pid in _descendants() if _cmdline(pid).startswith("ray::MapWorker"))
            assert workers, "no actor process found"
            killed, received_at_kill = workers[0], len(ids)
            os.kill(killed, signal.SIGKILL)
    assert received_at_kill < len(rows), "the run ended before the kill"
    assert not Path(f"/proc/{killed}").exists() or "MapWorker" not in _cmdline(killed)
    check_output(ids, scores, rows, expected_scores(model, rows))
