"""Peak memory and time of one long pair: an 8,192-token pair on a model of bge-reranker-v2-m3's shape.

    python tools/bench_long.py                        # XLM-RoBERTa, 24 layers, hidden 1024, 16 heads, 8,192 tokens
    python tools/bench_long.py --tokens 2048 --layers 4 --threads 2
    python tools/bench_long.py --model-type modernbert   # gte-reranker-modernbert-base's shape instead

bge-reranker-v2-m3 (an XLMRobertaForSequenceClassification) and ModernBERT rerankers take pairs of up to
8,192 tokens. Scoring one must not hold a whole [heads, T, T] score matrix (16 x 8192 x 8192 float32 is
4 GiB per layer): minibert's attention works in blocks of queries (minibert/ops.py). This measures it.

The weights are random (seeded), at the real model's shape, vocabulary included, built in memory from
the family's own tensor table, so no checkpoint is needed; memory and time do not depend on the values.
The measurement runs in a fresh process: the RSS once the weights are built, then the peak RSS (VmHWM,
reset after the build) over the forward pass, the time of the forward pass (tokenization is not part of it: the ids are random), and the
BLAS library and kernel in use (threadpoolctl).
"""

import argparse
import json
import os
import subprocess
import sys
import time

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


def child(args):
    import numpy as np
    from threadpoolctl import threadpool_info

    from minibert.models import Batch, config_from_dict, family_of, forward
    from minibert.models.params import map_leaves
    from minibert.ops import default_ops
    from minibert.runtime.runner import limit_threads

    raw = dict(SHAPES[args.model_type])
    if args.layers:
        raw["num_hidden_layers"] = args.layers
    config = config_from_dict(raw, source=f"<{args.model_type} shape>")
    rng = np.random.default_rng(0)

    def random_leaf(spec):  # small values, norm weights near 1, as in a trained model; in place, no temporaries
        leaf = rng.standard_normal(spec.shape, dtype=np.float32)
        leaf *= 0.02
        if spec.name.endswith(("norm.weight", "LayerNorm.weight")):
            leaf += 1
        return leaf

    params = map_leaves(random_leaf, family_of(config).skeleton(config, True))
    weights_mib = vm_rss_mib()

    def pair(n):
        ids = rng.integers(5, config.vocab_size, n)
        ids[0] = 0
        return Batch.pack([(ids.astype(np.int64), np.zeros(n, np.int64))])

    batch, ops = pair(args.tokens), default_ops()
    with limit_threads(args.threads):
        forward(params, config, pair(16), ops)  # warm-up: Numba's kernels loaded, BLAS's buffers made
        warm_mib = vm_rss_mib()
        with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS: the peak below is the long pair's
            f.write("5")
        start = time.perf_counter()
        logits = forward(params, config, batch, ops)
        seconds = time.perf_counter() - start
    blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(json.dumps({"model_type": args.model_type, "layers": config.num_hidden_layers,
                      "hidden": config.hidden_size, "tokens": args.tokens, "ops": ops.name,
                      "seconds": round(seconds, 2), "rss_mib_weights": round(weights_mib), "rss_mib_warm": round(warm_mib),
                      "peak_rss_mib": round(vm_hwm_mib()), "logit": float(logits[0, 0]),
                      "finite": bool(np.isfinite(logits).all()), "blas": blas,
                      "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", choices=sorted(SHAPES), default="xlm-roberta")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the real model, for a quick run")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    argv = [sys.executable, __file__, "--child", "--model-type", args.model_type, "--tokens", str(args.tokens)]
    if args.layers:
        argv += ["--layers", str(args.layers)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
