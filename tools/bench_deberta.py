"""Time minibert against transformers on a DeBERTa-v3 reranker's shape (random weights, same pairs).

The shape of mixedbread-ai/mxbai-rerank-xsmall-v1 (hidden 384, 12 layers, 6 heads, intermediate
1536, position_buckets 256, 512 positions), with a small vocabulary (the embedding table does not
change the time). Both sides score the same token ids, padded batches for transformers (sorted by
length, as CrossEncoder.predict does) and packed ones for minibert; the ratio is what to read.

    flock -x /work/cpu.lock python tools/bench_deberta.py [--pairs 64] [--threads 2]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from minibert.models import Batch, forward
from minibert.ops import NUMPY, numba_ops
from minibert.runtime.load import load_config, load_params

SHAPE = dict(vocab_size=1000, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
             max_position_embeddings=512, type_vocab_size=0, relative_attention=True, position_buckets=256,
             max_relative_positions=-1, share_att_key=True, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
             position_biased_input=False, num_labels=1, pad_token_id=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 300, size=args.pairs)
    encoded = [(rng.integers(5, SHAPE["vocab_size"], size=n), np.zeros(n, np.int64)) for n in lengths]

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = DebertaV2ForSequenceClassification(DebertaV2Config(**SHAPE)).eval()
        model.save_pretrained(tmp)
        config, params = load_config(Path(tmp)), load_params(Path(tmp), load_config(Path(tmp)))

    order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]

    def run_torch():
        out = np.empty(args.pairs, np.float32)
        with torch.no_grad():
            for rows in batches:
                T = int(lengths[rows].max())
                ids = torch.zeros((len(rows), T), dtype=torch.long)
                mask = torch.zeros_like(ids)
                for b, r in enumerate(rows):
                    ids[b, :lengths[r]] = torch.from_numpy(encoded[r][0])
                    mask[b, :lengths[r]] = 1
                out[rows] = model(input_ids=ids, attention_mask=mask).logits[:, 0].numpy()
        return out

    def run_minibert(op_set):
        out = np.empty(args.pairs, np.float32)
        for rows in batches:
            out[rows] = forward(params, config, Batch.pack([encoded[r] for r in rows]), op_set)[:, 0]
        return out

    def timed(fn):
        fn()  # warm-up (Numba compile, caches)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - t0)
        return best, result

    with threadpool_limits(limits=args.threads, user_api="blas"):
        t_torch, want = timed(run_torch)
        t_numba, got_numba = timed(lambda: run_minibert(numba_ops()))
        t_numpy, got_numpy = timed(lambda: run_minibert(NUMPY))
    blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in threadpool_info()
            if i.get("user_api") == "blas"]
    print(f"DeBERTa-v3 xsmall shape, {args.pairs} pairs of {lengths.min()}..{lengths.max()} tokens "
          f"({lengths.sum()} tokens), batch {args.batch}, {args.threads} threads, best of {args.repeats}")
    print(f"BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(not set)')}")
    for name, t, got in (("transformers (torch eager)", t_torch, want), ("minibert numba", t_numba, got_numba),
                         ("minibert numpy", t_numpy, got_numpy)):
        print(f"  {name:28s} {t:7.3f} s  {args.pairs / t:7.1f} pairs/s  x{t_torch / t:5.2f} vs torch  "
              f"max|diff| {np.abs(got - want).max():.1e}")


if __name__ == "__main__":
    main()
