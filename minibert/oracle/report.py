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
    width = max([len(s.name) for s in report.stages] + [5])
    lines.append(f"{'stage':<{width}}  {'max_abs':>9}  {'max_rel':>9}  {'nmse':>9}  {'min_cos':>9}")
    for s in report.stages:
        lines.append(f"{s.name:<{width}}  {s.max_abs:9.2e}  {s.max_rel:9.2e}  {s.nmse:9.2e}  {s.min_cosine:9.6f}  "
                     + ("ok" if s.ok else "DIVERGES"))
    if report.missing:
        lines.append(f"not in the trace: {', '.join(report.missing)}")
    div = report.first_divergence
    if div is None:
        lines.append("every stage agrees" + ("" if report.tokens_match is not False else "; the tokens do not"))
    else:
        token = "" if div.token is None else f", token {div.token}"
        lines.append(f"first divergence: {div.stage}, pair {div.pair}{token}, dim {div.dim}: "
                     f"reference {div.reference:.7g}, theirs {div.theirs:.7g}")
        lines.append(f"diagnosis: {div.diagnosis or 'no known pattern'}")
    return "\n".join(lines) + "\n"
