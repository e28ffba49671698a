#!/usr/bin/env python3
"""Reference side of the codec benchmark: builds random-weight EnCodec / DAC
models at the real checkpoints' sizes (facebook/encodec_24khz,
descript/dac_16khz configs, fixed seed, codebooks filled with random
vectors), saves them for voxtok, and times transformers' encode/decode on the
same audio.

    python tools/bench/codec_transformers.py --out bench-out/codec --seconds 10 --threads 2

Writes OUT/{encodec,dac}/ (model dirs), OUT/audio_{24k,16k}.wav and
OUT/transformers.json ({codec: {encode_xrt, decode_xrt, codebooks, ...}}).

    python tools/bench/codec_transformers.py --out bench-out/codec --time-only \
        --codecs encodec --json bench-out/codec/round1.json

times the models and audio an earlier run saved (read from those local
directories), writing only the timings: for repeated rounds beside voxtok
(tools/bench/codec_rounds.sh).
"""

import argparse
import json
import os
import time

import numpy as np
import soundfile as sf
import torch


def signal(rate, seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    f = 150 + 40 * np.sin(2 * np.pi * 0.5 * t)
    x = sum(np.sin(2 * np.pi * h * np.cumsum(f) / rate) / h for h in range(1, 6))
    x = 0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.shape)
    return x.astype(np.float32)


def best_of(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/codec")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--codecs", default="encodec,dac", help="comma-separated subset of encodec,dac")
    ap.add_argument("--time-only", action="store_true",
                    help="time the models and audio already saved in --out instead of building them")
    ap.add_argument("--json", help="where the timings go (default OUT/transformers.json)")
    a = ap.parse_args()
    codecs = a.codecs.split(",")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    report = {}
    if "encodec" in codecs:
        encodec(a, report)
    if "dac" in codecs:
        dac(a, report)
    path = a.json or os.path.join(a.out, "transformers.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def saved_audio(a, name, rate):
    """The benchmark signal: read back (--time-only) or made and saved."""
    path = os.path.join(a.out, name)
    if a.time_only:
        x, sr = sf.read(path, dtype="float32")
        assert sr == rate, f"{path}: {sr} Hz, expected {rate}"
        return x
    x = signal(rate, a.seconds)
    sf.write(path, x, rate, subtype="FLOAT")
    return x


def encodec(a, report):
    from transformers import EncodecConfig, EncodecModel

    # EnCodec 24 kHz (real size), 6 kbps = 8 codebooks.
    if a.time_only:
        model = EncodecModel.from_pretrained(os.path.join(a.out, "encodec")).eval()
    else:
        model = EncodecModel(EncodecConfig()).eval()
        with torch.no_grad():
            for layer in model.quantizer.layers:
                cb = layer.codebook
                cb.embed.copy_(torch.randn(cb.embed.shape))
                cb.embed_avg.copy_(cb.embed)
                cb.cluster_size.fill_(1.0)
        model.save_pretrained(os.path.join(a.out, "encodec"))
    x = saved_audio(a, "audio_24k.wav", 24000)
    seconds = len(x) / 24000
    xs = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        enc = model.encode(xs, bandwidth=6.0)
        te = best_of(lambda: model.encode(xs, bandwidth=6.0), a.repeat)
        td = best_of(lambda: model.decode(enc.audio_codes, enc.audio_scales), a.repeat)
    report["encodec"] = {"codebooks": int(enc.audio_codes.shape[2]), "seconds": seconds,
                         "encode_xrt": seconds / te, "decode_xrt": seconds / td,
                         "params": sum(p.numel() for p in model.parameters())}
    print("transformers encodec:", report["encodec"])


def dac(a, report):
    from transformers import DacConfig, DacModel

    # DAC 16 kHz (real size), all 12 codebooks.
    if a.time_only:
        model = DacModel.from_pretrained(os.path.join(a.out, "dac")).eval()
    else:
        model = DacModel(DacConfig(n_codebooks=12)).eval()
        model.save_pretrained(os.path.join(a.out, "dac"))
    x = saved_audio(a, "audio_16k.wav", 16000)
    seconds = len(x) / 16000
    xs = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        codes = model.encode(xs).audio_codes
        te = best_of(lambda: model.encode(xs), a.repeat)
        td = best_of(lambda: model.decode(audio_codes=codes), a.repeat)
    report["dac"] = {"codebooks": int(codes.shape[1]), "seconds": seconds,
                     "encode_xrt": seconds / te, "decode_xrt": seconds / td,
                     "params": sum(p.numel() for p in model.parameters())}
    print("transformers dac:", report["dac"])


if __name__ == "__main__":
    main()
