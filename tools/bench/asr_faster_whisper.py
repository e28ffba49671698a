"""faster-whisper on the same files and weights as `voxtok bench asr`: the peer run.

Writes one JSON line per file ({"path", "text", "seconds", "avg_logprob",
"no_speech_prob"}) and a final summary line ({"summary": {...}}) with wall
time, audio seconds, x real time and peak RSS, so `voxtok bench asr --score`
can put both side by side.

    python tools/bench/asr_faster_whisper.py --model data/models/whisper-tiny.en \
        --files-from list.txt --threads 2 --beam-size 1 --compute-type float32 -o fw.jsonl

Input: give 16 kHz files (tools/bench/asr_real.sh makes a 16 kHz copy of the
set once, with sox, and hands the same files to voxtok), so both engines read
identical samples. Other rates are resampled here with scipy's polyphase
filter (its 41-tap filter leaves images at about -47 dB: not what voxtok gets).

--mel-padding: how the log-mel of a window shorter than 30 s is padded.
  zeros (faster-whisper's and openai-whisper transcribe()'s own): the window's
        frames, then zeros in the normalized log-mel domain.
  audio (voxtok's and transformers' feature extractor): the window's audio
        padded with zero samples to 30 s, then the log-mel, so the padding
        frames hold the log-mel of silence (max - 8 dB, normalized).
        Exact for files up to 30 s; for longer files the padding value is
        emulated per window (content frames keep faster-whisper's
        file-global normalization).

avg_logprob / no_speech_prob are those of the last window decoded (the whole
file for files up to 30 s), taken from faster-whisper's generate_with_fallback,
also when the window was then skipped as silence.
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

N_SAMPLES = 480000  # 30 s at 16 kHz
N_FRAMES = 3000


def load_16k(path):
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != 16000:
        g = gcd(sr, 16000)
        x = resample_poly(x, 16000 // g, sr // g).astype(np.float32)
    return x


class AudioPadding:
    """Patches faster_whisper's pad_or_trim so that padding frames are the
    log-mel of zero samples (voxtok / transformers), not zeros."""

    def __init__(self, fwt, feature_extractor):
        self.orig = fwt.pad_or_trim
        self.fe = feature_extractor
        self.exact = None  # (content frames, [n_mels, 3000]) of the current file
        fwt.pad_or_trim = self

    def set_audio(self, x):
        if len(x) <= N_SAMPLES:
            # The window's audio zero-padded to 30 s, then the log-mel (3000 frames).
            mel = self.fe(x, padding=N_SAMPLES - len(x))
            self.exact = (len(x) // 160, mel[:, :N_FRAMES])
        else:
            self.exact = None

    def __call__(self, array, length=N_FRAMES, *, axis=-1):
        n = array.shape[-1]
        if n >= length:
            return self.orig(array, length, axis=axis)
        if self.exact is not None and n == self.exact[0]:
            return self.exact[1].astype(array.dtype)
        floor = max(-1.5, float(array.max()) - 2.0) if n else -1.5
        pad = np.full(array.shape[:-1] + (length - n,), floor, dtype=array.dtype)
        return np.concatenate([array, pad], axis=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="CTranslate2 Whisper directory")
    ap.add_argument("--files-from", required=True, help="text file, one audio path per line")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1, help=">1 uses BatchedInferencePipeline")
    ap.add_argument("--compute-type", default="float32", help="float32 | int8 | int8_float32 ...")
    ap.add_argument("--language", default="en")
    ap.add_argument("--mel-padding", choices=["zeros", "audio"], default="zeros",
                    help="zeros: faster-whisper's own; audio: voxtok's (see above)")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()

    import faster_whisper.transcribe as fwt
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    paths = [l.strip() for l in open(a.files_from) if l.strip()]
    audio = [load_16k(p) for p in paths]  # decode outside the timed region, as voxtok's bench times decode separately
    model = WhisperModel(a.model, device="cpu", compute_type=a.compute_type, cpu_threads=a.threads, num_workers=1)
    pipe = BatchedInferencePipeline(model) if a.batch_size > 1 else None
    padding = AudioPadding(fwt, model.feature_extractor) if a.mel_padding == "audio" else None

    # The scores of the last decoded window (kept even when it is then skipped as silence).
    last = {}
    orig_gwf = model.generate_with_fallback

    def gwf(*args, **kw):
        r = orig_gwf(*args, **kw)
        last["avg_logprob"], last["no_speech_prob"] = float(r[1]), float(r[0].no_speech_prob)
        return r

    model.generate_with_fallback = gwf
    # Warm-up: one short call so one-time initialisation is not billed to the first file.
    if padding:
        padding.set_audio(np.zeros(16000, dtype=np.float32))
    list(model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=a.beam_size, language=a.language)[0])

    t_all = time.perf_counter()
    with open(a.output, "w") as out:
        for p, x in zip(paths, audio):
            last.clear()
            if padding:
                padding.set_audio(x)
            t0 = time.perf_counter()
            kw = dict(beam_size=a.beam_size, language=a.language, temperature=0.0,
                      condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
            if pipe is not None:
                segs, _ = pipe.transcribe(x, batch_size=a.batch_size, **kw)
            else:
                segs, _ = model.transcribe(x, **kw)
            text = "".join(s.text for s in segs).strip()
            rec = {"path": p, "text": text, "seconds": time.perf_counter() - t0}
            rec.update(last)
            out.write(json.dumps(rec) + "\n")
        wall = time.perf_counter() - t_all
        audio_s = sum(len(x) for x in audio) / 16000.0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        engine = "faster-whisper [%s log-mel padding]" % ("own" if a.mel_padding == "zeros" else "voxtok")
        summary = {"engine": engine, "compute_type": a.compute_type, "threads": a.threads,
                   "beam_size": a.beam_size, "batch_size": a.batch_size, "mel_padding": a.mel_padding,
                   "files": len(paths), "audio_s": audio_s, "wall_s": wall, "x_real_time": audio_s / wall,
                   "peak_rss_mb": peak_mb}
        out.write(json.dumps({"summary": summary}) + "\n")
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
