"""Screenshots of the live monitor: the default emulated 2P2D cluster launched in tmux under load.

    python benchmarks/monitor_screenshot.py [--seconds 40] [--sizes 160x52,120x40,80x24]

Runs ``python -m sglang_ppd.launch --config configs/emulated-2p2d.yaml --no-monitor`` in a detached
tmux session, drives it with ``sglang-ppd bench`` on synthetic multi-turn sessions, then starts
``sglang-ppd monitor`` in a fresh tmux session of each size in turn (the monitor needs a TTY) and
captures it: ``benchmarks/results/monitor_WxH.txt`` (plain text), ``monitor_WxH_ansi.txt`` and
``monitor_WxH.png`` (the pane's colours drawn with DejaVu Sans Mono). Needs tmux.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SESSION = "sglang-ppd-monitor"
WORKLOAD = ("sessions:n=200,rate=3,turns=geometric:4,think_s=exp:2,prompt=uniform:500:6000,"
            "user=uniform:50:800,output=uniform:20:300")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready; see `tmux attach -t {SESSION}`")


def to_png(ansi: str, path: Path, cols: int) -> None:
    font = ImageFont.truetype(FONT, 14)
    cw = font.getlength("M")  # fractional: rounding it would drift the columns apart
    ch = 17
    # Parsed whole, then split: tmux writes a style once and it holds across lines, as on screen.
    lines = Text.from_ansi(ansi.rstrip("\n")).split("\n")
    console = Console(width=cols + 10, color_system="truecolor")
    img = Image.new("RGB", (math.ceil(cw * cols) + 20, ch * len(lines) + 20), (24, 24, 32))
    draw = ImageDraw.Draw(img)
    for row, line in enumerate(lines):
        x = 10
        for seg in line.render(console):  # segments carry the combined style (colour and dim)
            color = (220, 220, 220)
            style = seg.style
            if style is not None and style.color is not None and not style.color.is_default:
                tc = style.color.get_truecolor()
                color = (tc.red, tc.green, tc.blue)
            if style is not None and style.dim:
                color = (color[0] // 2, color[1] // 2, color[2] // 2)
            draw.text((x, 10 + row * ch), seg.text, font=font, fill=color)
            x += cw * cell_len(seg.text)
    img.save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0, help="load duration before the capture")
    ap.add_argument("--port", type=int, default=30600)
    ap.add_argument("--base-port", type=int, default=31600)
    ap.add_argument("--sizes", default="160x52,120x40,80x24", help="COLSxROWS,... captured in turn")
    ap.add_argument("--from-ansi", help="only redraw the PNG of a saved monitor_WxH_ansi.txt")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    if args.from_ansi:
        cols = int(Path(args.from_ansi).name.split("_")[1].split("x")[0])
        to_png(Path(args.from_ansi).read_text(), Path(args.from_ansi.replace("_ansi.txt", ".png")), cols)
        return 0
    url = f"http://127.0.0.1:{args.port}"
    launch = (f"{sys.executable} -m sglang_ppd.launch --config configs/emulated-2p2d.yaml "
              f"--port {args.port} --base-port {args.base_port} --no-monitor")
    monitor = f"{sys.executable} -m sglang_ppd.cli monitor --router {url}"
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    tmux("new-session", "-d", "-s", SESSION, "-c", str(ROOT), launch)
    captures: dict[tuple[int, int], str] = {}
    try:
        wait_ready(url, 60)
        bench = subprocess.Popen(
            [sys.executable, "-m", "sglang_ppd.bench", "--url", url, "--workload", WORKLOAD,
             "--duration-s", str(args.seconds), "--no-progress",
             "--json", str(RESULTS / "monitor_bench.json")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(args.seconds * 0.7)
        for cols, rows in sizes:
            # A fresh terminal per size: a resized one keeps the wider frame's leftovers.
            name = f"{SESSION}-{cols}x{rows}"
            tmux("new-session", "-d", "-s", name, "-x", str(cols), "-y", str(rows), "-c", str(ROOT), monitor)
            try:
                time.sleep(3.0)  # a few frames (the monitor redraws 4 times a second)
                captures[(cols, rows)] = tmux("capture-pane", "-p", "-e", "-t", name)
            finally:
                subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        bench.wait(timeout=600)
    finally:
        subprocess.run(["tmux", "send-keys", "-t", SESSION, "C-c"], capture_output=True)
        time.sleep(5)
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for (cols, rows), ansi in captures.items():
        stem = RESULTS / f"monitor_{cols}x{rows}"
        stem.with_suffix(".txt").write_text(ANSI.sub("", ansi).rstrip() + "\n")
        (RESULTS / f"{stem.name}_ansi.txt").write_text(ansi)
        to_png(ansi, stem.with_suffix(".png"), cols)
        print(f"wrote {stem}.txt and {stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
