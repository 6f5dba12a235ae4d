"""Installed size of minibert (core, [fast]) next to its peers, and the cold start of a first score.

    python tools/footprint.py                       # build this checkout's wheel, measure, delete the venvs
    python tools/footprint.py --peers ''            # minibert only
    python tools/footprint.py --model DIR           # the model of the first score (default: bench.py's)

Each package set is installed with pip into a fresh venv under a temporary folder (deleted at the
end). Installed size: the bytes of the files the install added to site-packages (a fresh venv's
pip and setuptools not counted). Peers: sentence-transformers with torch (the CPU wheel),
onnxruntime with tokenizers and numpy (the model exported to ONNX beside it, as bench.py exports it),
FlashRank and fastembed (onnxruntime-based; their models come from the Hub at run time, so only
their size is measured here).

First score: a new process that imports minibert, loads the model and scores one pair, run
--rounds times; wall time (median), and peak RSS (VmHWM) of that process. The first [fast] run
compiles the Numba kernels (cache=True): it is reported apart from the median of the others.
sentence-transformers' CrossEncoder gets the same measurement in its venv. The installs run
first; with --lock FILE (a shared machine's CPU lock) only the timed runs hold it, exclusively:
`python tools/footprint.py --lock /work/cpu.lock`.

Weights in memory (no venvs, this checkout): `python tools/footprint.py --weights --model DIR [--as-bf16]`
loads DIR's cross-encoder in a new process twice, with its half-precision matrices kept as stored (the
default) and widened at load (widen=True), scores one pair with each, and reports the parameters' bytes
and the process's peak RSS (VmHWM). --as-bf16 first saves a bfloat16 copy of DIR's weights in a
temporary folder (a float32 model measured as its bf16 checkpoint would be).
"""

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = {"sentence-transformers+torch": ["torch==2.13.0", "sentence-transformers"],
         "onnxruntime": ["onnxruntime", "tokenizers", "numpy"],
         "flashrank": ["flashrank"], "fastembed": ["fastembed"]}
PAIR = ("what is the capital of france?", "Paris is the capital and largest city of France.")

FIRST_SCORE = {
    "minibert": "from minibert import CrossEncoder\nscore = CrossEncoder({model!r}).predict([{pair!r}])\n",
    "sentence-transformers": ("from sentence_transformers import CrossEncoder\n"
                              "score = CrossEncoder({model!r}, device='cpu').predict([{pair!r}])\n"),
    # onnxruntime as its leanest user runs it: the model exported to ONNX (bench.export_onnx, beside the model),
    # tokenized by the tokenizers package from tokenizer.json, one session, one pair.
    "onnxruntime": ("import numpy as np, onnxruntime as ort\n"
                    "from tokenizers import Tokenizer\n"
                    "enc = Tokenizer.from_file({model!r} + '/tokenizer.json').encode(*{pair!r})\n"
                    "session = ort.InferenceSession({model!r} + '/model.onnx', providers=['CPUExecutionProvider'])\n"
                    "feed = {{'input_ids': [enc.ids], 'attention_mask': [enc.attention_mask], 'token_type_ids': [enc.type_ids]}}\n"
                    "score = session.run(None, {{i.name: np.array(feed[i.name], np.int64) for i in session.get_inputs()}})[0][:, 0]\n"),
}
REPORT = ("import json\nrss = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
          "print(json.dumps({{'peak_rss_mib': int(rss) / 1024, 'score': float(score[0])}}))\n")


def site_packages_bytes(venv: Path) -> int:
    (site,) = venv.glob("lib/python*/site-packages")
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())


def make_venv(path: Path, packages: list[str]) -> int:
    """A venv at `path` with `packages` -> the bytes they added to site-packages."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    before = site_packages_bytes(path)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *packages],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return site_packages_bytes(path) - before


def first_score(venv: Path, runner: str, model: Path, rounds: int, env: dict) -> list[dict]:
    code = (FIRST_SCORE[runner] + REPORT).format(model=str(model), pair=PAIR)
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env,
                             cwd=venv, check=False)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"footprint: {runner} in {venv} failed:\n{out.stderr[-2000:]}")
        runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall})
    return runs


WEIGHTS = ("import json, numpy as np\n"
           "from minibert import CrossEncoder\n"
           "from minibert.formats.tensors import HalfTensor\n"
           "from minibert.models.params import leaves\n"
           "model = CrossEncoder({model!r}, widen={widen!r})\n"
           "score = model.predict([{pair!r}])\n"
           "arrays = [a for a in leaves(model.params) if isinstance(a, (np.ndarray, HalfTensor))]\n"
           "kept = sum(a.nbytes for a in arrays if isinstance(a, HalfTensor))\n"
           "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
           "print(json.dumps({{'param_mib': sum(a.nbytes for a in arrays) / 2**20, 'kept_mib': kept / 2**20,\n"
           "                  'peak_rss_mib': int(status['VmHWM'].split()[0]) / 1024,\n"
           "                  'rss_mib': int(status['VmRSS'].split()[0]) / 1024, 'score': float(score[0])}}))\n")


def bf16_copy(model: Path, into: Path) -> Path:
    """model's directory with its floating-point weights saved in bfloat16 (nearest, ties to even)."""
    import shutil

    import numpy as np

    sys.path.insert(0, str(REPO))
    from minibert.formats.checkpoint import find_checkpoint, read_checkpoint
    from minibert.formats.safetensors import write_safetensors
    from minibert.formats.tensors import HalfTensor

    shutil.copytree(model, into, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    tensors = {}
    for name, array in read_checkpoint(find_checkpoint(model)).items():
        if isinstance(array, HalfTensor) or array.dtype.kind == "f":
            bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
            array = HalfTensor(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16))
        tensors[name] = array
    write_safetensors(into / "model.safetensors", tensors, {"format": "pt"})
    return into


def weights_in_memory(model: Path, as_bf16: bool, env: dict) -> int:
    """--weights: the same checkpoint kept at its stored precision and widened at load, one process each."""
    env = dict(env, PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="minibert-weights-") as tmp:
        if as_bf16:
            model = bf16_copy(model, Path(tmp) / "bf16")
        print(f"model: {model}")
        print("| weights | parameters (MiB) | of which kept half (MiB) | peak RSS (MiB) | RSS after (MiB) | score |")
        print("|---|---|---|---|---|---|")
        for widen in (False, True):
            code = WEIGHTS.format(model=str(model), widen=widen, pair=PAIR)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise SystemExit(f"footprint: widen={widen} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {'widened at load' if widen else 'kept as stored'} | {r['param_mib']:.0f} | {r['kept_mib']:.0f} | "
                  f"{r['peak_rss_mib']:.0f} | {r['rss_mib']:.0f} | {r['score']:.6g} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a cross-encoder directory (default: bench.py's MiniLM-L6)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--rounds", type=int, default=4, help="first-score processes per venv (default 4)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--lock", type=Path, help="hold this file's exclusive flock during the timed runs")
    parser.add_argument("--weights", action="store_true",
                        help="only the weights' memory: kept as stored against widened at load (see above)")
    parser.add_argument("--as-bf16", action="store_true", help="with --weights: measure a bfloat16 copy of --model")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tools"))
    import bench

    model = (args.model or bench.make_model()).resolve()
    env = bench.child_env(args.threads)
    env.pop("PYTHONPATH", None)
    if args.weights:
        return weights_in_memory(model, args.as_bf16, env)
    if "onnxruntime" in args.peers.split(","):
        bench.export_onnx(model)   # needs torch and transformers here, in the venv running this tool
    rows = []
    with tempfile.TemporaryDirectory(prefix="minibert-footprint-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "wheel"), str(REPO)],
                       check=True, stdout=subprocess.DEVNULL)
        (wheel,) = (tmp / "wheel").glob("*.whl")
        installs = {"minibert-ce": [str(wheel)], "minibert-ce[fast]": [f"{wheel}[fast]"]}
        installs.update({name: PEERS[name] for name in filter(None, args.peers.split(","))})
        venvs, sizes = {}, {}
        for name, packages in installs.items():  # no lock: pip is mostly waiting for the disk and the index
            venvs[name] = tmp / name.replace("[", "-").replace("]", "").replace("+", "-")
            sizes[name] = make_venv(venvs[name], packages)
        with open(args.lock, "a") if args.lock else contextlib.nullcontext() as lock:
            if lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
            for name in installs:
                runner = "minibert" if name.startswith("minibert") else name.partition("+")[0]
                if runner not in FIRST_SCORE:
                    rows.append((name, sizes[name], None, None, None))
                    continue
                runs = first_score(venvs[name], runner, model, args.rounds, env)
                compiles = name.endswith("[fast]")  # its first process fills the Numba cache
                warm = runs[1:] if compiles else runs
                rows.append((name, sizes[name], statistics.median(r["wall_s"] for r in warm),
                             max(r["peak_rss_mib"] for r in runs), runs[0]["wall_s"] if compiles else None))
    print(f"model: {model}; {args.threads} threads; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    print("| install | installed size (MB) | first score: cold start (s) | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for name, size, wall, rss, compile_run in rows:
        cold = "-" if wall is None else f"{wall:.2f}" + (f" ({compile_run:.1f} compiling Numba)" if compile_run else "")
        print(f"| `{name}` | {size / 1e6:.0f} | {cold} | {'-' if rss is None else f'{rss:.0f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
