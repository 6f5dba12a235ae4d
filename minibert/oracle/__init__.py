"""The oracle: another backend's activations checked against minibert's, stage by stage.

A backend (Candle, an ONNX export, rust-bert, ggml, your own) runs some pairs and writes what it
computed in a trace file; minibert recomputes every stage on that backend's own token ids, so a
backend whose tokenizer differs can still check its math, and says which stage parts first, where,
and what the usual cause of that pattern is.

    trace.py      the trace format (minibert-trace/1): reading and writing
    capture.py    traces made by minibert itself, and captured from transformers or sentence-transformers
    measure.py    one stage against its reference: tolerance, max diffs, cosine
    diagnose.py   the signatures of bugs real backends have had
    compare.py    every stage in forward order, the first divergence; the token ids
    report.py     the report as text
    onnx_graph.py an ONNX graph run on minibert's token ids, its stages found by its structure (`compare --onnx`)
    agree.py      does another backend rank like minibert, per query and overall (`minibert agree`)
    remote.py     scores from a TEI- or Cohere-compatible server, for `agree --url`
    explain.py    one pair's journey through the model, for a learner (`minibert explain`)
"""

from minibert.oracle.capture import trace_from_sentence_transformers, trace_from_transformers, trace_with_minibert
from minibert.oracle.compare import (
           Divergence,
           Report,
           check_tokens,
           compare,
           reference_types,
)
from minibert.oracle.measure import DEFAULT_ATOL, DEFAULT_RTOL, StageResult, reference_stages
from minibert.oracle.report import format_report
from minibert.oracle.trace import FORMAT, Trace, read_trace, write_trace

__all__ = ["FORMAT", "Trace", "read_trace", "write_trace", "trace_with_minibert", "trace_from_transformers",
           "trace_from_sentence_transformers",
           "compare", "reference_stages", "check_tokens", "reference_types", "Report", "Divergence", "StageResult", "format_report",
           "DEFAULT_ATOL", "DEFAULT_RTOL"]
