"""Peak memory of scoring many pairs: `minibert score` streaming, and CrossEncoder.predict on a list.

    python tools/bench_stream.py                       # 1,000 and 100,000 pairs, both ways
    python tools/bench_stream.py --pairs 1000 10000 --ways cli

The model is the benchmark's MiniLM-L6 cross-encoder (tools/bench.py: the real all-MiniLM-L6-v2
encoder with a seeded head). Pair i is bench.py's workload pair i mod 400 with " #i" after the
query, so that no two pairs are the same and nothing is saved by scoring duplicates once.

- cli: the pairs are generated on the fly into the stdin of `python -m minibert score`, whose
  stdout is counted as it comes; the pairs are never all in memory on either side.
- api: a child process builds the list of pairs, then calls predict on it (the list itself is
  part of what it holds).
Peak RSS is the child's ru_maxrss (os.wait4), so it covers start-up, model load and scoring.
Every run checks that the output count equals the input count, and that the scores of 50
positions spread over the output equal CrossEncoder.predict of those pairs (within 1e-5), which
checks the order too.
"""

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: the workload and the model)

REPO = Path(__file__).resolve().parent.parent

API_CHILD = """
import sys, numpy as np
sys.path.insert(0, {tools!r})
import bench
from minibert import CrossEncoder
base = bench.workload()
n = {n}
pairs = [(base[i % len(base)][0] + f" #{{i}}", base[i % len(base)][1]) for i in range(n)]
scores = CrossEncoder({model!r}).predict(pairs, batch_size=32)
sys.stdout.write("".join(f"{{s!r}}\\n" for s in scores.tolist()))
"""


def pair(base, i):
    query, passage = base[i % len(base)]
    return f"{query} #{i}", passage


def run_child(argv, feed=None):
    """Run argv; feed(stdin) writes its input. -> (stdout lines, seconds, peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))
    reader.start()
    if feed:
        feed(proc.stdin)
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"bench_stream: {argv[:4]} exited with {proc.returncode}")
    return lines, time.perf_counter() - start, usage.ru_maxrss / 1024


def measure(way, n, model, base):
    if way == "cli":
        def feed(stdin):
            for start in range(0, n, 1000):
                stdin.write("".join(f"{q}\t{p}\n" for q, p in map(lambda i: pair(base, i),
                                                                    range(start, min(n, start + 1000)))).encode())
        return run_child([sys.executable, "-m", "minibert", "score", "-m", str(model)], feed)
    code = API_CHILD.format(tools=str(REPO / "tools"), n=n, model=str(model))
    return run_child([sys.executable, "-c", code])


def check(lines, n, model, base):
    from minibert import CrossEncoder

    if len(lines) != n:
        sys.exit(f"bench_stream: {len(lines)} scores for {n} pairs")
    positions = sorted(set(np.linspace(0, n - 1, 50).astype(int).tolist()))
    expected = CrossEncoder(model).predict([pair(base, i) for i in positions])
    got = np.array([float(lines[i]) for i in positions], dtype=np.float32)
    diff = float(np.abs(got - expected).max())
    if diff > 1e-5:
        sys.exit(f"bench_stream: scores differ from predict by {diff}")
    return diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--ways", default="cli,api", help="cli, api or both (cli,api)")
    args = parser.parse_args()
    model = bench.make_model()
    base = bench.workload()
    print(f"model {model.name}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print("| way | pairs | peak RSS | seconds | pairs/s | max diff vs predict (50 positions) |")
    print("|---|---|---|---|---|---|")
    for way in args.ways.split(","):
        for n in args.pairs:
            lines, seconds, rss = measure(way, n, model, base)
            diff = check(lines, n, model, base)
            print(f"| {way} | {n:,} | {rss:.0f} MiB | {seconds:.1f} | {n / seconds:.0f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
