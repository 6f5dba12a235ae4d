"""Batch inference over tables: score pairs (or embed texts) one batch of rows at a time.

`CrossEncoderScorer` and `SentenceEmbedder` are callable classes: each loads its model once, in
`__init__`, then takes one batch (a dict of NumPy arrays, a pandas DataFrame or a pyarrow Table)
and returns the same kind of batch with the output column(s) added and every other column passed
through. That is the shape Ray Data's `map_batches` wants for an actor pool (each actor builds
one instance and feeds it a stream of batches), and also what Spark's `mapInPandas` and Dask's
`map_partitions` call. Every number comes from `CrossEncoder.predict` / `SentenceEncoder.encode`,
so a row's score does not depend on how the rows were cut into blocks and batches.

`run` is the `minibert batch` command: parquet or JSON lines in, parquet out, on Ray or in-process.
Everything it can check before scoring (input files, columns, output folder, model) it checks
first, so a bad run fails in seconds instead of after an hour of scoring.

Importing this module imports neither ray, pandas nor pyarrow: each is imported where a batch
of that kind or the command needs it.
"""

import functools
import glob
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from minibert.errors import ConfigError, InputError, MinibertError
from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.long_passages import DEFAULT_STRIDE
from minibert.runtime.sentence_encoder import SentenceEncoder

ON_BAD = ("raise", "skip")
ACTOR_RESTARTS = 4       # a killed actor is started again (model reloaded) up to this many times...
TASK_RETRIES = 4         # ...and the batches it held are sent again, to it or another actor, this often
IO_TASK_CPUS = 0.25      # what Ray's read and write tasks reserve, so they fit beside the actors
LOCAL_ACTOR_CPUS = 0.5   # what an actor reserves on `--ray local`: a core's worth of actors leaves room to read
ROWS_PER_BATCH = 256     # rows handed to the scorer at a time: small enough that the last batches end together


# ---------------------------------------------------------------------------------------------
# One batch: the kinds of batch, their columns, and building the output


def _batch_kind(batch) -> str:
    if isinstance(batch, dict):
        return "numpy"
    cls = type(batch)
    if cls.__module__.split(".")[0] == "pandas" and cls.__name__ == "DataFrame":
        return "pandas"
    if cls.__module__.split(".")[0] == "pyarrow" and cls.__name__ == "Table":
        return "pyarrow"
    raise InputError("expected a batch as a dict of NumPy arrays, a pandas DataFrame or a pyarrow Table, "
                     f"found {cls.__module__}.{cls.__name__}")


def _columns(batch, kind) -> list[str]:
    return list(batch) if kind == "numpy" else list(batch.columns) if kind == "pandas" else batch.column_names


def _num_rows(batch, kind) -> int:
    if kind == "numpy":
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch) if kind == "pandas" else batch.num_rows


def _column_values(batch, kind, name) -> list:
    """A column as Python objects: None (or NaN in pandas) for a null."""
    if kind == "numpy":
        return np.asarray(batch[name]).tolist()
    return batch[name].tolist() if kind == "pandas" else batch.column(name).to_pylist()


def _is_null(value) -> bool:
    """None, or pandas' and NumPy's ways of saying null (NaN, pd.NA)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType"


def _row(batch, kind, names, i) -> str:
    """"id=7, query=null, passage='text...'": a row's columns and values, for an error message."""
    def value(name):
        if kind == "numpy":
            v = batch[name][i]
        elif kind == "pandas":
            v = batch[name].iloc[i]
        else:
            v = batch.column(name)[i].as_py()
        v = v.item() if isinstance(v, np.generic) else v
        text = "null" if _is_null(v) else repr(v)
        return text if len(text) <= 80 else text[:77] + "..."
    return ", ".join(f"{name}={value(name)}" for name in names)


def text_problem(value, column: str) -> str | None:
    """Why `value`, from the column `column`, is not a text to score (None when it is one)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"column {column!r} holds a lone surrogate (not encodable text)"
        return None
    if _is_null(value):
        return f"column {column!r} is null, expected a string"
    return f"column {column!r} holds a {type(value).__name__}, expected a string"


def _with_columns(batch, kind, columns: dict):
    """batch plus `columns` (name -> (float32 values [n] or [n, D], bad rows [n] bool) or str/None list)."""
    if kind == "numpy":
        out = dict(batch)
        for name, column in columns.items():
            out[name] = column[0] if isinstance(column, tuple) else np.array(column, dtype=object)
        return out
    if kind == "pandas":
        import pandas as pd

        def series(column):
            if not isinstance(column, tuple):
                return pd.Series(column, index=batch.index, dtype=object)
            values, bad = column
            if values.ndim == 1:
                return pd.Series(values, index=batch.index)   # NaN, pandas' null of floats, for bad rows
            return pd.Series([None if b else v for v, b in zip(values, bad)], index=batch.index, dtype=object)
        return batch.assign(**{name: series(column) for name, column in columns.items()})
    import pyarrow as pa

    def array(column):
        if not isinstance(column, tuple):
            return pa.array(column, type=pa.string())
        values, bad = column
        mask = pa.array(bad, type=pa.bool_())
        if values.ndim == 1:
            return pa.array(values, type=pa.float32(), mask=bad)
        flat = pa.array(values.reshape(-1), type=pa.float32())           # [n * D]
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1], mask=mask)
    for name, column in columns.items():
        batch = batch.append_column(name, array(column))
    return batch


class _BatchMapper:
    """What both callables share: read the input columns, set bad rows aside, add the outputs."""

    def __init__(self, input_columns: tuple[str, ...], on_bad: str, error_column: str):
        if on_bad not in ON_BAD:
            raise ConfigError(f"on_bad must be one of {ON_BAD}, found {on_bad!r}")
        self.input_columns, self.on_bad, self.error_column = input_columns, on_bad, error_column

    def output_columns(self) -> list[str]:
        """The columns the callable adds, in order (the error column with on_bad='skip')."""
        return self._value_columns() + ([self.error_column] if self.on_bad == "skip" else [])

    def __call__(self, batch):
        kind = _batch_kind(batch)
        names = _columns(batch, kind)
        for column in self.input_columns:
            if column not in names:
                raise InputError(f"the batch has no column {column!r} (its columns: {', '.join(map(str, names))})")
        taken = [column for column in self.output_columns() if column in names]
        if taken:
            raise InputError(f"the batch already has a column {taken[0]!r}; choose another output column name")

        n = _num_rows(batch, kind)
        inputs = [_column_values(batch, kind, column) for column in self.input_columns]
        errors = [None] * n
        for column, values in zip(self.input_columns, inputs):
            for i, value in enumerate(values):
                if errors[i] is None:
                    errors[i] = text_problem(value, column)
        bad = np.array([e is not None for e in errors], dtype=bool)
        if bad.any() and self.on_bad == "raise":
            first = int(np.argmax(bad))
            more = f" ({int(bad.sum()) - 1} more bad rows in this batch)" if bad.sum() > 1 else ""
            raise InputError(f"row {first} of the batch ({_row(batch, kind, names, first)}): {errors[first]}{more}")

        good = np.flatnonzero(~bad)
        items = [tuple(values[i] for values in inputs) for i in good]
        computed = self._compute(items)                               # [g] or [g, D]
        values = np.full((n,) + computed.shape[1:], np.nan, dtype=np.float32)
        values[good] = computed
        columns = {name: (values[:, j] if len(self._value_columns()) > 1 else values, bad)
                   for j, name in enumerate(self._value_columns())}
        if self.on_bad == "skip":
            columns[self.error_column] = errors
        return _with_columns(batch, kind, columns)

    def __reduce__(self):
        # Pickled by its arguments, so that Dask, Spark or multiprocessing ship a few bytes and
        # each worker loads the model itself.
        return (_rebuild, (type(self), self._arguments))


def _rebuild(cls, arguments):
    return cls(**arguments)


class CrossEncoderScorer(_BatchMapper):
    """Adds CrossEncoder.predict's score of (row[query_column], row[passage_column]) to each row.

    Args:
        model: a model directory, as for CrossEncoder.
        query_column, passage_column: the input columns (strings).
        output_column: the score column (float32); for a model with several labels, one column per
            label, "<output_column>_<label>" with the labels of id2label in id order.
        threads: cores per instance, as CrossEncoder's threads (1: one actor per core scales best).
        activation: None (raw logits), "sigmoid" or "softmax", as for predict.
        on_bad: "raise" (default): a row whose query or passage is null or not a string is an
            InputError naming the row's columns and values. "skip": such a row gets a null score
            and a message in `error_column` (null for the rows that were scored).
        batch_size: pairs per forward pass, as for predict.
        long_passages, stride: as for predict ("max": a long passage is scored whole, in windows).
        **options: other CrossEncoder options (max_length, max_batch_tokens, ops).
    """

    def __init__(self, model, query_column="query", passage_column="passage", output_column="score", threads=1,
                 activation=None, on_bad="raise", error_column="error", batch_size=32, long_passages="truncate",
                 stride=DEFAULT_STRIDE, **options):
        super().__init__((query_column, passage_column), on_bad, error_column)
        self._arguments = dict(model=model, query_column=query_column, passage_column=passage_column,
                               output_column=output_column, threads=threads, activation=activation, on_bad=on_bad,
                               error_column=error_column, batch_size=batch_size, long_passages=long_passages,
                               stride=stride, **options)
        self.model = CrossEncoder(model, threads=threads, **options)
        self.windows = {"long_passages": long_passages, "stride": stride}
        self.model.predict([], batch_size=batch_size, activation=activation, **self.windows)  # checks the options now
        self.output_column, self.activation, self.batch_size = output_column, activation, batch_size

    def _value_columns(self) -> list[str]:
        if self.model.num_labels == 1:
            return [self.output_column]
        labels = self.model.id2label
        return [f"{self.output_column}_{labels[i]}" for i in range(self.model.num_labels)]

    def _compute(self, pairs: list) -> np.ndarray:
        scores = self.model.predict(pairs, batch_size=self.batch_size, activation=self.activation, **self.windows)
        return scores.reshape(len(pairs), self.model.num_labels) if self.model.num_labels > 1 else scores.reshape(len(pairs))


class SentenceEmbedder(_BatchMapper):
    """Adds SentenceEncoder.encode's embedding of row[text_column] to each row.

    The embedding column holds float32 vectors of get_embedding_dimension() values: a [n, D]
    array in a NumPy batch, one array per row in pandas, a fixed-size list in pyarrow. Bad rows,
    threads, batch_size and **options (max_length, max_batch_tokens, ops) as for CrossEncoderScorer;
    normalize as for encode.
    """

    def __init__(self, model, text_column="text", output_column="embedding", threads=1, normalize=False,
                 on_bad="raise", error_column="error", batch_size=32, **options):
        super().__init__((text_column,), on_bad, error_column)
        self._arguments = dict(model=model, text_column=text_column, output_column=output_column, threads=threads,
                               normalize=normalize, on_bad=on_bad, error_column=error_column,
                               batch_size=batch_size, **options)
        self.model = SentenceEncoder(model, threads=threads, **options)
        self.model.encode([], batch_size=batch_size, normalize=normalize)  # checks both options now
        self.output_column, self.normalize, self.batch_size = output_column, normalize, batch_size

    def _value_columns(self) -> list[str]:
        return [self.output_column]

    def _compute(self, texts: list) -> np.ndarray:
        dimension = self.model.get_embedding_dimension()
        embeddings = self.model.encode([text for (text,) in texts], batch_size=self.batch_size,
                                       normalize=self.normalize)
        return embeddings.reshape(len(texts), dimension)             # [g, D]


# ---------------------------------------------------------------------------------------------
# The `minibert batch` command: inputs, output folder, then Ray or in-process


PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def input_files(path: str) -> tuple[str, list[str]]:
    """(format, files) of --input: a file, a folder (every data file under it) or a glob pattern."""
    if any(c in path for c in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    elif os.path.isdir(path):
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                       if not name.startswith((".", "_")))   # _SUCCESS, .crc files beside the data
    elif os.path.isfile(path):
        files = [path]
    else:
        raise InputError(f"--input {path}: no such file or folder")
    if not files:
        raise InputError(f"--input {path}: no files found")
    formats = set()
    for f in files:
        suffix = Path(f).suffix.lower()
        if suffix not in PARQUET_SUFFIXES + JSONL_SUFFIXES:
            raise InputError(f"{f}: cannot tell the format: expected a name ending in "
                             f"{', '.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)}")
        formats.add("parquet" if suffix in PARQUET_SUFFIXES else "jsonl")
    if len(formats) > 1:
        raise InputError(f"--input {path}: holds both parquet and JSON lines files; give one format")
    return formats.pop(), [os.path.abspath(f) for f in files]


def check_inputs(fmt: str, files: list[str], columns: tuple[str, ...], added: list[str]) -> int:
    """Read every file's schema (parquet: the footer; JSON lines: every line) and check the columns.

    Returns the number of rows. Raises InputError naming the file (and column) of the first problem."""
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    rows = 0
    for f in files:
        try:
            if fmt == "parquet":
                metadata = pq.read_metadata(f)
                schema, n = metadata.schema.to_arrow_schema(), metadata.num_rows
            else:
                reader, n = pa_json.open_json(f), 0
                schema = reader.schema
                for record_batch in reader:
                    n += record_batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            what = "parquet" if fmt == "parquet" else "JSON lines"
            raise InputError(f"{f}: not a readable {what} file: {exc}") from None
        for column in columns:
            if column not in schema.names:
                raise InputError(f"{f}: no column {column!r} (its columns: {', '.join(schema.names) or 'none'})")
            kind = schema.field(column).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
                    or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
                raise InputError(f"{f}: column {column!r} holds {kind}, expected strings")
        for column in added:
            if column in schema.names:
                raise InputError(f"{f}: already has a column {column!r}, which the output would add; "
                                 "choose another --output-column")
        rows += n
    return rows


def prepare_output(path: str) -> Path:
    """Check --output (a new or empty folder) and make the folder the run writes into first.

    The output appears under its name only once complete (the partial folder is renamed)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"--output {out}: the folder is not empty; give a new or empty folder")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
        probe = partial / ".probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise InputError(f"--output {out}: cannot write there: {exc.strerror or exc}") from None
    return partial


def run(model: str, input_path: str, output: str, *, ray_address: str | None = None, actors: int | None = None,
        actor_cpus: float | None = None, query_column="query", passage_column="passage", output_column="score",
        threads: int | None = None, activation=None, skip_bad=False, batch_size=32, max_length=None,
        long_passages="truncate", stride=DEFAULT_STRIDE, rows_per_batch=ROWS_PER_BATCH, log=None, widen=False) -> int:
    """Score every row of input_path into parquet files in the folder `output`; returns the row count.

    Progress goes to `log` (default: stderr). widen: CrossEncoder's (half-precision weights widened at load)."""
    started, log = time.monotonic(), log or sys.stderr
    if actor_cpus is not None and not actor_cpus > 0:
        raise ConfigError(f"--actor-cpus must be a positive number of CPUs, found {actor_cpus!r}")
    require_extra(ray=ray_address is not None)
    fmt, files = input_files(input_path)
    options = dict(query_column=query_column, passage_column=passage_column, output_column=output_column,
                   activation=activation, on_bad="skip" if skip_bad else "raise", batch_size=batch_size,
                   long_passages=long_passages, stride=stride,
                   **({} if max_length is None else {"max_length": max_length}), **({"widen": True} if widen else {}))
    model = os.path.abspath(model)
    local_scorer = CrossEncoderScorer(model, threads=threads, **options)  # the model is checked before any scoring
    rows = check_inputs(fmt, files, (query_column, passage_column), local_scorer.output_columns())
    partial = prepare_output(output)
    print(f"minibert: {rows} rows in {len(files)} {fmt} file(s)", file=log, flush=True)
    try:
        if ray_address is None:
            _run_in_process(local_scorer, fmt, files, partial, rows, rows_per_batch, log)
        else:
            del local_scorer
            _run_on_ray(ray_address, model, dict(options, threads=threads or 1), fmt, files, partial,
                        actors, actor_cpus, rows_per_batch, log)
        written = _count_rows(partial)
        if written != rows:
            raise InputError(f"wrote {written} rows for {rows} input rows; the output is not complete")
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"minibert: wrote {rows} rows to {output} in {time.monotonic() - started:.1f} s", file=log, flush=True)
    return rows


def require_extra(ray: bool) -> None:
    """The packages of the `ray` extra that a run needs, before anything else is done: pyarrow (to read and
    write the files) always, ray with --ray. A missing one is one MinibertError that says what to install."""
    import importlib
    import importlib.util

    try:
        importlib.import_module("pyarrow")
    except ImportError:
        raise MinibertError("minibert batch needs pyarrow to read and write the files, and it is not installed: "
                            "pip install 'minibert-ce[ray]' (ray, pandas and pyarrow), or pip install pyarrow "
                            "for scoring in this process only") from None
    if ray and importlib.util.find_spec("ray") is None:   # found, not imported: it reads its settings at import
        raise MinibertError("minibert batch --ray needs ray, and it is not installed: pip install 'minibert-ce[ray]'")


def _count_rows(folder: Path) -> int:
    import pyarrow.parquet as pq
    return sum(pq.read_metadata(f).num_rows for f in sorted(folder.glob("*.parquet")))


def _run_in_process(scorer, fmt, files, partial: Path, rows: int, rows_per_batch: int, log) -> None:
    """The same reading and writing as on Ray, in this process: one output file per input file."""
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    done, shown = 0, time.monotonic()
    for number, f in enumerate(files):
        if fmt == "parquet":
            record_batches = pq.ParquetFile(f).iter_batches(batch_size=rows_per_batch)
        else:
            record_batches = pa_json.open_json(f)
        writer = None
        try:
            for record_batch in record_batches:
                for start in range(0, record_batch.num_rows, rows_per_batch):
                    table = scorer(pa.Table.from_batches([record_batch.slice(start, rows_per_batch)]))
                    if writer is None:
                        writer = pq.ParquetWriter(partial / f"part-{number:05d}.parquet", table.schema)
                    writer.write_table(table)
                    done += table.num_rows
                    if done == rows or time.monotonic() - shown >= 5:
                        print(f"minibert: scored {done}/{rows} rows", file=log, flush=True)
                        shown = time.monotonic()
        finally:
            if writer is not None:
                writer.close()


def _run_on_ray(address: str, model: str, options: dict, fmt, files, partial: Path, actors, actor_cpus,
                rows_per_batch: int, log) -> None:
    """Read, score and write on Ray: a local Ray started here, a cluster at `address`, or the Ray this
    process is already connected to (then left running)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no usage report sent anywhere
    if address == "local":
        # A Ray for this machine alone listens on the loopback address, not on the machine's own.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    import ray.data

    owned = not ray.is_initialized()
    if owned:
        ray.init(**({"num_cpus": os.cpu_count(), "include_dashboard": False} if address == "local" else
                    {"address": address}))
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        if address == "local":
            # One actor per core, each reserving half a CPU: the other half stays free, so Ray's
            # read and write tasks can run beside the actors (with a whole CPU per actor they
            # would wait for a CPU forever).
            actors = actors or cpus
            actor_cpus = actor_cpus or LOCAL_ACTOR_CPUS
        else:
            # One actor per core but one per node (left to reading and writing), each reserving
            # the CPUs its threads use, so that no node gets more actors than cores.
            actors = actors or max(1, cpus - nodes)
            actor_cpus = actor_cpus or options["threads"]
        print(f"minibert: scoring on Ray ({cpus} CPUs, {nodes} node(s)): {actors} actor(s) of "
              f"{options['threads']} thread(s), {actor_cpus} CPU reserved each", file=log, flush=True)
        read = ray.data.read_parquet if fmt == "parquet" else functools.partial(ray.data.read_json, lines=True)
        context = ray.data.DataContext.get_current()
        saved, context.raise_original_map_exception = context.raise_original_map_exception, True  # a bad row's own error
        try:
            with warnings.catch_warnings():
                # Ray 2.60 deprecates passing actor options such as max_restarts this way, and has no other way yet.
                warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
                scored = read(files, num_cpus=IO_TASK_CPUS).map_batches(
                    CrossEncoderScorer, fn_constructor_kwargs=dict(options, model=model), batch_format="pyarrow",
                    batch_size=rows_per_batch, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus,
                    max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
            scored.write_parquet(str(partial), ray_remote_args={"num_cpus": IO_TASK_CPUS})
        except Exception as exc:
            cause = _minibert_cause(exc)
            if cause is None:
                raise
            raise cause from None   # a bad row, reported as it would be in-process
        finally:
            context.raise_original_map_exception = saved
    finally:
        if owned:
            ray.shutdown()


def _minibert_cause(exc: BaseException | None) -> MinibertError | None:
    """The MinibertError a scoring actor raised, from inside the exceptions Ray wraps it in."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)   # a RayTaskError is also an instance of what it wraps: unwrap it
        if isinstance(exc, MinibertError) and not isinstance(inner, MinibertError):
            return exc
        exc = inner or exc.__cause__ or exc.__context__
    return None
