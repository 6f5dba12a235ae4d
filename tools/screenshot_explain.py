"""Render `minibert explain --html` in headless Chromium and check the screenshot.

    python tools/screenshot_explain.py --model tests/fixtures/goldens/tiny-l1 \\
        --query "how do I define a function?" --passage "A function definition defines a function object." \\
        --out explain.png

Writes the page and its screenshot, then checks what a reader would see: a page of the window's size,
mostly white with text on it, and the heat maps' darkest cells (each layer's largest weight is drawn in
the full heat colour) present in the picture. Prints one JSON line with what it measured; exit status 1
when a check fails. tests/test_explain.py runs the same check (it needs chromium: `apt-get install
chromium`; CI installs it). Needs Pillow to read the PNG (the `test` extra).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HEAT = (178, 24, 43)  # the colour of a weight at its layer's maximum (minibert/explain.py _cell)
WINDOW = (1400, 2400)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: Path, png_path: Path, window=WINDOW, chromium=None) -> None:
    """A headless Chromium screenshot of a local page (no network: the page has nothing to fetch)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                        f"--screenshot={png_path}", html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def measure(png_path: Path) -> dict:
    """What the screenshot shows: its size, the share of non-white pixels, the pixels in the full heat colour."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png_path).convert("RGB")).astype(int)       # [height, width, 3]
    heat = (np.abs(pixels - np.array(HEAT)).max(axis=2) <= 3).sum()
    ink = (pixels.min(axis=2) < 200).mean()
    return {"width": pixels.shape[1], "height": pixels.shape[0], "ink": float(ink), "heat_pixels": int(heat)}


def check(found: dict, layers: int, window=WINDOW) -> list[str]:
    """The problems with a measured screenshot (empty when it looks as it should)."""
    problems = []
    if (found["width"], found["height"]) != tuple(window):
        problems.append(f"screenshot is {found['width']}x{found['height']}, expected {window[0]}x{window[1]}")
    if not 0.01 < found["ink"] < 0.6:
        problems.append(f"{found['ink']:.1%} of the pixels are not white: a blank or broken page")
    if found["heat_pixels"] < 100 * layers:  # one cell of at least ~10x10 pixels per layer
        problems.append(f"only {found['heat_pixels']} pixels in the heat colour for {layers} layers: no heat maps")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--query", default="how do I define a function?")
    parser.add_argument("--passage", default="A function definition defines a user-defined function object.")
    parser.add_argument("--out", default="explain.png", help="the screenshot (the page goes next to it, .html)")
    args = parser.parse_args(argv)

    from minibert import CrossEncoder
    from minibert.oracle.explain import explain, format_html

    found = explain(CrossEncoder(args.model), args.query, args.passage)
    png = Path(args.out)
    page = png.with_suffix(".html")
    page.write_text(format_html(found), encoding="utf-8")
    screenshot(page, png)
    layers = len(found.attention) if found.attention is not None else 0
    measured = measure(png)
    problems = check(measured, layers)
    print(json.dumps({"page": str(page), "screenshot": str(png), "layers": layers, **measured, "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
