"""Attention alone on one long pair: the reference, and the blocked kernel at several block sizes, in one
process (same-run ratios for choosing kernels.ATTENTION_BLOCK_ELEMENTS).

    python tools/bench_attention.py                       # 16 heads of 64 (bge-reranker-v2-m3), 1k to 8k tokens
    python tools/bench_attention.py --tokens 4096 --window 64 --repeat 5

Prints, per length and variant, the best time of --repeat runs, its GFLOP/s (4 T x keys x H per call) and the
max |diff| against the reference. Run it alone on the machine, with the threads the real runs use
(OPENBLAS_NUM_THREADS, NUMBA_NUM_THREADS).
"""

import argparse
import time

import numpy as np

from minibert.ops import kernels, reference


def best_of(repeat, fn, *args, **kwargs):
    """(the best time of `repeat` calls of fn(*args, **kwargs) after a warm-up, its result)."""
    fn(*args, **kwargs)  # warm-up: compiled kernels loaded, BLAS's buffers made
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="1024,2048,4096,8192")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--window", type=int, default=None, help="a sliding window (ModernBERT's local layers: 64)")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--blocks", default=f"{1 << 18},{1 << 20},{1 << 22}", help="block_elements to try")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mask = {"window": args.window, "causal": args.causal}
    for T in (int(t) for t in args.tokens.split(",")):
        q, k, v = (rng.standard_normal((T, args.heads * args.head_dim), dtype=np.float32) for _ in range(3))
        offsets = np.array([0, T])
        keys = np.minimum(T, np.arange(T) + (args.window or T) + 1) - np.maximum(0, np.arange(T) - (args.window or T))
        if args.causal:
            keys = np.minimum(keys, np.arange(T) + 1)
        flops = 4 * float(keys.sum()) * args.heads * args.head_dim
        seconds, want = best_of(args.repeat, reference.attention, q, k, v, offsets, args.heads, **mask)
        print(f"T={T:5d}  reference                              {seconds:7.3f} s  {flops / seconds / 1e9:6.1f} GFLOP/s")
        for block in (int(b) for b in args.blocks.split(",")):
            seconds, got = best_of(args.repeat, kernels.attention, q, k, v, offsets, args.heads, block_elements=block,
                                   **mask)
            print(f"T={T:5d}  kernel block {block:>8d}  {seconds:7.3f} s  {flops / seconds / 1e9:6.1f} GFLOP/s  "
                  f"max |diff| {np.max(np.abs(got - want)):.2g}", flush=True)


if __name__ == "__main__":
    main()
