#!/usr/bin/env python3
"""Reference side of `voxtok bench text`: transformers (float32, CPU) on a
random-weight Qwen2 model with Qwen2.5-0.5B's real dimensions, and the Python
`tokenizers` package on the same text.

Creates the model directory (default /tmp/voxtok-bench-qwen2.5-0.5b, never in
git) if missing, then measures prefill tok/s and decode tok/s at each batch
size and tokenizer MB/s; writes one JSON object (stdout or --out).

  /work/venv/bin/python tools/bench/text_transformers.py --threads 2 --out /tmp/ref.json
"""
import argparse
import json
import os
import resource
import shutil
import time

import torch
from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIX = os.path.join(ROOT, "tests", "fixtures", "llm")

# Qwen2.5-0.5B-Instruct's config.json dimensions.
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                  use_sliding_window=False, bos_token_id=151643, eos_token_id=151645)


def ensure_model(path):
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return
    os.makedirs(path, exist_ok=True)
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).eval().float()
    m.save_pretrained(path, safe_serialization=True)
    # a small tokenizer for the MB/s figures (the model only sees ids here)
    shutil.copy(os.path.join(FIX, "qwen2", "tokenizer.json"), os.path.join(path, "tokenizer.json"))


def bench_text(mb):
    base = "".join(open(os.path.join(FIX, f"corpus_{l}.txt"), encoding="utf-8").read() for l in ("en", "ru", "math"))
    lines = base.splitlines()
    out, size = [], 0
    while size < mb * 1e6:
        for l in lines:
            out.append(l)
            size += len(l.encode()) + 1
    return out, size


@torch.no_grad()
def bench_model(model, batch, prompt, new, vocab, reps=1):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, prompt), generator=g)
    mask = torch.ones_like(ids)
    best_pf, best_dec = 0.0, 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        t_pf = time.perf_counter() - t0
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(new):
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], 1)
            out = model(input_ids=nxt, attention_mask=mask, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t_dec = time.perf_counter() - t0
        mask = torch.ones_like(ids)
        best_pf = max(best_pf, batch * prompt / t_pf)
        best_dec = max(best_dec, batch * new / t_dec)
    return best_pf, best_dec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/tmp/voxtok-bench-qwen2.5-0.5b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--text-mb", type=float, default=2.0)
    ap.add_argument("--create-only", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ensure_model(a.model)
    if a.create_only:
        return
    res = {"engine": "transformers " + __import__("transformers").__version__ + " / torch " + torch.__version__,
           "threads": a.threads, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "model": {}}
    model = Qwen2ForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    for b in [int(x) for x in a.batches.split(",")]:
        pf, dec = bench_model(model, b, a.prompt_tokens, a.new_tokens, model.config.vocab_size)
        res["model"][str(b)] = {"prefill_tok_s": pf, "decode_tok_s": dec}
        print(f"transformers batch {b}: prefill {pf:.1f} tok/s, decode {dec:.2f} tok/s", flush=True)
    del model
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    lines, size = bench_text(a.text_mb)
    t0 = time.perf_counter()
    for l in lines:
        tok.encode(l)
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok.encode_batch(lines)
    t_batch = time.perf_counter() - t0
    res["tokenizer"] = {"bytes": size, "encode_mb_s": size / 1e6 / t_one, "encode_batch_mb_s": size / 1e6 / t_batch}
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tokenizers: encode {res['tokenizer']['encode_mb_s']:.2f} MB/s, "
          f"encode_batch {res['tokenizer']['encode_batch_mb_s']:.2f} MB/s", flush=True)
    js = json.dumps(res, indent=1)
    if a.out:
        open(a.out, "w").write(js)
    else:
        print(js)


if __name__ == "__main__":
    main()
