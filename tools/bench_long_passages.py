"""Long passages scored whole: does scoring windows find an answer placed late, what does it cost, and memory.

    python tools/bench_long_passages.py train     # a few min of CPU: weights/pydoc-minilm-cross-encoder (torch)
    python tools/bench_long_passages.py rank      # rank of the answering document: truncate / first / max / mean
    python tools/bench_long_passages.py speed     # pairs/s, windows ("max") against truncate, in the same run
    python tools/bench_long_passages.py memory    # peak RSS of one 1 MB document through predict_iter

speed and memory use the benchmark's demonstration cross-encoder (weights/bench-minilm-cross-encoder, from
`python tools/bench.py`: 512 tokens, ms-marco-MiniLM-L-6-v2's shape) unless --model says otherwise.

No real cross-encoder can be downloaded here, so `train` makes one that means something, small and honest:
a copy of the demonstration cross-encoder (all-MiniLM-L6-v2's encoder, BertForSequenceClassification)
whose classifier (new), pooler and last encoder layer are trained for one epoch of 640 pairs (the embeddings and the
first five layers stay all-MiniLM-L6-v2's) on pairs from CPython's pydoc_data.topics: the query is a
section's title ('Membership test operations'), a positive passage a run of that section's paragraphs,
a negative one a run of another section's. The sections used for evaluation are held out: none of their
titles or paragraphs is seen in training. The model's max_length is 128 (its tokenizer_config.json says so):
windows of about 115 tokens, so that the measurement runs in minutes on 2 cores. It is a
reranker of pydoc sections by title, not a general one; the figures below are about windows, not about it.

The case (`rank`): for each of the 20 held-out sections, a document of filler paragraphs from the training
sections (seeded, aiming at one to eight windows' worth of tokens; a long paragraph overshoots: the measured
documents had 4 to 43 windows, median 11) with the section's opening paragraphs at its end, so the answer is
in the last windows. Each section's title is the query; the
candidates are its own document and 7 others (seeded), and the figure is the rank of its own document.
The control: the same documents with the answer moved to the front, scored by truncate (which sees it). Every
window of every pair is scored once (the package's own window cut, runner and aggregation); the policies are read
from those logits, and a sample is checked against CrossEncoder.predict.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # tools/bench.py: its demonstration cross-encoder

REPO = Path(__file__).resolve().parent.parent
DEMO = bench.MODEL      # weights/bench-minilm-cross-encoder, built by bench.make_model() when missing
MODEL = REPO / "weights" / "pydoc-minilm-cross-encoder"
MAX_LENGTH = 128
SEED = 2026
N_EVAL, N_CANDIDATES = 20, 8
TRAIN_WORDS = 60    # words of a training passage (a run of paragraphs)
POLICIES = ("truncate", "first", "max", "mean")


# ---------------------------------------------------------------------------------------------
# The data: titled sections of pydoc_data.topics


def sections() -> list[tuple[str, list[str]]]:
    """[(title, paragraphs)] of every titled section of pydoc_data.topics, the first of each title; a title
    is a line underlined by a line of as many '=', '-', '*', '~' or '^'. Paragraphs: whitespace collapsed."""
    import pydoc_data.topics

    found, seen = [], set()
    for key in sorted(pydoc_data.topics.topics):
        lines = pydoc_data.topics.topics[key].split("\n")
        title, body = None, []
        for i, line in enumerate(lines + [""]):
            underline = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and len(underline) == len(line) and len(set(underline)) == 1 and underline[0] in "=-*~^":
                if title is not None and title not in seen:
                    seen.add(title)
                    found.append((title, paragraphs(body)))
                title, body = line.strip(), []
            elif title is not None and not (set(line) <= set("=-*~^") and line):
                body.append(line)
        if title is not None and title not in seen:
            seen.add(title)
            found.append((title, paragraphs(body)))
    return [(title, paras) for title, paras in found if paras]


def paragraphs(lines: list[str]) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", "\n".join(lines)) if len(" ".join(p.split())) >= 40]


def split() -> tuple[list, list]:
    """(evaluation sections, training sections): N_EVAL sections with at least 400 characters, drawn with the
    seed; the training sections share no title and no paragraph with them."""
    rng = np.random.default_rng(SEED)
    found = sections()
    candidates = [i for i, (_, paras) in enumerate(found) if sum(map(len, paras)) >= 400]
    chosen = set(rng.choice(candidates, N_EVAL, replace=False).tolist())
    held = [found[i] for i in sorted(chosen)]
    held_paragraphs = {p for _, paras in held for p in paras}
    train = [(title, [p for p in paras if p not in held_paragraphs])
             for i, (title, paras) in enumerate(found) if i not in chosen]
    return held, [(title, paras) for title, paras in train if paras]


def chunks(paras: list[str], words: int = 150) -> list[str]:
    """Runs of consecutive paragraphs of about `words` words (a paragraph longer than that alone)."""
    out, current = [], []
    for p in paras:
        current.append(p)
        if sum(len(c.split()) for c in current) >= words:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def answer(paras: list[str]) -> str:
    """A section's opening: its first paragraphs, up to about 120 words."""
    return chunks(paras, 120)[0]


def documents(held, train, tokenizer, stride: int, max_length: int, late: bool = True) -> list[str]:
    """One document per held-out section: filler paragraphs of the training sections, seeded, of one to eight
    windows' worth of tokens (at this max_length and stride), and the section's answer at the end (late) or the
    front: aiming at 3 to about 10 windows in all (a long paragraph overshoots)."""
    rng = np.random.default_rng(SEED + 1)
    filler = [p for _, paras in train for p in paras]
    room = max_length - 3 - 8                       # a window's passage tokens beside a title of ~8 tokens
    step = room - min(stride, room // 2)            # where the next window starts (long_passages.bounds)
    out = []
    for _, paras in held:
        target = int(rng.integers(room, room + 7 * step))
        parts, tokens = [], 0
        while tokens < target:
            p = filler[int(rng.integers(len(filler)))]
            parts.append(p)
            tokens += len(tokenizer.encode(p, add_special_tokens=False).ids)
        parts = parts + [answer(paras)] if late else [answer(paras)] + parts
        out.append("\n\n".join(parts))
    return out


# ---------------------------------------------------------------------------------------------
# train


def train(args) -> None:
    import torch
    import transformers

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    bench.make_model()
    held, train_sections = split()
    rng = np.random.default_rng(SEED + 2)
    pairs = []
    for i, (title, paras) in enumerate(train_sections):
        for chunk in chunks(paras, TRAIN_WORDS):
            pairs.append((title, chunk, 1.0))
            for _ in range(2):   # two negatives per positive: another section's run of paragraphs
                j = int(rng.integers(len(train_sections) - 1))
                j += j >= i
                others = chunks(train_sections[j][1], TRAIN_WORDS)
                pairs.append((title, others[int(rng.integers(len(others)))], 0.0))
    pairs = [pairs[k] for k in sorted(rng.permutation(len(pairs))[:args.max_pairs])]
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(args.epochs)])
    print(f"train: {len(train_sections)} sections, {len(pairs)} pairs ({sum(p[2] for p in pairs):.0f} positive); "
          f"{len(held)} sections held out", flush=True)

    tokenizer = transformers.AutoTokenizer.from_pretrained(DEMO)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(DEMO, dtype=torch.float32)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(("classifier", "bert.pooler", "bert.encoder.layer.5"))
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.02)
        model.classifier.bias.zero_()
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]   # new: a larger step
    layers = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier")]
    optimizer = torch.optim.AdamW([{"params": layers, "lr": args.lr}, {"params": head, "lr": 10 * args.lr}])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started = time.monotonic()
    for step, start in enumerate(range(0, len(order), args.batch)):
        batch = [pairs[k] for k in order[start:start + args.batch]]
        inputs = tokenizer([q for q, _, _ in batch], [p for _, p, _ in batch], truncation="longest_first",
                           max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        loss = loss_fn(model(**inputs).logits[:, 0], torch.tensor([y for _, _, y in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"train: step {step}, pairs {start + len(batch)}/{len(order)}, loss {loss.item():.3f}, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    model.eval()
    if MODEL.exists():
        shutil.rmtree(MODEL)
    model.save_pretrained(MODEL, safe_serialization=True)
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(DEMO / name, MODEL / name)
    tc = json.loads((DEMO / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["model_max_length"] = MAX_LENGTH
    (MODEL / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    config = json.loads((MODEL / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if "demonstration" not in str(v)}
    config["minibert_note"] = ("tools/bench_long_passages.py train: all-MiniLM-L6-v2's encoder, classifier, pooler "
                               "and layer 5 trained one epoch (640 pairs) on pydoc_data.topics section titles vs paragraphs")
    (MODEL / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    print(f"train: wrote {MODEL} in {time.monotonic() - started:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------
# rank


def window_logits(ce, pairs, stride):
    """(logits of every window of every pair, pair by pair [sum(counts)], counts [n]), one forward pass per
    window, with the package's own cut and runner (what predict does for "max", minus the aggregation)."""
    from minibert.runtime.long_passages import cut_windows

    cuts = [cut_windows(ce.tokenizer, q, p, stride) for q, p in pairs]
    items = [(i, w) for i, cut in enumerate(cuts) for w in range(len(cut))]
    logits = np.empty(len(items), dtype=np.float32)

    def encode(chunk, _first):
        return [cuts[i].tokens(ce.tokenizer, w) for i, w in chunk]

    for start, end, out in ce.runner.run(items, encode, ce._forward, 32):
        logits[start:end] = out[:, 0]
    return logits, np.array([len(cut) for cut in cuts])


def rank(args) -> None:
    from minibert import CrossEncoder
    from minibert.runtime.long_passages import aggregate

    ce = CrossEncoder(args.model or MODEL, threads=args.threads)
    held, train_sections = split()
    rng = np.random.default_rng(SEED + 3)
    candidates = []
    for i in range(len(held)):   # its own document first, then N_CANDIDATES - 1 others
        others = rng.choice([j for j in range(len(held)) if j != i], N_CANDIDATES - 1, replace=False)
        candidates.append([i, *others.tolist()])
    counter = ce.tokenizer._untruncated()

    def ranks(scores):   # [queries]: 1 + the candidates above the answering document (ties: half)
        scores = np.asarray(scores).reshape(len(held), N_CANDIDATES)
        return 1 + (scores[:, 1:] > scores[:, :1]).sum(axis=1) + 0.5 * (scores[:, 1:] == scores[:, :1]).sum(axis=1)

    docs = documents(held, train_sections, counter, args.stride, ce.max_length, late=True)
    pairs = [(held[i][0], docs[j]) for i, row in enumerate(candidates) for j in row]
    started = time.monotonic()
    logits, counts = window_logits(ce, pairs, args.stride)
    seconds = time.monotonic() - started
    results = {("late", "truncate"): ranks(ce.predict(pairs))}   # truncate's number is predict's own
    for policy in POLICIES[1:]:
        results["late", policy] = ranks(aggregate(logits, counts, policy)[0])
    sample = rng.choice(len(pairs), 6, replace=False)
    for policy in ("max", "mean"):   # the figures are predict's: check a sample of pairs
        want = ce.predict([pairs[k] for k in sample], long_passages=policy, stride=args.stride)
        got = aggregate(logits, counts, policy)[0][sample]
        assert np.allclose(got, want, atol=1e-5), (policy, got, want)
    own = counts.reshape(len(held), N_CANDIDATES)[:, 0]
    print(f"answer late: {len(pairs)} pairs, {len(logits)} windows, the answering documents {own.min()}-{own.max()} "
          f"windows (median {int(np.median(own))}); {seconds:.0f} s", flush=True)
    # the control: the same documents with the answer in front, where truncate sees it
    docs = documents(held, train_sections, counter, args.stride, ce.max_length, late=False)
    results["first", "truncate"] = ranks(ce.predict([(held[i][0], docs[j]) for i, row in enumerate(candidates)
                                                     for j in row]))
    print(f"\nrank of the answering document among {N_CANDIDATES} ({len(held)} queries, stride {args.stride}, "
          f"{args.model or MODEL}, max_length {ce.max_length}):\n")
    print("| answer placed | policy | mean rank | MRR | top 1 | top 3 |\n|---|---|---|---|---|---|")
    for (placement, policy), ranks in results.items():
        print(f"| {placement} | {policy} | {ranks.mean():.2f} | {np.mean(1 / ranks):.3f} | "
              f"{np.mean(ranks <= 1):.0%} | {np.mean(ranks <= 3):.0%} |")


# ---------------------------------------------------------------------------------------------
# speed and memory (run alone on the machine)


def speed(args) -> None:
    """pairs/s of predict with truncate and with max on the same pairs (the late-answer documents, built for
    the model's max_length, against 10 titles: every pair distinct), alternating, the median of the rounds.
    The default model is the demonstration cross-encoder (512 tokens: ms-marco-MiniLM-L-6-v2's shape and work,
    as in tools/bench.py); the time does not depend on the weights."""
    from minibert import CrossEncoder

    ce = CrossEncoder(args.model or bench.make_model(), threads=args.threads)
    held, train_sections = split()
    docs = documents(held, train_sections, ce.tokenizer._untruncated(), args.stride, ce.max_length)
    pairs = [(title, doc) for title, _ in held[:10] for doc in docs[:args.pairs // 10]]
    windows = sum(len(ce.passage_windows(q, p, args.stride)) for q, p in pairs)
    ce.predict(pairs[:4], long_passages="max", stride=args.stride)   # warm up (kernels compiled or loaded)
    rates = {"truncate": [], "max": []}
    for _ in range(args.rounds):
        for policy, rounds in rates.items():
            started = time.perf_counter()
            ce.predict(pairs, long_passages=policy, stride=args.stride)
            rounds.append(len(pairs) / (time.perf_counter() - started))
    print(f"{len(pairs)} pairs ({windows} windows with max, {windows / len(pairs):.1f} per pair), threads "
          f"{args.threads}, {args.rounds} rounds:")
    for policy, r in rates.items():
        print(f"  {policy}: {np.median(r):.1f} pairs/s (rounds: {', '.join(f'{x:.1f}' for x in r)})")
    print(f"  max / truncate: {np.median(rates['max']) / np.median(rates['truncate']):.3f}")


MEMORY_CHILD = """
import sys, time, numpy as np
from minibert import CrossEncoder
def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024
ce = CrossEncoder({model!r}, threads={threads})
words = open({text!r}, encoding='utf-8').read()
document = (words * (1_000_000 // len(words) + 1))[:1_000_000]
ce.predict([("warm", "up")])
loaded = hwm()
t = time.perf_counter()
scores = list(ce.predict_iter(iter([("{query}", document), ("{query}", "a short passage")]),
                              long_passages={policy!r}))
print(f"{{loaded:.0f}} {{hwm():.0f}} {{time.perf_counter() - t:.1f}} {{len(ce.passage_windows('{query}', document))}}")
"""


def memory(args) -> None:
    """Peak RSS (VmHWM) of a fresh process scoring a 1,000,000-character document (pydoc_data.topics' text,
    repeated) through predict_iter, with max and with truncate: once the model is loaded, and at the end."""
    import pydoc_data.topics

    text = REPO / "weights" / ".pydoc-topics.txt"
    text.write_text("\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)),
                    encoding="utf-8")
    for policy in ("truncate", "max"):
        code = MEMORY_CHILD.format(model=str(args.model or bench.make_model()), threads=args.threads, text=str(text), policy=policy,
                                   query="how do I format a string")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)
        if out.returncode != 0:
            sys.exit(out.stderr)
        loaded, peak, seconds, windows = out.stdout.split()
        print(f"{policy}: peak RSS {peak} MiB ({loaded} MiB once loaded), {windows} windows, {seconds} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "rank", "speed", "memory"))
    parser.add_argument("--model", type=Path, help=f"rank: default {MODEL.name}; speed, memory: {DEMO.name}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4, help="train: the layers' (the classifier's: 10x)")
    parser.add_argument("--batch", type=int, default=16, help="train: pairs per step")
    parser.add_argument("--epochs", type=int, default=1, help="train: passes over the pairs")
    parser.add_argument("--max-pairs", type=int, default=640, help="train: pairs drawn (seeded) from all")
    parser.add_argument("--pairs", type=int, default=100, help="speed: pairs per round (10 titles x pairs / 10 documents)")
    parser.add_argument("--rounds", type=int, default=3, help="speed: rounds")
    args = parser.parse_args()
    {"train": train, "rank": rank, "speed": speed, "memory": memory}[args.command](args)


if __name__ == "__main__":
    main()
