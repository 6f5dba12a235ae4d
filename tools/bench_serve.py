"""Served throughput of `minibert serve` against offline predict on the same pairs, in one run.

    python tools/bench_serve.py                       # 16 clients, 4 requests each
    python tools/bench_serve.py --clients 4 --requests 8 --max-batch-tokens 4096
    python tools/bench_serve.py --server-threads 1     # the server on 1 BLAS thread, offline on all cores

Needs the serve extra and httpx (`pip install -e '.[fast,serve,serve-test]'`) and the benchmark
model of tools/bench.py (all-MiniLM-L6-v2's encoder with a seeded 1-logit head, made from
weights/all-MiniLM-L6-v2 on first use).

Workload: each request is one of bench.py's 4 queries with 10 to 50 of its 100 passages
(paragraphs of CPython's pydoc_data.topics), drawn with a fixed seed; every client sends its
requests one after the other (closed loop), all clients at once.

Method, in this order, each in its own fresh process for the model:
1. offline: CrossEncoder.predict on all the pairs of all the requests (batch_size 32, bench.py's),
   after a warm-up pass;
2. served: `minibert serve` on 127.0.0.1, a warm-up request, then the clients; served pairs/s is
   all the pairs over the wall time from the first request sent to the last answer;
3. offline again. The ratio is served over the mean of the two offline rates.
Also: latency percentiles of the requests, the forward passes the server made (from /metrics:
pairs and requests per pass), the max |served score - offline score|, and the BLAS that ran.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from bench import BATCH_SIZE, N_PASSAGES, QUERIES, make_model, workload  # noqa: E402

SEED = 2026


def requests_for(clients: int, per_client: int, seed: int = SEED):
    """[[(query, [passage, ...]), ...] per client]: 10-50 passages of one query per request.

    Every pair of the run is distinct (each passage ends with its request's number): predict scores a
    repeated pair once, so with the 400 pairs of the workload drawn again and again, offline predict
    would do a fifth of the server's work and the ratio would measure the deduplication, not the server."""
    pairs = workload()
    passages = [p for _, p in pairs[:N_PASSAGES]]
    rng = np.random.default_rng(seed)
    plan = []
    for client in range(clients):
        mine = []
        for request in range(per_client):
            query = QUERIES[int(rng.integers(len(QUERIES)))]
            chosen = rng.choice(len(passages), size=int(rng.integers(10, 51)), replace=False)
            mine.append((query, [f"{passages[i]} (request {client}.{request})" for i in chosen]))
        plan.append(mine)
    return plan


def offline_child(args):
    """In a fresh process: predict on the pairs of the plan, after a warm-up pass; print one JSON line."""
    from minibert import CrossEncoder

    plan = requests_for(args.clients, args.requests)
    pairs = [(q, p) for mine in plan for q, passages in mine for p in passages]
    ce = CrossEncoder(args.model, threads=args.threads)
    ce.predict(pairs[:256], batch_size=BATCH_SIZE)
    t0 = time.perf_counter()
    scores = ce.predict(pairs, batch_size=BATCH_SIZE)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "pairs": len(pairs), "scores": scores.tolist()}))


def offline(args):
    out = subprocess.run([sys.executable, __file__, "--offline-child", "--model", str(args.model), "--threads",
                          str(args.threads), "--clients", str(args.clients), "--requests", str(args.requests)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def histogram(metrics: str, name: str) -> dict[float, float]:
    """The cumulative buckets {le: count} of a Prometheus histogram."""
    buckets = {}
    for le, value in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', metrics, re.M):
        buckets[float(le)] = float(value)
    return buckets


def summary(metrics: str, name: str) -> tuple[float, float]:
    count = float(re.search(rf"^{name}_count (\S+)$", metrics, re.M).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", metrics, re.M).group(1))
    return count, total


def served(args, plan):
    import httpx

    log = open(REPO / "weights" / "bench-serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "minibert", "serve", "--model", str(args.model), "--port", "0",
         "--threads", str(args.server_threads or args.threads), "--max-client-batch-size", "64",
         "--max-batch-tokens", str(args.max_batch_tokens), "--max-batch-requests", str(args.max_batch_requests)],
        cwd=REPO, stderr=log, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"listening on (http://\S+)", (REPO / "weights" / "bench-serve.log").read_text())):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench_serve: the server did not start; see weights/bench-serve.log")
            time.sleep(0.1)
        url = found.group(1)
        with httpx.Client(base_url=url, timeout=600) as client:
            query, passages = plan[0][0]
            client.post("/rerank", json={"query": query, "texts": passages})   # warm-up
            before = client.get("/metrics").text

        results, latencies = {}, []
        start = threading.Barrier(len(plan) + 1)
        lock = threading.Lock()

        def run_client(c):
            with httpx.Client(base_url=url, timeout=600) as http:
                start.wait()
                for r, (q, texts) in enumerate(plan[c]):
                    t0 = time.perf_counter()
                    response = http.post("/rerank", json={"query": q, "texts": texts, "raw_scores": True})
                    elapsed = time.perf_counter() - t0
                    response.raise_for_status()
                    scores = np.empty(len(texts), dtype=np.float64)
                    for rank in response.json():
                        scores[rank["index"]] = rank["score"]
                    with lock:
                        results[(c, r)] = scores
                        latencies.append(elapsed)

        threads = [threading.Thread(target=run_client, args=(c,)) for c in range(len(plan))]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        with httpx.Client(base_url=url, timeout=60) as client:
            after = client.get("/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    if len(results) != sum(len(mine) for mine in plan):
        raise SystemExit("bench_serve: some requests failed; see weights/bench-serve.log")
    scores = np.concatenate([results[(c, r)] for c in range(len(plan)) for r in range(len(plan[c]))])
    passes = {name: [a - b for a, b in zip(summary(after, name), summary(before, name))]
              for name in ("minibert_batch_inputs", "minibert_batch_requests", "minibert_batch_tokens")}
    largest = {}
    for name in ("minibert_batch_inputs", "minibert_batch_requests"):
        diff = {le: n - histogram(before, name).get(le, 0) for le, n in histogram(after, name).items()}
        total = max(diff.values())
        bounds = sorted(diff)
        largest[name] = (next(le for le in bounds if diff[le] >= total / 2), next(le for le in bounds if diff[le] >= total))
    return seconds, scores, np.array(latencies), passes, largest


def blas():
    import threadpoolctl

    return ", ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}"
                     for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--requests", type=int, default=4, help="requests per client (default: 4)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads (default: all cores)")
    parser.add_argument("--server-threads", type=int, default=None,
                        help="the server's BLAS threads, when not --threads (offline keeps --threads)")
    parser.add_argument("--max-batch-tokens", type=int, default=16384, help="the server's (default: 16384)")
    parser.add_argument("--max-batch-requests", type=int, default=32, help="the server's (default: 32)")
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--offline-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offline_child:
        return offline_child(args)
    args.model = make_model()

    plan = requests_for(args.clients, args.requests)
    n_pairs = sum(len(texts) for mine in plan for _, texts in mine)
    print(f"{args.clients} clients x {args.requests} requests of 10-50 passages: {n_pairs} pairs; "
          f"{args.threads} BLAS threads (server: {args.server_threads or args.threads}); server --max-batch-tokens {args.max_batch_tokens} "
          f"--max-batch-requests {args.max_batch_requests}", flush=True)
    first = offline(args)
    print(f"offline predict (batch {BATCH_SIZE}): {first['pairs'] / first['seconds']:.1f} pairs/s", flush=True)
    seconds, scores, latencies, passes, largest = served(args, plan)
    print(f"served: {n_pairs / seconds:.1f} pairs/s", flush=True)
    second = offline(args)
    print(f"offline predict again: {second['pairs'] / second['seconds']:.1f} pairs/s", flush=True)

    offline_rate = np.mean([first["pairs"] / first["seconds"], second["pairs"] / second["seconds"]])
    served_rate = n_pairs / seconds
    diff = np.abs(scores - np.array(first["scores"])).max()
    (n_passes, pair_sum), (_, request_sum) = passes["minibert_batch_inputs"], passes["minibert_batch_requests"]
    token_sum = passes["minibert_batch_tokens"][1]
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1000
    print()
    print("| clients | served pairs/s | offline pairs/s | served / offline | p50 ms | p90 ms | p99 ms "
          "| passes | pairs / pass (mean, median <=, max <=) | requests / pass (mean, median <=, max <=) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {served_rate:.1f} | {offline_rate:.1f} | {served_rate / offline_rate:.2f} "
          f"| {p50:.0f} | {p90:.0f} | {p99:.0f} | {n_passes:.0f} "
          f"| {pair_sum / n_passes:.1f}, {largest['minibert_batch_inputs'][0]:.0f}, {largest['minibert_batch_inputs'][1]:.0f} "
          f"| {request_sum / n_passes:.1f}, {largest['minibert_batch_requests'][0]:.0f}, "
          f"{largest['minibert_batch_requests'][1]:.0f} |")
    print()
    print(f"tokens per pass: {token_sum / n_passes:.0f} mean; max |served - offline score|: {diff:.1e}")
    print(f"BLAS: {blas()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(not set)')}")


if __name__ == "__main__":
    main()
