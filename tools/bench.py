"""Benchmark minibert against its real peers on one workload, in one run.

    python tools/bench.py                      # all runners that are installed, 3 rounds, short pairs
    python tools/bench.py --workload both      # the short and the long workload, one table each
    python tools/bench.py --rounds 5 --threads 2 --runners minibert,sentence-transformers
    python tools/bench.py --markdown bench.md  # also write the table(s) as Markdown
    python tools/bench.py --profile --workload both   # where minibert's time goes, per op
    python tools/bench.py --reranker bge-reranker-base --workload both   # XLM-R base at its real shape

Runners (each skipped with a note when its packages are missing):
- minibert                  Numba kernels (the default op set)
- minibert-numpy            the NumPy reference ops (MINIBERT_NO_NUMBA=1)
- sentence-transformers     CrossEncoder on torch, CPU, batch 32 (it sorts pairs by length)
- onnxruntime               the model exported by torch.onnx, graph optimizations on,
                            length-sorted padded batches of 32

Workloads, each 4 queries x 100 passages of CPython's pydoc_data.topics (real English):
- short: paragraphs of at least 80 characters (pairs of 20-150 tokens, mean ~65);
- long: passages cut from the topics' text so that each pair is 200-499 tokens (mean ~350).
Both are scored by a MiniLM-L6 cross-encoder: the real all-MiniLM-L6-v2 encoder (weights/, from
`python tools/get_minilm.py`) with a seeded classifier head, written as a HuggingFace
directory with NumPy only (weights/bench-minilm-cross-encoder/) by the function behind `minibert
fetch all-MiniLM-L6-v2 --demo-cross-encoder` (minibert.formats.fetch.make_demo_cross_encoder). fp32 everywhere.
With --reranker ettin-68m, by an Ettin reranker's module chain instead: random weights at
cross-encoder/ettin-reranker-68m-v1's shape (ModernBERT, 19 layers, H 512, 8 heads, I 768; Pooling(cls) ->
Dense(no bias, GELU) -> LayerNorm -> Dense), saved by sentence-transformers itself
(weights/bench-ettin-68m-chain/, needs torch and sentence-transformers to build), tokenized with
all-MiniLM-L6-v2's WordPiece (the real Ettin tokenizer is on the Hub, not reachable here: pair lengths
differ a little from the real model's, the work per token is the real model's).
With --reranker bge-reranker-base, nli-deberta-v3-base or gte-reranker-modernbert-base: random weights at that
model's real shape (XLM-RoBERTa base, DeBERTa-v3 base, ModernBERT base with mean pooling), saved by transformers
(weights/bench-NAME/), tokenized with the same WordPiece for the same reason. The sgemm roofline is taken at
the model's own feed-forward shape ([2048, H] x [H, I]).

Method: every measurement is a fresh process. Rounds alternate the runners (A B C A B C ...),
so that a slow moment of the machine hits all of them alike; the table gives the median.
- pairs/s, tokens/s: one full pass over the workload after a warm-up pass, in-process timer.
- % roofline: useful FLOPs / time, over NumPy's measured sgemm rate on this machine. Useful
  FLOPs count the dense layers on real tokens and attention on real token pairs, no padding.
- peak RSS: the process's peak resident set (VmHWM), load + warm-up + timed pass.
- cold start: wall time of a new process that imports, loads the model and scores 8 pairs
  (for minibert with a warm Numba cache: the cold-start runs come after the throughput runs).
- parity: max |score - transformers' logit| (sentence-transformers with an identity
  activation is transformers' BertForSequenceClassification), and whether every query's
  ranking is identical.
--profile: minibert alone, in this process, with every op of its op set timed (tokenization too):
seconds per op summed over the streams (so it adds up to CPU time, not wall time), after a warm-up.
Thread settings: --threads N (default: all cores) goes to BLAS, OpenMP, Numba, torch and
onnxruntime alike. The machine's OPENBLAS_CORETYPE is left as it is; say so when you quote.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MINILM = REPO / "weights" / "all-MiniLM-L6-v2"
MODEL = REPO / "weights" / "bench-minilm-cross-encoder"
ETTIN = REPO / "weights" / "bench-ettin-68m-chain"
# cross-encoder/ettin-reranker-68m-v1's encoder (jhu-clsp/ettin-encoder-68m): ModernBERT's config at that size.
ETTIN_68M = dict(vocab_size=50368, hidden_size=512, intermediate_size=768, num_hidden_layers=19, num_attention_heads=8,
                 max_position_embeddings=7999, global_attn_every_n_layers=3, local_attention=128,
                 global_rope_theta=160000.0, local_rope_theta=160000.0)
# Rerankers at their real Hub shape (config.json's fields that set the work), random weights, 1 label, built by
# make_shaped: (model_type, config, the Hub model whose shape it is).
SHAPED = {
    "bge-reranker-base": ("xlm-roberta", dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                              num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                                              type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
                          "BAAI/bge-reranker-base (XLM-RoBERTa base)"),
    "nli-deberta-v3-base": ("deberta-v2", dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12,
                                               num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                               type_vocab_size=0, relative_attention=True, position_buckets=256,
                                               norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                                               max_relative_positions=-1, position_biased_input=False, pad_token_id=0),
                            "cross-encoder/nli-deberta-v3-base (DeBERTa-v3 base; 1 label here, not 3)"),
    "gte-reranker-modernbert-base": ("modernbert", dict(vocab_size=50368, hidden_size=768, num_hidden_layers=22,
                                                        num_attention_heads=12, intermediate_size=1152,
                                                        max_position_embeddings=8192, global_attn_every_n_layers=3,
                                                        local_attention=128, global_rope_theta=160000.0,
                                                        local_rope_theta=160000.0, classifier_pooling="mean",
                                                        pad_token_id=0, cls_token_id=101, sep_token_id=102),
                                     "Alibaba-NLP/gte-reranker-modernbert-base (ModernBERT base, mean pooling)"),
}
RERANKERS = ("minilm", "ettin-68m", *SHAPED)
RUNNERS = ("minibert", "minibert-numpy", "sentence-transformers", "onnxruntime")
QUERIES = ("how do I catch an exception", "what does the with statement do",
           "how are integers divided", "what is a generator function")
N_PASSAGES = 100
BATCH_SIZE = 32
SEED = 1234


# ---------------------------------------------------------------------------------------------
# workload and model

WORKLOADS = ("short", "long")
LONG_TOKENS = (200, 499)  # the long workload's pair lengths, special tokens included


def workload(name="short"):
    """4 queries x 100 passages of pydoc_data.topics: its paragraphs of at least 80 characters
    (short), or runs of its words cut so that every pair has 200-499 tokens (long)."""
    import pydoc_data.topics

    topics = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    if name == "short":
        passages = []
        for topic in topics:
            for paragraph in re.split(r"\n\s*\n", topic):
                paragraph = " ".join(paragraph.split())
                if len(paragraph) >= 80:
                    passages.append(paragraph)
        return [(q, p) for q in QUERIES for p in passages[:N_PASSAGES]]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    longest_query = max(len(tokenizer.encode(q, add_special_tokens=False).ids) for q in QUERIES)
    words = " ".join(topics).split()
    low, high = LONG_TOKENS
    passages, start = [], 0
    for i in range(N_PASSAGES):
        # a passage of `target` tokens, so that with any query and 3 special tokens the pair is in range
        target = low + (i * 7919) % (high - low - longest_query - 3) - 3 + 1
        n_words = target // 2
        while len(tokenizer.encode(" ".join(words[start:start + n_words]), add_special_tokens=False).ids) < target:
            n_words += 4
        while len(tokenizer.encode(" ".join(words[start:start + n_words]), add_special_tokens=False).ids) > target:
            n_words -= 1
        passages.append(" ".join(words[start:start + n_words]))
        start += n_words
    return [(q, p) for q in QUERIES for p in passages]


def make_model(src=MINILM, dst=MODEL, seed=SEED):
    """all-MiniLM-L6-v2's encoder + a seeded 1-logit classifier, as BertForSequenceClassification: the
    demonstration cross-encoder of `minibert fetch all-MiniLM-L6-v2 --demo-cross-encoder` (its scores mean
    nothing; its shape and work are ms-marco-MiniLM-L-6-v2's, which is what a benchmark needs)."""
    if (dst / "model.safetensors").is_file():
        return dst
    if not (src / "model.safetensors").is_file():
        sys.exit(f"bench: {src} is missing; run `python tools/get_minilm.py` first")
    from minibert.formats.fetch import make_demo_cross_encoder

    return make_demo_cross_encoder(src, dst, seed=seed)


def make_ettin_chain(dst=ETTIN, seed=SEED):
    """Random weights at ettin-reranker-68m's shape, as sentence-transformers 6 saves the Ettin rerankers: a
    ModernBertModel (task feature-extraction), then Pooling(cls), Dense(H -> H, no bias, GELU), LayerNorm,
    Dense(H -> 1). The weights are ModernBERT's own initialization (speed does not depend on their values)."""
    if (dst / "modules.json").is_file():
        return dst
    if not (MINILM / "tokenizer.json").is_file():
        sys.exit(f"bench: {MINILM} is missing; run `python tools/get_minilm.py` first (its tokenizer is used)")
    import shutil

    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(seed)
    backbone = dst.with_name(dst.name + ".backbone")
    shutil.rmtree(backbone, ignore_errors=True)
    ModernBertModel(ModernBertConfig(pad_token_id=0, cls_token_id=101, sep_token_id=102, **ETTIN_68M)).save_pretrained(
        backbone)
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(MINILM / name, backbone / name)
    tokenizer_config = json.loads((MINILM / "tokenizer_config.json").read_text())
    # ModernBERT reads no token type ids; its tokenizer gives none
    tokenizer_config.update(model_max_length=512, model_input_names=["input_ids", "attention_mask"])
    (backbone / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    H = ETTIN_68M["hidden_size"]
    modules = [Transformer(str(backbone), transformer_task="feature-extraction"), Pooling(H, pooling_mode="cls"),
               Dense(H, H, bias=False, activation_function=torch.nn.GELU()), LayerNorm(H),
               Dense(H, 1, activation_function=torch.nn.Identity(), module_output_name="scores")]
    CrossEncoder(modules=modules, device="cpu", activation_fn=torch.nn.Sigmoid()).save(str(dst))
    shutil.rmtree(backbone)
    return dst


def make_shaped(name, seed=SEED):
    """Random weights at one of SHAPED's real shapes, saved by transformers as its *ForSequenceClassification with
    1 label (weights/bench-NAME/), tokenized with all-MiniLM-L6-v2's WordPiece (the real tokenizers are on the Hub:
    pair lengths differ a little from the real model's; the work per token is the real model's). No token type
    ids reach the model (none of these three has a second token type)."""
    dst = REPO / "weights" / f"bench-{name}"
    if (dst / "model.safetensors").is_file():
        return dst
    if not (MINILM / "tokenizer.json").is_file():
        sys.exit(f"bench: {MINILM} is missing; run `python tools/get_minilm.py` first (its tokenizer is used)")
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_type, fields, _ = SHAPED[name]
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, num_labels=1, **fields)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(tmp)
    for file in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(MINILM / file, tmp / file)
    tokenizer_config = json.loads((MINILM / "tokenizer_config.json").read_text())
    tokenizer_config.update(tokenizer_class="BertTokenizer", model_max_length=512,
                            model_input_names=["input_ids", "attention_mask"])
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def bench_model(reranker):
    """The model directory of --reranker, built on first use."""
    if reranker == "minilm":
        return make_model()
    return make_ettin_chain() if reranker == "ettin-68m" else make_shaped(reranker)


def export_onnx(model_dir):
    """The model as ONNX, exported once by torch (TorchScript exporter) and cached beside it."""
    path = model_dir / "model.onnx"
    if path.is_file():
        return path
    import torch
    from transformers import AutoModelForSequenceClassification

    if (model_dir / "modules.json").is_file():
        return _export_chain(model_dir, path)

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    names = json.loads((model_dir / "tokenizer_config.json").read_text()).get(
        "model_input_names", ["input_ids", "token_type_ids", "attention_mask"])
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if "token_type_ids" in names else [])]
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))[:len(inputs)]
    torch.onnx.export(model, args, str(path) + ".tmp", input_names=inputs, output_names=["logits"],
                      dynamic_axes={**{name: axes for name in inputs}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    os.replace(str(path) + ".tmp", path)
    return path


def _export_chain(model_dir, path):
    """An Ettin-style chain as one graph: its encoder, then cls, Dense, GELU, LayerNorm, Dense, in torch (the
    chain's own modules' weights), exported by the TorchScript exporter."""
    import torch
    from sentence_transformers import CrossEncoder

    st = CrossEncoder(str(model_dir), device="cpu")
    st.eval()
    encoder, _, dense1, norm, dense2 = list(st)

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.dense1, self.act = encoder.model, dense1.linear, dense1.activation_function
            self.norm, self.dense2 = norm.norm, dense2.linear

        def forward(self, input_ids, attention_mask):
            x = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
            return self.dense2(self.norm(self.act(self.dense1(x))))

    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(Chain().eval(), (ids, torch.ones_like(ids)), str(path) + ".tmp",
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    os.replace(str(path) + ".tmp", path)
    return path


def useful_flops(lengths, config):
    """FLOPs of the work a padding-free forward pass must do (matrix products only; ModernBERT's sliding-window
    layers counted as global ones, which they are on pairs within the window)."""
    H, I, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    ffn = 3 * H * I if config.get("model_type") == "modernbert" else 2 * H * I   # GeGLU: Wi is H -> 2I
    lengths = np.asarray(lengths, dtype=np.float64)
    dense = 2 * lengths.sum() * (4 * H * H + ffn)         # q, k, v, out; ffn in, ffn out
    attention = 4 * (lengths ** 2).sum() * H              # q k^T and p v, all heads
    if config.get("model_type") == "deberta-v2" and config.get("relative_attention"):
        # c2p and p2c: each token's query (key) against the 2S relative position keys (queries), all heads
        span = config.get("position_buckets", -1) if config.get("position_buckets", -1) > 0 \
            else config.get("max_relative_positions", -1) if config.get("max_relative_positions", -1) > 0 \
            else config["max_position_embeddings"]
        attention += 2 * 2 * lengths.sum() * 2 * span * H * len(config.get("pos_att_type") or [])
    return L * (dense + attention)


# ---------------------------------------------------------------------------------------------
# runners: each builds a scoring function in a fresh process

def load_runner(name, model_dir, threads):
    if name in ("minibert", "minibert-numpy"):
        from minibert import CrossEncoder

        ce = CrossEncoder(model_dir, threads=threads)
        return lambda pairs: ce.predict(pairs, batch_size=BATCH_SIZE)
    if name == "sentence-transformers":
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        ce = CrossEncoder(str(model_dir), device="cpu", activation_fn=torch.nn.Identity())
        return lambda pairs: np.asarray(ce.predict(pairs, batch_size=BATCH_SIZE), dtype=np.float32).reshape(-1)
    if name == "onnxruntime":
        import onnxruntime as ort

        from minibert.runtime.load import load_config, load_tokenizer

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        tokenizer = load_tokenizer(model_dir, load_config(model_dir))

        def score(pairs):
            encoded = tokenizer.encode_pairs(pairs)
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
            scores = np.empty(len(pairs), np.float32)
            for start in range(0, len(order), BATCH_SIZE):
                rows = order[start:start + BATCH_SIZE]
                T = max(len(encoded[i][0]) for i in rows)
                ids, types, mask = (np.zeros((len(rows), T), np.int64) for _ in range(3))
                for r, i in enumerate(rows):
                    n = len(encoded[i][0])
                    ids[r, :n], types[r, :n], mask[r, :n] = encoded[i][0], encoded[i][1], 1
                feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
                out = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
                scores[rows] = out[:, 0]
            return scores
        return score
    raise SystemExit(f"unknown runner {name}")


def child(args):
    """One measurement in this (fresh) process; prints one JSON line."""
    pairs = workload(args.workload)
    if args.cold:
        score = load_runner(args.child, Path(args.model), args.threads)
        score(pairs[:8])
        print(json.dumps({"ok": True}))
        return
    t0 = time.perf_counter()
    score = load_runner(args.child, Path(args.model), args.threads)
    load_s = time.perf_counter() - t0
    score(pairs)  # warm-up pass: compiles, allocates, fills caches
    t0 = time.perf_counter()
    scores = score(pairs)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "load_s": load_s, "peak_rss_mib": peak_rss_mib(),
                      "scores": [float(s) for s in scores]}))


def peak_rss_mib():
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss, which a child
    inherits from its parent across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sgemm_gflops(threads, H=384, I=1536):
    """NumPy's float32 matrix-product rate here, at the model's feed-forward shape ([2048, H] x [H, I]; MiniLM's by
    default); best of 10."""
    code = ("import numpy as np, time\n"
            f"a = np.random.rand(2048, {H}).astype(np.float32); w = np.random.rand({I}, {H}).astype(np.float32)\n"
            "a @ w.T; best = 1e9\n"
            "for _ in range(10):\n"
            "    t = time.perf_counter(); a @ w.T; best = min(best, time.perf_counter() - t)\n"
            f"print(2 * 2048 * {H} * {I} / best / 1e9)\n")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(threads), capture_output=True, text=True, check=True)
    return float(out.stdout)


def child_env(threads, runner=""):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    if runner == "minibert-numpy":
        env["MINIBERT_NO_NUMBA"] = "1"
    return env


def spawn(runner, model_dir, threads, cold=False, workload_name="short"):
    argv = [sys.executable, __file__, "--child", runner, "--model", str(model_dir), "--threads", str(threads),
            "--workload", workload_name]
    if cold:
        argv.append("--cold")
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=child_env(threads, runner), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{runner} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def available(runner):
    needs = {"minibert": ["numba"], "minibert-numpy": [], "sentence-transformers": ["torch", "sentence_transformers"],
             "onnxruntime": ["onnxruntime", "onnx", "torch", "transformers"]}[runner]
    import importlib.util

    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    info = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return "; ".join(info) or "unknown"


def profile(model_dir, threads, workload_name):
    """minibert's time per op on one workload, in this process: a table (seconds summed over streams)."""
    import dataclasses
    import threading

    from minibert import CrossEncoder
    from minibert.ops import OpSet, numba_ops

    pairs = workload(workload_name)
    seconds, lock = {}, threading.Lock()

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    from minibert.ops import kernels  # the Numba kernels' module: attention's softmax, timed on its own

    numba = numba_ops()
    ops = numba.replace(**{f.name: timed(f.name, getattr(numba, f.name)) for f in dataclasses.fields(OpSet)[1:]})
    softmax = "attention's softmax (within attention)"
    kernels.band_exp = timed(softmax, kernels.band_exp)   # what each block of attention calls
    ce = CrossEncoder(model_dir, ops=ops, threads=threads)
    ce.tokenizer.encode_pairs = timed("tokenization", ce.tokenizer.encode_pairs)
    ce.predict(pairs, batch_size=BATCH_SIZE)  # warm-up
    seconds.clear()
    t0 = time.perf_counter()
    ce.predict(pairs, batch_size=BATCH_SIZE)
    wall = time.perf_counter() - t0
    rows = []
    for name in sorted((n for n in seconds if n != softmax), key=lambda n: -seconds[n]):
        rows.append(f"| {name} | {seconds[name]:.3f} |")
        if name == "attention":
            rows.append(f"| {softmax} | {seconds.get(softmax, 0.0):.3f} |")
    return "\n".join([f"minibert per-op profile, {workload_name} workload: {len(pairs)} pairs in {wall:.2f} s wall "
                      f"({len(pairs) / wall:.1f} pairs/s, slowed by the timers), {threads} threads", "",
                      "| op | seconds (summed over streams) |", "|---|---|", *rows])


def alternate(runners, rounds, run, say):
    """Rounds alternating the runners (A B C A B C ...), so that a slow moment of the machine hits them all
    alike: {runner: [run(runner) of each round]}, with a line `say(result)` printed after each run."""
    results = {runner: [] for runner in runners}
    for round_ in range(rounds):
        for runner in runners:
            results[runner].append(run(runner))
            print(f"  round {round_ + 1} {runner}: {say(results[runner][-1])}", flush=True)
    return results


def agreement(results, runner, reference, group):
    """The parity column: max |score - the reference runner's| and whether each run of `group` consecutive pairs
    (one query's passages) ranks alike; "-" for the reference itself or without it."""
    if reference not in results or runner == reference:
        return "-"
    scores, ref = np.array(results[runner][0]["scores"]), np.array(results[reference][0]["scores"])
    same = all(np.array_equal(np.argsort(-scores[i:i + group], kind="stable"), np.argsort(-ref[i:i + group], kind="stable"))
               for i in range(0, len(scores), group))
    return f"{np.abs(scores - ref).max():.1e}, rankings {'identical' if same else 'DIFFER'}"


def bench_workload(name, runners, model_dir, args, gflops):
    """One workload: rounds alternating the runners, then the table (Markdown lines)."""
    config = json.loads((model_dir / "config.json").read_text())
    from minibert.runtime.load import load_config, load_tokenizer

    pairs = workload(name)
    lengths = [len(ids) for ids, _ in load_tokenizer(model_dir, load_config(model_dir)).encode_pairs(pairs)]
    flops = useful_flops(lengths, config)
    print(f"{name} workload: {len(pairs)} pairs, {sum(lengths)} tokens (mean {np.mean(lengths):.1f}, "
          f"range {min(lengths)}-{max(lengths)}), {flops / 1e9:.0f} GFLOP useful", flush=True)
    results = alternate(runners, args.rounds, lambda runner: spawn(runner, model_dir, args.threads, workload_name=name),
                        lambda result: f"{len(pairs) / result['seconds']:.1f} pairs/s")
    speed = {r: len(pairs) / statistics.median(x["seconds"] for x in results[r]) for r in runners}
    rows = []
    for runner in runners:
        parity = agreement(results, runner, "sentence-transformers", len(pairs) // len(QUERIES))
        versus = " / ".join(f"{speed[runner] / speed[peer]:.2f}x {peer}" for peer in runners
                            if peer != runner and not peer.startswith("minibert"))
        rows.append([runner, f"{speed[runner]:.1f}", versus or "-", f"{speed[runner] * np.mean(lengths):,.0f}",
                     f"{100 * flops / (len(pairs) / speed[runner]) / 1e9 / gflops:.0f}%",
                     f"{max(r['peak_rss_mib'] for r in results[runner]):.0f}", parity])
    header = ["runner", "pairs/s", "vs peers", "tokens/s", "% sgemm roofline", "peak RSS (MiB)",
              "max abs diff vs transformers"]
    return [f"{name}: {len(pairs)} pairs, {sum(lengths)} tokens (mean {np.mean(lengths):.0f}), "
            f"median of {args.rounds} rounds", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workload", choices=(*WORKLOADS, "both"), default="short")
    parser.add_argument("--profile", action="store_true", help="minibert's time per op instead of the comparison")
    parser.add_argument("--markdown", help="also write the table(s) to this Markdown file")
    parser.add_argument("--reranker", choices=RERANKERS, default="minilm",
                        help="the model: the MiniLM-L6 cross-encoder, an Ettin module chain at ettin-reranker-68m's "
                             "shape, or one of " + ", ".join(SHAPED) + " at its real shape (random weights)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=str(MODEL), help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    model_dir = bench_model(args.reranker)
    names = WORKLOADS if args.workload == "both" else (args.workload,)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
               f"Python {platform.python_version()}, numpy {np.__version__}, BLAS: {blas_info()}, "
               f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    if args.profile:
        return report([machine, *(f"\n{profile(model_dir, args.threads, name)}" for name in names)], args.markdown)

    runners, notes = [], []
    for runner in args.runners.split(","):
        reason = available(runner)
        (notes.append(f"{runner}: skipped, {reason}") if reason else runners.append(runner))
    if "onnxruntime" in runners:
        try:
            export_onnx(model_dir)
        except Exception as exc:  # torch.onnx's exporter fails on some architectures: say so, bench the rest
            runners.remove("onnxruntime")
            notes.append(f"onnxruntime: skipped, the export failed ({type(exc).__name__}: {str(exc)[:200]})")
    config = json.loads((model_dir / "config.json").read_text())
    H, I = config["hidden_size"], config["intermediate_size"]
    gflops = sgemm_gflops(args.threads, H, I)
    print(f"NumPy sgemm {gflops:.0f} GFLOP/s at [2048, {H}] x [{H}, {I}]; threads {args.threads}", flush=True)
    what = SHAPED[args.reranker][2] + "'s shape, random weights" if args.reranker in SHAPED else args.reranker
    lines = [machine, f"model: {what}; NumPy sgemm {gflops:.0f} GFLOP/s at [2048, {H}] x [{H}, {I}] (the roofline)", ""]
    for name in names:
        lines += bench_workload(name, runners, model_dir, args, gflops)
    cold = {r: statistics.median(spawn(r, model_dir, args.threads, cold=True)["wall_s"] for _ in range(args.rounds))
            for r in runners}
    lines += ["cold start (s, a new process: import, load, score 8 pairs): "
              + ", ".join(f"{r} {cold[r]:.2f}" for r in runners), *notes]
    report(lines, args.markdown)


def report(lines, markdown=None):
    """Print the tables, and write them to `markdown` too when given."""
    text = "\n".join(lines)
    print("\n" + text)
    if markdown:
        Path(markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
