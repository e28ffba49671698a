#!/usr/bin/env python3
"""DAC code identity on a real-size model and real-length audio: voxtok's codes
(one `voxtok tokenize` run per setting of an env toggle) against transformers'
codes for the same audio and model.

    python tools/bench/dac_codes_check.py --dir bench-out/codec-dac/s10 \
        --env VOXTOK_DAC_ENC_WINOGRAD --values 0,2

DIR holds `dac/` (a DacModel directory, e.g. written by
tools/bench/codec_transformers.py) and `audio_16k.wav`. Prints, per setting, the
fraction of identical codes per codebook and of frames whose codes are all
identical, and the first codebook/frame that differs. Exit 1 when any setting
differs from transformers.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="bench-out/codec-dac/s10")
    ap.add_argument("--voxtok", default="target/release/voxtok")
    ap.add_argument("--codebooks", type=int, default=12)
    ap.add_argument("--env", default="VOXTOK_DAC_ENC_WINOGRAD", help="toggle to vary")
    ap.add_argument("--values", default="0,2", help="comma-separated settings of --env")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-env", default="VOXTOK_DAC_WINOGRAD",
                    help="decoder toggle to vary for the decoded-audio check")
    ap.add_argument("--decode-values", default="",
                    help="';'-separated settings of --decode-env (e.g. '0;2;2,2,3,3'): decode "
                         "transformers' codes with voxtok (float WAV) and with transformers, "
                         "print the max abs difference")
    a = ap.parse_args()
    from transformers import DacModel

    torch.set_num_threads(a.threads)
    model_dir = os.path.join(a.dir, "dac")
    wav = os.path.join(a.dir, "audio_16k.wav")
    x, sr = sf.read(wav, dtype="float32")
    assert sr == 16000, f"{wav}: {sr} Hz"
    model = DacModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        want = model.encode(torch.from_numpy(x)[None, None], n_quantizers=a.codebooks).audio_codes
    want = want[0, : a.codebooks].numpy().astype(np.int64)
    print(f"{wav}: {len(x) / sr:.1f} s, transformers codes {list(want.shape)}")
    bad = False
    with tempfile.TemporaryDirectory() as tmp:
        for v in a.values.split(","):
            out = os.path.join(tmp, f"codes_{v}.npy")
            env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
            env[a.env] = v
            subprocess.run([a.voxtok, "-q", "tokenize", "--codec", "dac", "--model", model_dir,
                            "--codebooks", str(a.codebooks), wav, "-o", out], check=True, env=env)
            got = np.load(out).astype(np.int64)
            if got.shape != want.shape:
                print(f"{a.env}={v}: shape {list(got.shape)} vs {list(want.shape)}")
                bad = True
                continue
            same = got == want
            per_cb = " ".join(f"{m:.4f}" for m in same.mean(axis=1))
            frames = same.all(axis=0).mean()
            first = np.argwhere(~same)
            where = f"first difference codebook {first[0][0]} frame {first[0][1]}" if len(first) else "identical"
            print(f"{a.env}={v}: identical codes {same.mean():.4f} "
                  f"({(~same).sum()} of {same.size} differ), frames all-identical {frames:.4f}; "
                  f"per codebook {per_cb}; {where}")
            bad |= bool(len(first))
        if a.decode_values:
            codes = os.path.join(tmp, "want.npy")
            np.save(codes, want.astype(np.int64))
            with torch.no_grad():
                ref = model.decode(audio_codes=torch.from_numpy(want)[None]).audio_values
            ref = ref.reshape(-1).numpy()
            for v in a.decode_values.split(";"):
                out = os.path.join(tmp, "dec.wav")
                env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
                env[a.decode_env] = v
                subprocess.run([a.voxtok, "-q", "detokenize", "--codec", "dac", "--model", model_dir,
                                codes, "--float", "-o", out], check=True, env=env)
                y, _ = sf.read(out, dtype="float32")
                n = min(len(y), len(ref))
                err = np.abs(y[:n] - ref[:n]).max()
                print(f"{a.decode_env}={v}: decoded {len(y)} samples (transformers {len(ref)}), "
                      f"max abs difference {err:.3e} (max |y| {np.abs(ref).max():.3f})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
