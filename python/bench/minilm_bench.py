"""all-MiniLM-L6-v2 eager vs traced vs traced with two command queues, on the paced emulated device (a benchmark,
not a test; docs/minilm.md shows its table and timelines).

For each configuration: ``--iters`` inferences of one batch (pre-tokenized, so the tokenizer is not timed) after
a warm-up that compiles the programs and captures the trace. Reported:

- sentences/s: sentences over the wall time from the first enqueue to the last output read back;
- host ms/inference: the time the host spends issuing one inference (writes, ops or execute_trace, the read
  request), i.e. the time Python is busy and could not do anything else — what trace and two queues reduce;
- device utilisation: the union of the device's record spans (any queue) over the same wall interval, from the
  driver's profile (``TTDRV_PROFILE``), i.e. how much of the time the device computes rather than waits for the host.

Each configuration also writes its timeline (host thread and each command queue; the measured window) as an SVG
like the demo's to ``--out`` (default docs/img), named ``minilm-<mode>.svg``.

Run: python python/bench/minilm_bench.py [--iters N] [--batch B] [--selector SEL] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ttdrv as ttnn
from ttdrv.models import minilm

# The paced emulated device: the emulator's default paced model (0.5 GFLOP/s and 2 GB/s per core on an 8x8 grid,
# 2 us per launch, PCIe 12 GB/s with 1 us latency) with two command queues.
PACED = "emu:paced,queues=2"
SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A woman is watching TV.",
    "How do I reset my password?",
    "Bananas are rich in potassium.",
    "The stock market fell sharply today.",
    "Quantum computers use qubits.",
]
COLORS = {"compute": "#4e79a7", "transfer": "#f28e2b", "event": "#9c9c9c", "trace": "#59a14f", "api": "#e15759",
          "framework": "#b07aa1"}


def union_ns(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of intervals clipped to [lo, hi]."""
    total, end = 0.0, lo
    for s, e in sorted((max(s, lo), min(e, hi)) for s, e in intervals):
        if e <= s or e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def write_svg(events: list[dict], lo: float, hi: float, path: Path, title: str) -> None:
    """A timeline of the spans in [lo, hi] (microseconds): one lane per host thread and command queue."""
    names = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    spans = [e for e in events if e["ph"] == "X" and e["ts"] + e["dur"] >= lo and e["ts"] <= hi]
    lanes = sorted({(e["pid"], e["tid"]) for e in spans})
    W, left, lane_h, top = 1100, 150, 26, 40
    H = top + lane_h * len(lanes) + 50
    x = lambda t: left + (min(max(t, lo), hi) - lo) / max(hi - lo, 1e-9) * (W - left - 20)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>', f'<text x="10" y="20" font-size="14">{title}</text>']
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        label = ("host " if lane[0] == 1 else "device ") + names.get(lane, str(lane[1]))
        out.append(f'<text x="10" y="{y + 17}">{label}</text>')
        out.append(f'<line x1="{left}" y1="{y + lane_h - 2}" x2="{W - 20}" y2="{y + lane_h - 2}" stroke="#ddd"/>')
        for e in spans:
            if (e["pid"], e["tid"]) != lane:
                continue
            x0, x1 = x(e["ts"]), x(e["ts"] + e["dur"])
            c = COLORS.get(e.get("cat", ""), "#76b7b2")
            out.append(f'<rect x="{x0:.2f}" y="{y + 3}" width="{max(x1 - x0, 0.5):.2f}" height="{lane_h - 8}" '
                       f'fill="{c}"><title>{e["name"]} {e["dur"]:.1f} us</title></rect>')
    ya = top + lane_h * len(lanes) + 18
    for k in range(6):
        t = lo + (hi - lo) * k / 5
        out.append(f'<text x="{x(t) - 15:.1f}" y="{ya}">{(t - lo) / 1e3:.0f} ms</text>')
    lx = left
    for cat, c in COLORS.items():
        out.append(f'<rect x="{lx}" y="{ya + 12}" width="10" height="10" fill="{c}"/>'
                   f'<text x="{lx + 14}" y="{ya + 21}">{cat}</text>')
        lx += 100
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def run(mode: str, selector: str, batch: int, iters: int, weights, out_dir: Path) -> dict:
    prof = Path(tempfile.mkdtemp()) / f"minilm-{mode}.json"
    os.environ["TTDRV_PROFILE"] = str(prof)
    device = ttnn.open_device(device_id=0, selector=selector, num_command_queues=2)
    try:
        model = minilm.MiniLM(device, batch=batch, mode=mode, weights=weights)
        inputs = [model.host_inputs([SENTENCES[(i * batch + j) % len(SENTENCES)] for j in range(batch)])
                  for i in range(iters)]
        model.prepare()
        model.run_batches(inputs=inputs[:1])  # warm: every program compiled, the trace captured
        ttnn.synchronize_device(device)
        host_ns = []
        reads = []
        t0 = time.perf_counter_ns()
        for inp in inputs:
            h0 = time.perf_counter_ns()
            reads.append(model.issue(inp))
            host_ns.append(time.perf_counter_ns() - h0)
        outs = [r.to_numpy() for r in reads]
        wall_ns = time.perf_counter_ns() - t0
        assert len(outs) == iters
        model.release()
    finally:
        ttnn.close_device(device)
        del os.environ["TTDRV_PROFILE"]
    events = json.loads(prof.read_text())["traceEvents"]
    # The profile's clock starts at the device open; place the measured window by its spans: the last `iters`
    # inferences are the last spans on the host lane (and the device records they caused).
    dev = [(e["ts"], e["ts"] + e["dur"]) for e in events if e["ph"] == "X" and e["pid"] == 2]
    end_us = max(e for _, e in dev)
    lo = end_us - wall_ns / 1e3
    busy = union_ns(dev, lo, end_us)
    write_svg(events, lo, end_us, out_dir / f"minilm-{mode}.svg",
              f"all-MiniLM-L6-v2, {mode}, {iters} inferences of batch {batch} on {selector}")
    return {
        "mode": mode,
        "sentences_per_s": iters * batch / (wall_ns / 1e9),
        "host_ms": sum(host_ns) / len(host_ns) / 1e6,
        "utilisation": busy / (wall_ns / 1e3),
        "ms_per_inference": wall_ns / iters / 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--selector", default=PACED)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "docs" / "img"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = minilm.load_weights()
    rows = [run(m, args.selector, args.batch, args.iters, weights, out) for m in ("eager", "trace", "trace_2cq")]
    base = rows[0]["sentences_per_s"]
    print(f"device {args.selector}, batch {args.batch}, {args.iters} inferences, sequence length {minilm.SEQ_LEN}")
    print("| configuration | sentences/s | ms/inference | host ms/inference | device utilisation | speedup |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['sentences_per_s']:.2f} | {r['ms_per_inference']:.1f} | {r['host_ms']:.2f} | "
              f"{100 * r['utilisation']:.0f}% | {r['sentences_per_s'] / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
