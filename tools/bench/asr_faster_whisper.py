"""faster-whisper on the same files and weights as `voxtok bench asr`: the peer run.

Writes one JSON line per file ({"path", "text", "seconds"}) and a final
summary line ({"summary": {...}}) with wall time, audio seconds, x real time
and peak RSS, so `voxtok bench asr --peer FILE` can put both side by side.

    python tools/bench/asr_faster_whisper.py --model data/models/whisper-tiny.en \
        --files-from list.txt --threads 2 --beam-size 1 --compute-type float32 -o fw.jsonl

Audio is read with soundfile and resampled to 16 kHz with scipy's polyphase
filter (faster-whisper's own decoder needs PyAV; this keeps both runs on the
same PCM path as far as Python allows).
"""
import argparse
import json
import resource
import sys
import time
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


def load_16k(path):
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != 16000:
        g = gcd(sr, 16000)
        x = resample_poly(x, 16000 // g, sr // g).astype(np.float32)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="CTranslate2 Whisper directory")
    ap.add_argument("--files-from", required=True, help="text file, one audio path per line")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1, help=">1 uses BatchedInferencePipeline")
    ap.add_argument("--compute-type", default="float32", help="float32 | int8 | int8_float32 ...")
    ap.add_argument("--language", default="en")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    paths = [l.strip() for l in open(a.files_from) if l.strip()]
    audio = [load_16k(p) for p in paths]  # decode outside the timed region, as voxtok's bench times decode separately
    model = WhisperModel(a.model, device="cpu", compute_type=a.compute_type, cpu_threads=a.threads, num_workers=1)
    pipe = BatchedInferencePipeline(model) if a.batch_size > 1 else None
    # Warm-up: one short call so one-time initialisation is not billed to the first file.
    list(model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=a.beam_size, language=a.language)[0])

    t_all = time.perf_counter()
    with open(a.output, "w") as out:
        for p, x in zip(paths, audio):
            t0 = time.perf_counter()
            kw = dict(beam_size=a.beam_size, language=a.language, temperature=0.0,
                      condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
            if pipe is not None:
                segs, _ = pipe.transcribe(x, batch_size=a.batch_size, **kw)
            else:
                segs, _ = model.transcribe(x, **kw)
            text = "".join(s.text for s in segs).strip()
            out.write(json.dumps({"path": p, "text": text, "seconds": time.perf_counter() - t0}) + "\n")
        wall = time.perf_counter() - t_all
        audio_s = sum(len(x) for x in audio) / 16000.0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        summary = {"engine": "faster-whisper", "compute_type": a.compute_type, "threads": a.threads,
                   "beam_size": a.beam_size, "batch_size": a.batch_size, "files": len(paths),
                   "audio_s": audio_s, "wall_s": wall, "x_real_time": audio_s / wall, "peak_rss_mb": peak_mb}
        out.write(json.dumps({"summary": summary}) + "\n")
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
