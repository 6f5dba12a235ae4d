"""Single long pairs at real Hub shapes, minibert against transformers (fp32 sdpa), with FLOP accounting.

    python tools/bench_long.py                  # 1k, 2k, 4k, 8k tokens; bge-reranker-v2-m3 and gte-reranker-modernbert-base shapes
    python tools/bench_long.py --quick          # 2 layers, 1k and 2k tokens, one round: a couple of minutes
    python tools/bench_long.py --tokens 8192 --model-types xlm-roberta --runners minibert
    python tools/bench_long.py --threads 2 --rounds 3 --markdown long.md

In one run: the machine's large-sgemm rate (NumPy, [4096, 1024] x [1024, 4096], best of 5, a fresh process),
each model's FLOPs per pair (the dense layers and attention apart), and for every shape, length and runner the
time of one pair, pairs/s, the achieved GFLOP/s as a share of the sgemm rate, and the peak RSS. Every
measurement is a fresh process; rounds alternate the runners (A B A B ...) and the table gives the median.

Shapes (random seeded weights, vocabulary included, built in memory, so no checkpoint is needed; time and
memory do not depend on the values):
- xlm-roberta: BAAI/bge-reranker-v2-m3 (24 layers, hidden 1024, 16 heads), an 8,192-token model;
- modernbert: Alibaba-NLP/gte-reranker-modernbert-base (22 layers, hidden 768, 12 heads, a 128-token window
  in two layers of three, mean pooling).
Runners: minibert (its default op set, the Numba kernels when installed, shared between the cores as CrossEncoder
runs a single pair: minibert/ops/shared.py) and transformers
(AutoModelForSequenceClassification.from_config, float32, attn_implementation="sdpa", inference mode).
FLOPs count what a forward pass must do on every token (matrix products: q, k, v, output, feed-forward,
q k^T and p v; a sliding-window layer only the band each query sees); minibert's last layer computes the
first token's row only where the head reads it alone, so its real work is a little below the count.
The peak RSS is the process's VmHWM over the build of the weights, the warm-up and the timed pair (the
weights' RSS is given apart in the JSON of each child).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = {
    # BAAI/bge-reranker-v2-m3's config.json
    "xlm-roberta": dict(model_type="xlm-roberta", vocab_size=250002, hidden_size=1024, num_hidden_layers=24,
                        num_attention_heads=16, intermediate_size=4096, max_position_embeddings=8194,
                        type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, hidden_act="gelu", num_labels=1),
    # Alibaba-NLP/gte-reranker-modernbert-base's config.json
    "modernbert": dict(model_type="modernbert", vocab_size=50368, hidden_size=768, num_hidden_layers=22,
                       num_attention_heads=12, intermediate_size=1152, max_position_embeddings=8192,
                       global_attn_every_n_layers=3, local_attention=128, global_rope_theta=160000.0,
                       local_rope_theta=10000.0, pad_token_id=50283, norm_eps=1e-5, hidden_activation="gelu",
                       classifier_pooling="mean", classifier_activation="gelu", num_labels=1),
}


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")



def pair_flops(raw: dict, T: int) -> tuple[float, float]:
    """(dense, attention) FLOPs of one pair of T tokens at a shape: 2 per multiply-add of the matrix products."""
    H, I, L = raw["hidden_size"], raw["intermediate_size"], raw["num_hidden_layers"]
    ffn = 3 * H * I if raw["model_type"] == "modernbert" else 2 * H * I    # GeGLU: Wi is H -> 2I
    dense = L * 2 * T * (4 * H * H + ffn)                                  # q, k, v, out; ffn in, ffn out
    i = np.arange(T)
    attention = 0.0
    for layer in range(L):
        if raw["model_type"] == "modernbert" and layer % raw["global_attn_every_n_layers"]:
            w = raw["local_attention"] // 2                                 # keys |i - j| <= w
            keys = float((np.minimum(T - 1, i + w) - np.maximum(0, i - w) + 1).sum())
        else:
            keys = float(T) * T
        attention += 4 * keys * H                                          # q k^T and p v, all heads
    return float(dense), attention


def random_ids(rng, vocab_size, n):
    ids = rng.integers(5, vocab_size, n)
    ids[0] = 0
    return ids.astype(np.int64)


def minibert_runner(raw, rng, threads):
    """(score one pair of ids, a description, BLAS's threads for it) for minibert at the shape, random weights."""
    from minibert.models import Batch, config_from_dict, family_of, forward
    from minibert.models.params import map_leaves
    from minibert.runtime.runner import Runner

    config = config_from_dict(raw, source=f"<{raw['model_type']} shape>")

    def random_leaf(spec):  # small values, norm weights near 1, as in a trained model; in place, no temporaries
        leaf = rng.standard_normal(spec.shape, dtype=np.float32)
        leaf *= 0.02
        if spec.name.endswith(("norm.weight", "LayerNorm.weight")):
            leaf += 1
        return leaf

    # the op set CrossEncoder runs one pair with (its default: the Numba kernels, shared between the cores) and
    # BLAS's threads meanwhile (one)
    params = map_leaves(random_leaf, family_of(config).skeleton(config, True))
    ops, blas = Runner(threads=threads).pass_ops(1)
    return lambda ids: forward(params, config, Batch.pack([(ids, np.zeros(len(ids), np.int64))]), ops), ops.name, blas


def transformers_runner(raw, threads):
    """(score one pair of ids, a description) for transformers' model at the shape, float32, sdpa."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    config = AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa",
                                                           dtype=torch.float32).eval()

    def score(ids):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids)[None]).logits.numpy()
    return score, f"torch {torch.__version__} sdpa"


def child(args):
    from threadpoolctl import threadpool_info

    from minibert.runtime.runner import limit_threads

    raw = dict(SHAPES[args.model_types])
    if args.layers:
        raw["num_hidden_layers"] = args.layers
    rng = np.random.default_rng(0)
    if args.child == "minibert":
        score, what, blas_threads = minibert_runner(raw, rng, args.threads)
    else:
        (score, what), blas_threads = transformers_runner(raw, args.threads), args.threads
    weights_mib = vm_rss_mib()
    ids = random_ids(rng, raw["vocab_size"], int(args.tokens))
    with limit_threads(blas_threads):
        score(random_ids(rng, raw["vocab_size"], 16))  # warm-up: kernels loaded, BLAS's buffers made
        start = time.perf_counter()
        logits = score(ids)
        seconds = time.perf_counter() - start
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} x{i.get('num_threads')}"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(json.dumps({"runner": args.child, "what": what, "seconds": seconds, "rss_mib_weights": round(weights_mib),
                      "peak_rss_mib": round(vm_hwm_mib()), "logit": float(np.ravel(logits)[0]),
                      "finite": bool(np.isfinite(logits).all()), "blas": blas}))


def sgemm_gflops(env) -> float:
    """NumPy's float32 rate on a large product, [4096, 1024] x [1024, 4096], best of 5, in a fresh process."""
    code = ("import numpy as np, time\n"
            "a = np.random.rand(4096, 1024).astype(np.float32); b = np.random.rand(1024, 4096).astype(np.float32)\n"
            "a @ b; best = 1e9\n"
            "for _ in range(5):\n"
            "    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
            "print(2 * 4096 * 1024 * 4096 / best / 1e9)\n")
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)


def spawn(runner, model_type, tokens, args, env):
    argv = [sys.executable, __file__, "--child", runner, "--model-types", model_type, "--tokens", str(tokens)]
    for flag, value in (("--layers", args.layers), ("--threads", args.threads)):
        if value:
            argv += [flag, str(value)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{runner} {model_type} {tokens} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(model_type, raw, T, runner, runs, seconds, rate):
    dense, attention = pair_flops(raw, T)
    gflops = (dense + attention) / seconds[runner] / 1e9
    versus = f"{seconds['transformers'] / seconds[runner]:.2f}x" if "transformers" in seconds else "-"
    return (f"| {model_type} ({raw['num_hidden_layers']} layers) | {T} | {(dense + attention) / 1e9:,.1f} "
            f"({dense / 1e9:,.1f} + {attention / 1e9:,.1f}) | {runner} ({runs[0]['what']}) | {seconds[runner]:.2f} | "
            f"{1 / seconds[runner]:.3f} | {gflops:.1f} | {gflops / rate:.0%} | {versus} | "
            f"{max(x['peak_rss_mib'] for x in runs)} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-types", default="xlm-roberta,modernbert", help=f"of {', '.join(sorted(SHAPES))}")
    parser.add_argument("--tokens", default="1024,2048,4096,8192", help="pair lengths, comma-separated")
    parser.add_argument("--runners", default="minibert,transformers", help="of minibert, transformers")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the real model, for a quick run")
    parser.add_argument("--threads", type=int, default=None, help="BLAS, OpenMP, Numba and torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="2 layers, 1k and 2k tokens, one round")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.layers, args.tokens, args.rounds = args.layers or 2, "1024,2048", 1
    runners = args.runners.split(",")
    env = dict(os.environ)
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(args.threads)
    rate = sgemm_gflops(env)
    lines = [(f"large sgemm: {rate:.1f} GFLOP/s (NumPy, [4096, 1024] x [1024, 4096]), threads {args.threads or 'all'}, "
              f"OPENBLAS_CORETYPE {env.get('OPENBLAS_CORETYPE', 'unset')}"), "",
             ("| shape | tokens | GFLOP per pair (dense + attention) | runner | s per pair | pairs/s | GFLOP/s | "
              "share of sgemm | vs transformers | peak RSS (MiB) |"), "|---|---|---|---|---|---|---|---|---|---|"]
    print(lines[0], flush=True)
    blas = set()
    for model_type in args.model_types.split(","):
        raw = dict(SHAPES[model_type], **({"num_hidden_layers": args.layers} if args.layers else {}))
        for T in (int(t) for t in args.tokens.split(",")):
            runs = {r: [] for r in runners}
            for _ in range(args.rounds):
                for r in runners:  # alternating: a slow moment of the machine hits every runner alike
                    runs[r].append(spawn(r, model_type, T, args, env))
            seconds = {r: statistics.median(x["seconds"] for x in runs[r]) for r in runners}
            for r in runners:
                blas.update(runs[r][0]["blas"])
                lines.append(row(model_type, raw, T, r, runs[r], seconds, rate))
                print(lines[-1], flush=True)
    lines += ["", f"BLAS: {'; '.join(sorted(blas))}"]
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
