"""pairs/s of a bfloat16 checkpoint kept as stored (the default) against widened at load (widen=True).

    python tools/bench_widen.py [N] [MODEL_DIR]    # N pairs (default 2000); MODEL_DIR saved as bf16 first

Run it alone on the machine: it is a timing. The model (default: bench.py's MiniLM cross-encoder) is
saved in bfloat16 into a temporary folder (footprint.bf16_copy), then each way scores the same pairs after
one warm-up batch, 2 threads.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import footprint

from minibert import CrossEncoder


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    model_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "weights/bench-minilm-cross-encoder")
    pairs = [(f"what is item {i}?", "a passage about the item, long enough to be a real passage. " * 4) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        bf16 = footprint.bf16_copy(model_dir, Path(tmp) / "bf16")
        for widen in (False, True):
            model = CrossEncoder(bf16, widen=widen, threads=2)
            model.predict(pairs[:32])
            start = time.perf_counter()
            model.predict(pairs)
            print(f"widen={widen}: {n / (time.perf_counter() - start):.1f} pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
