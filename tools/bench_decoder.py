"""Benchmark a decoder reranker at Qwen3-Reranker-0.6B's real shape: minibert against transformers (through
sentence-transformers' CrossEncoder, float32 and bfloat16), alternating in one run.

    python tools/bench_decoder.py                     # short (100 pairs) and long (50 pairs) workloads, 4,096-token pair
    python tools/bench_decoder.py --rounds 2 --runners minibert,st-fp32
    python tools/bench_decoder.py --quick             # 4 layers, 16 + 8 pairs, a 1,024-token pair: checks it runs
    python tools/bench_decoder.py --markdown out.md
    python tools/bench_decoder.py --workloads short-20 --runners minibert,st-fp32,st-bf16   # bf16 too, on 20 pairs

The model (built once into weights/bench-qwen3-reranker-0.6b/, about 1.2 GB): random weights at
Qwen/Qwen3-Reranker-0.6B's shape (Qwen3ForCausalLM: vocabulary 151,669, hidden 1,024, 28 layers, 16 query heads
and 8 key/value heads of 128, intermediate 3,072, tied embeddings, rope_theta 1,000,000), stored in bfloat16 as
the real checkpoint is, saved by sentence-transformers 6 as the real one is (Transformer(text-generation) with a
Qwen3-Reranker-like chat template, then LogitScore("yes", "no")). The real tokenizer is on the Hub, out of reach:
a byte-level BPE of 32,000 tokens trained on the workload's own text stands in (pair lengths are close to, not
equal to, the real tokenizer's; the work per token is the real model's).

Workloads: bench.py's short workload (every 4th of its 400 pairs: 100 pairs) and long one (every 8th: 50 pairs),
then one pair of about 4,096 tokens; short-20 (the first 20 short pairs) for the slow bfloat16 runner. Scores
are the raw logit("yes") - logit("no").

Runners, each in a fresh process, measured after a warm-up on 4 pairs of the workload:
- minibert          CrossEncoder (Numba kernels), its defaults (weights at their stored precision)
- st-fp32           sentence-transformers 6 CrossEncoder, model_kwargs dtype float32 (transformers, sdpa)
- st-bf16           the same in bfloat16, as sentence-transformers loads a bf16 checkpoint by default
Reported: pairs/s (median of the rounds), the ratio to each peer, useful GFLOP/s as a share of NumPy's sgemm
rate, peak RSS (VmHWM, load included), max |score - st-fp32's| and whether the rankings agree.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # tools/bench.py: workloads, RSS, sgemm rate, thread settings

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "weights" / "bench-qwen3-reranker-0.6b"
QUICK_MODEL = REPO / "weights" / "bench-qwen3-reranker-0.6b-4layers"
# Qwen/Qwen3-Reranker-0.6B's config.json (the Qwen3ForCausalLM fields that set the work)
QWEN3_RERANKER_06B = dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                          rms_norm_eps=1e-6, tie_word_embeddings=True,
                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
RUNNERS = ("minibert", "st-fp32", "st-bf16")
BPE_VOCAB = 32000
MAX_LENGTH = 8192
LONG_PAIR_TOKENS = 4096
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3-Reranker's prompt, as its chat template writes it (system, then the user's instruction, query and document,
# then the assistant's empty think block): the score is read after it.
TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
    "{% set sys = messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first %}"
    "<Instruct>: {{ sys if sys else 'Given a web search query, retrieve relevant passages that answer the query' }}\n"
    "<Query>: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n"
    "<Document>: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}"
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


def corpus():
    import pydoc_data.topics

    return [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]


def make_model(dst: Path, layers: int | None = None) -> Path:
    """The benchmark's Qwen3 reranker (see the module docstring); built once."""
    if (dst / "modules.json").is_file():
        return dst
    import shutil

    import torch
    from sentence_transformers import CrossEncoder
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    bare = dst.with_name(dst.name + ".bare")
    shutil.rmtree(bare, ignore_errors=True)
    tok = Tokenizer(BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() + ["yes"] * 1000 + ["no"] * 1000, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 model_max_length=MAX_LENGTH, chat_template=TEMPLATE)
    hf.save_pretrained(bare)
    vocab = hf.get_vocab()
    shape = dict(QWEN3_RERANKER_06B, **({"num_hidden_layers": layers} if layers else {}))
    torch.manual_seed(bench.SEED)
    config = Qwen3Config(pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=None,
                         **shape)
    model = Qwen3ForCausalLM(config).eval().to(torch.bfloat16)   # transformers' own initialization
    model.save_pretrained(bare)
    del model
    CrossEncoder(str(bare), device="cpu").save(str(dst))   # Transformer(text-generation) + LogitScore(yes, no)
    shutil.rmtree(bare)
    return dst


def workloads(quick: bool):
    short, long = bench.workload("short")[::4], bench.workload("long")[::8]
    words = " ".join(corpus()).split()
    n_words = (1024 if quick else LONG_PAIR_TOKENS) * 2 // 3   # about 1.5 tokens per word here; checked below
    long_pair = [(bench.QUERIES[0], " ".join(words[:n_words]))]
    if quick:
        short, long = short[:16], long[:8]
    # torch in bfloat16 is several times slower than in float32 on most CPUs: its own, shorter workload
    return {"short": short, "long": long, "one long pair": long_pair, "short-20": short[:20]}


def load_runner(name, model_dir, threads):
    if name == "minibert":
        from minibert import CrossEncoder

        ce = CrossEncoder(model_dir, threads=threads)
        return lambda pairs: ce.predict(pairs)
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    dtype = {"st-fp32": torch.float32, "st-bf16": torch.bfloat16}[name]
    ce = CrossEncoder(str(model_dir), device="cpu", activation_fn=torch.nn.Identity(), model_kwargs={"dtype": dtype})
    return lambda pairs: np.asarray(ce.predict(pairs, batch_size=bench.BATCH_SIZE), dtype=np.float32).reshape(-1)


def child(args):
    pairs = workloads(args.quick)[args.workload]
    t0 = time.perf_counter()
    score = load_runner(args.child, Path(args.model), args.threads)
    load_s = time.perf_counter() - t0
    score(pairs[:4] if len(pairs) > 4 else [(pairs[0][0], pairs[0][1][:200])])   # warm-up
    t0 = time.perf_counter()
    scores = score(pairs)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "load_s": load_s, "peak_rss_mib": bench.peak_rss_mib(),
                      "scores": [float(s) for s in scores]}))


def spawn(runner, args, workload):
    argv = [sys.executable, __file__, "--child", runner, "--model", str(args.model), "--threads", str(args.threads),
            "--workload", workload] + (["--quick"] if args.quick else [])
    out = subprocess.run(argv, env=bench.child_env(args.threads), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{runner} failed on {workload}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def useful_flops(lengths, c) -> float:
    """Matrix-product FLOPs of a padding-free pass: q, k, v, o and the SwiGLU MLP on every token, causal attention
    (q k^T and p v on the key/query pairs j <= i), and the LM-head rows of the last token (2 rows)."""
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    q_width, kv_width = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    lengths = np.asarray(lengths, dtype=np.float64)
    dense = 2 * lengths.sum() * (H * q_width * 2 + H * kv_width * 2 + 3 * H * I)
    attention = 4 * (lengths * (lengths + 1) / 2).sum() * q_width
    return L * (dense + attention) + 2 * len(lengths) * 2 * H


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runners", default="minibert,st-fp32", help=f"some of {', '.join(RUNNERS)}")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workloads", default="short,long,one long pair",
                        help="some of short, long, one long pair, short-20 (the first 20 short pairs)")
    parser.add_argument("--quick", action="store_true", help="a 4-layer model and a few pairs: checks the tool runs")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    args.model = make_model(QUICK_MODEL, layers=4) if args.quick else make_model(MODEL)
    config = json.loads((args.model / "config.json").read_text())
    from minibert import CrossEncoder

    tokenizer = CrossEncoder(args.model, threads=1).tokenizer
    runners = args.runners.split(",")
    gflops = bench.sgemm_gflops(args.threads)
    lines = [f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, numpy "
             f"{np.__version__}, BLAS: {bench.blas_info()}, OPENBLAS_CORETYPE="
             f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}; NumPy sgemm {gflops:.0f} GFLOP/s",
             f"model: Qwen3ForCausalLM, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
             f"{config['num_attention_heads']}/{config['num_key_value_heads']} heads of {config['head_dim']}, "
             f"vocabulary {config['vocab_size']}, bf16 checkpoint {sum(f.stat().st_size for f in args.model.rglob('*.safetensors')) / 2**20:.0f} MiB", ""]
    print("\n".join(lines), flush=True)
    for name in args.workloads.split(","):
        pairs = workloads(args.quick)[name]
        lengths = [len(ids) for ids, _ in tokenizer.encode_pairs(pairs)]
        flops = useful_flops(lengths, config)
        print(f"{name}: {len(pairs)} pairs, {sum(lengths)} tokens (mean {np.mean(lengths):.0f}, range "
              f"{min(lengths)}-{max(lengths)}), {flops / 1e9:.0f} GFLOP", flush=True)
        results = bench.alternate(runners, args.rounds, lambda runner, name=name: spawn(runner, args, name),
                                  lambda r, n=len(pairs): f"{r['seconds']:.1f} s, {n / r['seconds']:.2f} pairs/s, "
                                                          f"peak RSS {r['peak_rss_mib']:.0f} MiB")
        seconds = {r: statistics.median(x["seconds"] for x in results[r]) for r in runners}
        rows = []
        for runner in runners:
            parity = bench.agreement(results, runner, "st-fp32", len(pairs))   # one query: one ranking
            versus = " / ".join(f"{seconds[peer] / seconds[runner]:.2f}x {peer}" for peer in runners if peer != runner)
            rss = max(x["peak_rss_mib"] for x in results[runner])
            rows.append(f"| {runner} | {seconds[runner]:.1f} | {len(pairs) / seconds[runner]:.2f} | {versus} | "
                        f"{100 * flops / seconds[runner] / 1e9 / gflops:.0f}% | {rss:.0f} | {parity} |")
        lines += [f"{name}: {len(pairs)} pairs, {sum(lengths)} tokens (mean {np.mean(lengths):.0f}), "
                  f"median of {args.rounds} round(s)", "",
                  "| runner | seconds | pairs/s | vs peers | % sgemm | peak RSS (MiB) | max abs diff vs st-fp32 |",
                  "|---|---|---|---|---|---|---|", *rows, ""]
    bench.report(lines, args.markdown)


if __name__ == "__main__":
    main()
