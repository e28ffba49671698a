#!/usr/bin/env python3
"""Reference side of the Mimi benchmark: a random-weight `MimiModel` at the
real checkpoint's size (kyutai/mimi config = MimiConfig() defaults, fixed
seed, codebooks filled with random vectors), saved for voxtok, and
transformers' encode/decode timed on the same audio.

    python tools/bench/codec_mimi.py --out bench-out/mimi --seconds 5 --threads 2 --codebooks 8

Writes OUT/mimi/ (model dir), OUT/audio_24k.wav and OUT/transformers.json.
"""

import argparse
import json
import os
import sys

import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from codec_transformers import best_of, signal  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/mimi")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--codebooks", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    from transformers import MimiConfig, MimiModel

    model = MimiModel(MimiConfig()).eval()
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n.endswith("embed_sum"):
                b.copy_(torch.randn(b.shape))
        for m in model.modules():
            if hasattr(m, "_embed"):
                m._embed = None
    model.save_pretrained(os.path.join(a.out, "mimi"))
    x = signal(24000, a.seconds)
    sf.write(os.path.join(a.out, "audio_24k.wav"), x, 24000, subtype="FLOAT")
    xs = torch.from_numpy(x)[None, None]
    k = a.codebooks
    with torch.no_grad():
        codes = model.encode(xs, num_quantizers=k).audio_codes
        te = best_of(lambda: model.encode(xs, num_quantizers=k), a.repeat)
        td = best_of(lambda: model.decode(codes), a.repeat)
    report = {"mimi": {"codebooks": int(codes.shape[1]), "seconds": a.seconds,
                       "encode_xrt": a.seconds / te, "decode_xrt": a.seconds / td,
                       "params": sum(p.numel() for p in model.parameters())}}
    print("transformers mimi:", report["mimi"])
    with open(os.path.join(a.out, "transformers.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
