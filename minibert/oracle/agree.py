"""Does another backend still rank like the reference? `minibert agree`: the reference's scores and a
backend's (a scores file, an ONNX graph, a server) for the same pairs, compared per query and overall.

Per query (the pairs that share a query), in the space both are compared in (`space`: the raw logits, or
their sigmoid when the backend reports sigmoids; the reference then gets the same sigmoid):

    max_abs_diff, mean_abs_diff   |backend - reference|
    spearman                      Pearson's correlation of the two sides' ranks (ties share their mean rank)
    kendall_tau                   Kendall's tau-b: (concordant - discordant) / sqrt((n0 - n1) (n0 - n2)), with
                                  n0 = n (n - 1) / 2 pairs and n1, n2 the pairs tied on each side
    top1_agreement                1 when the backend's best passage is one of the reference's best, else 0
    top_k_overlap                 |backend's top k & reference's top k| / min(k, n)
    ndcg_at_10                    NDCG@10 of the backend's ordering, the reference's scores as graded
                                  relevance: gain = (s - min) / (max - min) of the reference's raw logits
                                  within the query (all 1 when they are all equal), discount log2(rank + 1)
    ranking_identical             both orderings are the same

Orderings are by score, best first, ties in input order (as `minibert rank` breaks them). A statistic that
is undefined for a query (fewer than two passages; one side all ties) is None there and left out of the
mean. Overall: max and mean |diff| over every pair; every other figure the mean over queries.

With judgments (TREC qrels: `qid 0 docid rel`), each side's NDCG@10 (gain = rel, the ideal ordering over
every judged document of the query, as trec_eval's ndcg_cut_10) and MRR@10 (1 / the rank of the first
passage with rel > 0 in the top 10, else 0), over the queries with at least one rel > 0.

Only NumPy: the statistics are written here (and checked against scipy.stats in the tests).
"""

import math
from dataclasses import dataclass

import numpy as np

from minibert.errors import InputError

K = 10


# ---------------------------------------------------------------------------------------------
# The statistics, on two [n] arrays


def ranks(x) -> np.ndarray:
    """1-based ranks of x ascending, tied values sharing their mean rank: [n] -> [n] float64."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]]))   # first index of each tie run
    ends = np.concatenate([starts[1:], [len(x)]])
    mean_rank = (starts + ends + 1) / 2.0                         # mean of ranks starts+1 .. ends
    out = np.empty(len(x))
    out[order] = np.repeat(mean_rank, ends - starts)
    return out


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the ranks. NaN if either side is constant or n < 2."""
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x) - (len(x) + 1) / 2.0, ranks(y) - (len(y) + 1) / 2.0
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator else math.nan


def kendall_tau_b(x, y, block: int = 1024) -> float:
    """Kendall's tau-b over every pair of positions (O(n^2), in blocks of rows). NaN if n < 2 or a side is all ties."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.nan
    score = tied_x = tied_y = 0
    for a in range(0, n, block):
        rows = slice(a, min(a + block, n))
        later = np.arange(n)[None, :] > np.arange(a, rows.stop)[:, None]    # [b, n]: each pair once
        sx = np.sign(x[rows, None] - x[None, :])                            # [b, n]
        sy = np.sign(y[rows, None] - y[None, :])
        score += int((sx * sy)[later].sum())                                # concordant - discordant
        tied_x += int(((sx == 0) & later).sum())
        tied_y += int(((sy == 0) & later).sum())
    n0 = n * (n - 1) // 2
    denominator = math.sqrt(float(n0 - tied_x) * float(n0 - tied_y))
    return score / denominator if denominator else math.nan


def order(scores) -> np.ndarray:
    """Indices best first, ties in input order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def dcg(gains_in_order, k: int) -> float:
    g = np.asarray(gains_in_order, dtype=np.float64)[:k]
    return float((g / np.log2(np.arange(2, len(g) + 2))).sum())


def ndcg(gains, scores, k: int = K, ideal_gains=None) -> float:
    """NDCG@k of the ordering by `scores` (best first, ties in input order) with these gains. The ideal
    ordering is of `ideal_gains` (default: gains). NaN when the ideal DCG is 0."""
    gains = np.asarray(gains, dtype=np.float64)
    ideal = np.sort(np.asarray(gains if ideal_gains is None else ideal_gains, dtype=np.float64))[::-1]
    best = dcg(ideal, k)
    return dcg(gains[order(scores)], k) / best if best > 0 else math.nan


def reference_gains(reference_logits) -> np.ndarray:
    """Graded relevance from the reference's raw logits: min-max within the query, all 1 if they are all equal."""
    r = np.asarray(reference_logits, dtype=np.float64)
    spread = r.max() - r.min()
    return (r - r.min()) / spread if spread > 0 else np.ones_like(r)


def mrr(relevance_in_order, k: int = K) -> float:
    hits = np.flatnonzero(np.asarray(relevance_in_order)[:k] > 0)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def top_k_overlap(reference, theirs, k: int = K) -> float:
    k = min(k, len(reference))
    return len(set(order(reference)[:k].tolist()) & set(order(theirs)[:k].tolist())) / k


def top1_agreement(reference, theirs) -> float:
    reference = np.asarray(reference)
    return float(reference[order(theirs)[0]] == reference.max())


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass(frozen=True)
class Group:
    """The pairs of one query: their indices in the pairs file, and the ids for qrels (None without)."""
    query: str
    query_id: str | None
    rows: list
    doc_ids: list | None


def group_pairs(queries, query_ids=None, doc_ids=None) -> list[Group]:
    """Pairs that share a query (its query_id if given, else its text), in order of first appearance."""
    groups = {}
    for row, query in enumerate(queries):
        key = query_ids[row] if query_ids is not None else query
        groups.setdefault(key, []).append(row)
    return [Group(queries[rows[0]], None if query_ids is None else key, rows,
                  None if doc_ids is None else [doc_ids[r] for r in rows]) for key, rows in groups.items()]


def read_qrels(path) -> dict:
    """A TREC qrels file: `qid iteration docid relevance` per line -> {qid: {docid: relevance}}."""
    qrels = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 4:
                    raise InputError(f"{path}, line {number}: expected 'qid 0 docid relevance', found "
                                     f"{len(fields)} fields")
                try:
                    relevance = int(fields[3])
                except ValueError:
                    raise InputError(f"{path}, line {number}: relevance {fields[3]!r} is not an integer") from None
                qrels.setdefault(fields[0], {})[fields[2]] = relevance
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the qrels ({exc})") from None
    return qrels


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))     # = 1 / (1 + e^-x), without overflow


SPACES = ("logit", "sigmoid")


def pick_space(reference, theirs) -> str:
    """The space the backend's scores are in: sigmoid when every one is in [0, 1] and they are nearer the
    reference's sigmoid than its logits, else logit."""
    theirs = np.asarray(theirs, dtype=np.float64)
    if not len(theirs) or theirs.min() < 0 or theirs.max() > 1:
        return "logit"
    return "sigmoid" if (np.abs(sigmoid(reference) - theirs).max() < np.abs(reference - theirs).max()) else "logit"


def _mean(values):
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def _number(x):
    return None if x is None or math.isnan(x) else float(x)


def agree(reference, theirs, groups: list[Group], space: str, k: int = K, qrels: dict | None = None) -> dict:
    """Compare `theirs` ([n]) with the reference's raw logits ([n]) per query group and overall, in `space`
    ("logit", or "sigmoid": the reference's sigmoid against theirs). Returns the report as a JSON-ready dict."""
    if space not in SPACES:
        raise InputError(f"space must be one of {', '.join(SPACES)}, found {space!r}")
    reference = np.asarray(reference, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    if reference.shape != theirs.shape:
        raise InputError(f"{len(theirs)} backend scores for {len(reference)} pairs")
    if not np.isfinite(theirs).all():
        row = int(np.flatnonzero(~np.isfinite(theirs))[0])
        raise InputError(f"the backend's score of pair {row} is {theirs[row]}: not a finite number")
    compared = sigmoid(reference) if space == "sigmoid" else reference
    diff = np.abs(theirs - compared)
    per_query = []
    for group in groups:
        ref, their, mine = reference[group.rows], theirs[group.rows], compared[group.rows]
        row = {"query": group.query, **({"query_id": group.query_id} if group.query_id is not None else {}),
               "pairs": len(group.rows),
               "max_abs_diff": float(diff[group.rows].max()), "mean_abs_diff": float(diff[group.rows].mean()),
               "kendall_tau": _number(kendall_tau_b(mine, their)), "spearman": _number(spearman(mine, their)),
               "top1_agreement": top1_agreement(mine, their), "top_k_overlap": top_k_overlap(mine, their, k),
               "ndcg_at_10": ndcg(reference_gains(ref), their, K),
               "ranking_identical": bool((order(mine) == order(their)).all())}
        if qrels is not None:
            row.update(_judged(group, qrels, ref, their))
        per_query.append(row)
    report = {"pairs": len(reference), "queries": len(groups), "space": space, "k": k,
              "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
              "mean_abs_diff": float(diff.mean()) if len(diff) else 0.0}
    for key in ("kendall_tau", "spearman", "top1_agreement", "top_k_overlap", "ndcg_at_10"):
        report[key] = _mean(q[key] for q in per_query)
    report["rankings_identical"] = sum(q["ranking_identical"] for q in per_query)
    if qrels is not None:
        judged = [q for q in per_query if q.get("judged")]
        report["qrels"] = {"queries": len(judged), **{key: _mean(q[key] for q in judged) for key in (
            "reference_ndcg_at_10", "backend_ndcg_at_10", "reference_mrr_at_10", "backend_mrr_at_10")}}
    report["per_query"] = per_query
    return report


def _judged(group: Group, qrels: dict, reference, theirs) -> dict:
    judgments = qrels.get(str(group.query_id), {})
    if not any(rel > 0 for rel in judgments.values()):
        return {"judged": False}
    relevance = np.array([max(judgments.get(str(doc), 0), 0) for doc in group.doc_ids], dtype=np.float64)
    ideal = [max(rel, 0) for rel in judgments.values()]
    out = {"judged": True}
    for side, scores in (("reference", reference), ("backend", theirs)):
        out[f"{side}_ndcg_at_10"] = _number(ndcg(relevance, scores, K, ideal_gains=ideal))
        out[f"{side}_mrr_at_10"] = mrr(relevance[order(scores)], K)
    return out


# ---------------------------------------------------------------------------------------------
# Thresholds, verdict, text


def verdict(report: dict, min_ndcg=None, min_tau=None, max_diff=None) -> tuple[bool, str]:
    """(ok, one line): every threshold given is met; the line says the key figures and what failed."""
    failed = []
    checks = (("mean NDCG@10", report["ndcg_at_10"], min_ndcg, ">="), ("mean Kendall tau", report["kendall_tau"],
              min_tau, ">="), ("max |diff|", report["max_abs_diff"], max_diff, "<="))
    for what, value, bound, sense in checks:
        if bound is None:
            continue
        if value is None or (value < bound if sense == ">=" else value > bound):
            failed.append(f"{what} {_fmt(value)} not {sense} {bound:g}")
    figures = (f"rankings identical in {report['rankings_identical']} of {report['queries']} "
               f"quer{'y' if report['queries'] == 1 else 'ies'}, mean Kendall "
               f"tau {_fmt(report['kendall_tau'])}, mean NDCG@10 {_fmt(report['ndcg_at_10'])}, max |diff| "
               f"{report['max_abs_diff']:.2e} ({report['space']})")
    if not any(bound is not None for _, _, bound, _ in checks):
        return True, f"verdict: {figures} (no thresholds given)"
    if failed:
        return False, f"verdict: FAIL: {'; '.join(failed)}; {figures}"
    return True, f"verdict: PASS: {figures}"


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_agree(report: dict, backend: str, model: str, verdict_line: str) -> str:
    space = ("raw logits" if report["space"] == "logit" else
             "sigmoid: the backend reports sigmoids, so the reference's logits go through the same sigmoid")
    queries = f"{report['queries']} quer{'y' if report['queries'] == 1 else 'ies'}"
    lines = [f"{backend} against {model}: {report['pairs']} pairs, {queries}; compared as {space}"]
    qrels = "qrels" in report
    head = f"{'query':<32} {'pairs':>5} {'max|diff|':>9} {'mean|diff|':>10} {'spearman':>8} {'tau':>7} " \
           f"{'top1':>4} {'top' + str(report['k']):>6} {'ndcg@10':>7}"
    lines.append(head + ("  qrels ndcg@10 ref/backend  mrr@10 ref/backend" if qrels else ""))
    for q in report["per_query"]:
        name = q["query"] if len(q["query"]) <= 32 else q["query"][:31] + "…"
        line = (f"{name:<32} {q['pairs']:>5} {q['max_abs_diff']:9.2e} {q['mean_abs_diff']:10.2e} "
                f"{_fmt(q['spearman'], 3):>8} {_fmt(q['kendall_tau'], 3):>7} {q['top1_agreement']:>4.0f} "
                f"{q['top_k_overlap']:>6.2f} {_fmt(q['ndcg_at_10'], 4):>7}")
        if qrels and q.get("judged"):
            line += (f"  {_fmt(q['reference_ndcg_at_10'])} / {_fmt(q['backend_ndcg_at_10'])}"
                     f"         {_fmt(q['reference_mrr_at_10'])} / {_fmt(q['backend_mrr_at_10'])}")
        lines.append(line)
    lines.append(f"overall: max |diff| {report['max_abs_diff']:.2e}, mean |diff| {report['mean_abs_diff']:.2e}, "
                 f"mean spearman {_fmt(report['spearman'])}, mean Kendall tau {_fmt(report['kendall_tau'])}, "
                 f"top-1 agreement {_fmt(report['top1_agreement'], 3)}, top-{report['k']} overlap "
                 f"{_fmt(report['top_k_overlap'], 3)}, mean NDCG@10 {_fmt(report['ndcg_at_10'])}")
    if qrels:
        j = report["qrels"]
        lines.append(f"qrels ({j['queries']} judged queries): NDCG@10 reference {_fmt(j['reference_ndcg_at_10'])}, "
                     f"backend {_fmt(j['backend_ndcg_at_10'])}; MRR@10 reference {_fmt(j['reference_mrr_at_10'])}, "
                     f"backend {_fmt(j['backend_mrr_at_10'])}")
    lines.append(verdict_line)
    return "\n".join(lines) + "\n"
