"""A comparison's report as text, for the command line (`minibert compare`; --json prints Report.to_json)."""

from minibert.oracle.compare import Report
from minibert.oracle.trace import Trace


def format_report(report: Report, trace: Trace, model: str) -> str:
    B, N = trace.num_pairs, len(trace.input_ids)
    producer = f", producer {trace.metadata['producer']}" if trace.metadata.get("producer") else ""
    lines = [f"{trace.source}: {trace.layout}, {B} pairs, {N} real tokens{producer}; reference: {model}"]
    if report.tokens_match is None:
        lines.append("tokens: not checked (give --pairs to check them)")
    elif report.tokens_match:
        lines.append(f"tokens: match ({B} pairs)")
    else:
        lines.append(f"tokens: DIFFER: {report.token_mismatch}")
    lines += stage_lines(report, "not in the trace: " + ", ".join(report.missing) if report.missing else None)
    return "\n".join(lines) + "\n"


def format_onnx_report(report: Report, trace: Trace, located, header: dict, model: str) -> str:
    """`compare --onnx`'s report: the graph, where each stage was found (and which were not), then the stages."""
    B, N = trace.num_pairs, len(trace.input_ids)
    lines = [(f"{header['file']}: ONNX graph exported by {header['exporter']}, opset {header['opset']}, run by "
              f"onnxruntime {header['onnxruntime']} on {B} pairs, {N} real tokens; reference: {model}"),
             (f"inputs: {', '.join(header['inputs'])}, from minibert's tokenizer (tokens not compared: the graph "
              "takes token ids), padded as the graph expects; only real tokens compared")]
    lines += [f"note: {note}" for note in located.notes]
    width = max(len(name) for name in [*located.tensors, *located.not_located])
    lines += [f"  {stage:<{width}}  <- {tensor}" for stage, tensor in located.tensors.items()]
    missing = None
    if located.not_located:
        missing = "not located in the graph: " + "; ".join(f"{stage} ({why})" for stage, why in
                                                             located.not_located.items())
    lines += stage_lines(report, missing)
    return "\n".join(lines) + "\n"


def stage_lines(report: Report, missing: str | None) -> list[str]:
    """The table of stages, what was not compared, and the first divergence with its diagnosis."""
    width = max([len(s.name) for s in report.stages] + [5])
    lines = [f"{'stage':<{width}}  {'max_abs':>9}  {'max_rel':>9}  {'nmse':>9}  {'min_cos':>9}"]
    for s in report.stages:
        lines.append(f"{s.name:<{width}}  {s.max_abs:9.2e}  {s.max_rel:9.2e}  {s.nmse:9.2e}  {s.min_cosine:9.6f}  "
                     + ("ok" if s.ok else "DIVERGES"))
    if missing:
        lines.append(missing)
    div = report.first_divergence
    if div is None:
        lines.append("every stage agrees" + ("" if report.tokens_match is not False else "; the tokens do not"))
    else:
        token = "" if div.token is None else f", token {div.token}"
        lines.append(f"first divergence: {div.stage}, pair {div.pair}{token}, dim {div.dim}: "
                     f"reference {div.reference:.7g}, theirs {div.theirs:.7g}")
        lines.append(f"diagnosis: {div.diagnosis or 'no known pattern'}")
    return lines
