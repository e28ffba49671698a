#!/usr/bin/env python3
"""Reference ASR timing with Hugging Face `transformers` (PyTorch, float32, CPU).

Builds a random-weight Whisper at whisper-tiny or whisper-base dimensions
(fixed seed, vocabulary 51865, the fixtures' tokenizer for the special ids),
saves it in the Hugging Face layout so `voxtok bench asr` loads the very same
weights, writes a 30 s test signal, and times feature extraction + encoder +
exactly N greedy tokens (end-of-text suppressed via min_new_tokens), the
same work `voxtok bench asr --exact-tokens N` does.

Run through tools/bench/asr.sh, which times voxtok in the same run.
"""

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.generation import GenerationConfig, GenerationMixin

ROOT = Path(__file__).resolve().parents[2]
DIMS = {  # (d_model, layers, heads) of the released checkpoints
    "tiny": (384, 4, 6),
    "base": (512, 6, 8),
    "small": (768, 12, 12),
}
SR = 16000


def signal(seconds):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 3 * t)) / SR
    v = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (0.2 * v + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def build(dims, out):
    d, layers, heads = DIMS[dims]
    tok = ROOT / "tests/fixtures/whisper/tokenizer.json"
    tid = json.loads(tok.read_text())
    ids = {a["content"]: a["id"] for a in tid["added_tokens"]}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=d, encoder_layers=layers,
                        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                        encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d, max_source_positions=1500,
                        max_target_positions=448, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                        decoder_start_token_id=sot, suppress_tokens=None, begin_suppress_tokens=None)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    gen = GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
                           no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
                           lang_to_id={"<|en|>": ids["<|en|>"]},
                           task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]})
    model.generation_config = gen
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tok, out / "tokenizer.json")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    prompt = [sot, ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]
    return model, prompt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="tiny", choices=sorted(DIMS))
    ap.add_argument("--out-dir", default=str(ROOT / "bench-out"))
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("-n", "--count", type=int, default=1, help="inputs, decoded one at a time")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out_dir)
    model, prompt = build(a.dims, out / "models" / f"whisper-{a.dims}-random")
    x = signal(a.seconds)
    sf.write(out / f"asr_{int(a.seconds)}s.wav", x, SR, subtype="FLOAT")
    x, _ = sf.read(out / f"asr_{int(a.seconds)}s.wav", dtype="float32")
    fe = WhisperFeatureExtractor(feature_size=80)
    gc = GenerationConfig(decoder_start_token_id=prompt[0], eos_token_id=model.generation_config.eos_token_id,
                          pad_token_id=model.generation_config.eos_token_id, do_sample=False, num_beams=1,
                          max_new_tokens=a.tokens, min_new_tokens=a.tokens)
    model.generation_config = gc

    def once():
        n = 0
        for _ in range(a.count):
            f = fe(x, sampling_rate=SR, return_tensors="pt").input_features
            with torch.no_grad():
                o = GenerationMixin.generate(model, input_features=f, decoder_input_ids=torch.tensor([prompt]),
                                             generation_config=gc)
            n += o.shape[1] - len(prompt)
        return n

    once()  # warm-up
    best = None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        n = once()
        dt = time.perf_counter() - t0
        best = (dt, n) if best is None or dt < best[0] else best
    dt, n = best
    audio_s = a.seconds * a.count
    rep = {"engine": "transformers", "model": f"whisper-{a.dims}-random", "files": a.count, "batch_size": 1,
           "audio_s": audio_s, "wall_s": dt, "x_real_time": audio_s / dt, "tokens": n, "tokens_per_s": n / dt,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": a.threads,
           "torch": torch.__version__}
    print(f"transformers asr  model={rep['model']} files={a.count} audio={audio_s:.1f}s wall={dt:.3f}s  "
          f"{audio_s / dt:.2f}x real time  {n / dt:.1f} tokens/s  peak {rep['peak_rss_mib']:.0f} MiB")
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
