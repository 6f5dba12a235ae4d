"""Throughput of batch scoring: CrossEncoder.predict in one process against Ray Data actors, same run.

    python tools/bench_batch.py                 # 20,000 pairs (a few minutes on 2 cores)
    python tools/bench_batch.py --pairs 2000    # a quick check
    python tools/bench_batch.py --actors 2 --rows-per-batch 256

The model is the benchmark's MiniLM-L6 cross-encoder (tools/bench.py: the real all-MiniLM-L6-v2
encoder with a seeded head). Pair i is bench.py's workload pair i mod 400 with " #i" after the
query (as in tools/bench_stream.py), so no two pairs are the same and nothing is saved by
scoring duplicates once.

(a) in-process: a fresh process loads CrossEncoder(threads=all cores) and calls predict on the
    list of pairs (batch_size 32). Timed: the load, and predict.
(b) Ray Data: a local Ray on this machine (loopback only, no dashboard); the pairs as an in-memory
    dataset of blocks of --rows-per-batch rows, map_batches(CrossEncoderScorer) on an actor pool
    of --actors actors (default: one per core) of one BLAS thread each, each reserving half a
    CPU (minibert batch --ray local's setting). Timed: from the start of the run to the last
    scored batch at the driver, so actor start-up (a Ray worker process, the model load) and the
    tail (the last batches, when some actors are already idle) are included; "steady" is the
    rate from the first scored batch on. ray.init itself is not included.
Peak memory: (a) the process's VmHWM; (b) each actor process's VmHWM, polled every 0.2 s.
The scores of (b) are checked against (a)'s (max |diff|, every pair). Both runs use the same
BLAS; its kernel (threadpoolctl) and OPENBLAS_CORETYPE are printed.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO)]   # this tree's minibert, and tools/bench.py
import bench  # noqa: E402  (the workload and the model)


def pairs_of(n: int) -> list[tuple[str, str]]:
    base = bench.workload()
    return [(f"{base[i % len(base)][0]} #{i}", base[i % len(base)][1]) for i in range(n)]


def vm_hwm_mib(pid="self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    """(a), in this fresh process: one JSON line on stdout, the scores in --scores."""
    from minibert import CrossEncoder

    pairs = pairs_of(args.pairs)
    t0 = time.perf_counter()
    model = CrossEncoder(args.model, threads=args.threads)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = model.predict(pairs, batch_size=32)
    score_s = time.perf_counter() - t0
    np.save(args.scores, scores)
    print(json.dumps({"load_s": load_s, "score_s": score_s, "peak_rss_mib": vm_hwm_mib()}))


def in_process(model: Path, n: int, threads: int, scores_path: Path) -> dict:
    argv = [sys.executable, __file__, "--child", "--model", str(model), "--pairs", str(n), "--threads", str(threads),
            "--scores", str(scores_path)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"bench_batch: the in-process run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _descendants() -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class ActorMemory(threading.Thread):
    """Polls the VmHWM of this process's Ray actor processes (ray::MapWorker...) until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = {}, threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            for pid in _descendants():
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::MapWorker"):
                        self.peak[pid] = max(self.peak.get(pid, 0.0), vm_hwm_mib(pid))
                except OSError:
                    continue


def on_ray(model: Path, n: int, actors: int, rows_per_batch: int) -> dict:
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # loopback only
                      PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    import warnings

    import pyarrow as pa
    import ray
    import ray.data

    from minibert.batch import ACTOR_RESTARTS, LOCAL_ACTOR_CPUS, TASK_RETRIES, CrossEncoderScorer

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        pairs = pairs_of(n)
        table = pa.table({"id": np.arange(n), "query": [q for q, _ in pairs], "passage": [p for _, p in pairs]})
        blocks = [table.slice(start, rows_per_batch) for start in range(0, n, rows_per_batch)]
        memory = ActorMemory()
        memory.start()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            scored = ray.data.from_arrow(blocks).map_batches(
                CrossEncoderScorer, fn_constructor_kwargs={"model": str(model), "threads": 1, "batch_size": 32},
                batch_format="pyarrow", batch_size=rows_per_batch, compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=LOCAL_ACTOR_CPUS, max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
        ids, scores, first = [], [], None
        for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            if first is None:
                first, first_rows = time.perf_counter(), batch.num_rows
            ids.append(batch.column("id").to_numpy())
            scores.append(batch.column("score").to_numpy())
        seconds = time.perf_counter() - t0
        memory.done.set()
        memory.join()
        ids, scores = np.concatenate(ids), np.concatenate(scores)
        if sorted(ids.tolist()) != list(range(n)):
            raise SystemExit(f"bench_batch: Ray returned {len(ids)} rows, not each of the {n} rows once")
        ordered = np.empty(n, np.float32)
        ordered[ids] = scores
        steady = (n - first_rows) / (time.perf_counter() - first) if n > first_rows else float("nan")
        return {"seconds": seconds, "first_s": first - t0, "steady_pairs_s": steady, "scores": ordered,
                "actor_peak_mib": sorted(memory.peak.values()), "ray": ray.__version__}
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="(a)'s BLAS threads (default: all cores)")
    parser.add_argument("--actors", type=int, default=os.cpu_count(), help="(b)'s actors (default: one per core)")
    parser.add_argument("--rows-per-batch", type=int, default=256, help="(b)'s rows per block and per scorer call")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--scores", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import threadpoolctl

    model = bench.make_model()
    blas = [{k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpoolctl.threadpool_info()]
    print(f"bench_batch: {args.pairs} pairs, model {model.name}, {os.cpu_count()} cores")
    print(f"BLAS {blas}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")

    scores_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_batch-{os.getpid()}.npy"
    try:
        a = in_process(model, args.pairs, args.threads, scores_path)
        reference = np.load(scores_path)
    finally:
        scores_path.unlink(missing_ok=True)
    b = on_ray(model, args.pairs, args.actors, args.rows_per_batch)

    n = args.pairs
    a_rate, a_total = n / a["score_s"], n / (a["score_s"] + a["load_s"])
    b_rate = n / b["seconds"]
    diff = float(np.max(np.abs(b["scores"] - reference)))
    print()
    print("| run | pairs/s | seconds | peak RSS (MiB) |")
    print("|---|---|---|---|")
    print(f"| (a) predict, 1 process, {args.threads} threads | {a_rate:.1f} (with the load: {a_total:.1f}) | "
          f"{a['score_s']:.1f} + {a['load_s']:.1f} load | {a['peak_rss_mib']:.0f} |")
    print(f"| (b) Ray Data, {args.actors} actors x 1 thread, {args.rows_per_batch} rows per batch | {b_rate:.1f} "
          f"(steady: {b['steady_pairs_s']:.1f}) | {b['seconds']:.1f} (first batch at {b['first_s']:.1f}) | "
          f"{', '.join(f'{m:.0f}' for m in b['actor_peak_mib'])} per actor |")
    print()
    print(f"ratio (b) / (a): {b_rate / a_rate:.2f} (against (a) with its load: {b_rate / a_total:.2f}; "
          f"steady: {b['steady_pairs_s'] / a_rate:.2f})")
    print(f"scores: max |Ray - predict| = {diff:.1e} over {n} pairs; Ray {b['ray']}")


if __name__ == "__main__":
    main()
