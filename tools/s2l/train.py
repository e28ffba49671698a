#!/usr/bin/env python3
"""Trains voxtok's small spoken-maths model: Whisper architecture, Hugging Face
layout, a byte-level BPE tokenizer trained on the corpus targets.

One audio batch feeds two decoder passes through the same encoder output:
`<|latex|>` (LaTeX for maths, text for sentences) and `<|transcribe|>` (the
spoken words; half of them with timestamp tokens), so the same model serves
`voxtok transcribe --task latex` end to end and the transcript → rules route.
Silence/noise items teach `<|nospeech|>`.

The learning-rate schedule follows the elapsed fraction of --minutes, so a run
fits its time budget on any machine; --resume continues from OUT/ckpt.pt.

    python tools/s2l/train.py --corpus data/s2l-corpus --out data/s2l-train --minutes 75
    python tools/s2l/train.py --corpus data/s2l-corpus --out data/s2l-train --export assets/s2l-small
"""

import argparse
import glob
import io
import json
import math
import os
import random
import sys
import time

import numpy as np
import soundfile as sf
import torch

WINDOW_S = 6
N_POS = WINDOW_S * 50          # encoder positions (max_source_positions)
N_FRAMES = 2 * N_POS           # mel frames per window
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ru|>", "<|translate|>", "<|transcribe|>",
            "<|latex|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
TIMESTAMPS = ["<|%.2f|>" % (i * 0.02) for i in range(N_POS + 1)]
MAX_TARGET = 128


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def load_split(corpus, split):
    import pyarrow.parquet as pq
    rows = []
    for p in sorted(glob.glob(os.path.join(corpus, "data", "%s-*.parquet" % split))):
        rows += pq.read_table(p).to_pylist()
    return rows


def mels_for(rows, cache):
    """Log-mel [N, 80, N_FRAMES] float16, computed once and cached. A cache of the
    first rows (shards added to the corpus since, e.g. `--compositions`, sort
    last) is extended rather than recomputed."""
    done = 0
    out = np.zeros((len(rows), 80, N_FRAMES), np.float16)
    if os.path.exists(cache):
        m = np.load(cache, mmap_mode="r")
        if m.shape[0] == len(rows):
            return np.asarray(m)
        if m.shape[0] < len(rows):
            done = m.shape[0]
            out[:done] = m
            log("mel cache has %d of %d rows: extending" % (done, len(rows)))
    from transformers import WhisperFeatureExtractor
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=WINDOW_S, sampling_rate=16000)
    for s in range(done, len(rows), 256):
        wavs = [sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32")[0] for r in rows[s:s + 256]]
        f = fe(wavs, sampling_rate=16000, return_tensors="np").input_features
        out[s:s + len(wavs)] = f.astype(np.float16)
        if (s - done) % 4096 == 0:
            log("mel %d/%d" % (s, len(rows)))
    np.save(cache + ".tmp.npy", out)
    os.replace(cache + ".tmp.npy", cache)  # replaces a symlinked cache, not its target
    return out


def train_tokenizer(rows, path, vocab):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers, AddedToken
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    texts = [" " + r["latex"] for r in rows] + [" " + r["spoken"] for r in rows]
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS + TIMESTAMPS])
    tok.save(path)
    return tok


class Vocab:
    def __init__(self, tok):
        self.tok = tok
        self.id = {t: tok.token_to_id(t) for t in SPECIALS}
        self.ts0 = tok.token_to_id(TIMESTAMPS[0])
        self.size = tok.get_vocab_size()

    def text(self, s):
        return self.tok.encode(" " + s, add_special_tokens=False).ids


def make_rows(v, r, task, with_ts, rng):
    """(decoder input ids, labels) for one item and task; labels -100 where nothing is learnt."""
    sot, lang = v.id["<|startoftranscript|>"], v.id["<|%s|>" % r["language"]]
    if r.get("silence"):
        inp = [sot, lang, v.id["<|%s|>" % task], v.id["<|notimestamps|>"]]
        lab = [v.id["<|nospeech|>"], -100, -100, v.id["<|endoftext|>"]]
        return inp, lab
    body = v.text(r["latex"] if task == "latex" else r["spoken"])
    if with_ts:
        end = min(N_POS, max(1, int(round(r["speech_end_s"] / 0.02))))
        seq = [v.ts0] + body + [v.ts0 + end]
        inp = [sot, lang, v.id["<|transcribe|>"]] + seq
        lab = [lang, -100] + seq + [v.id["<|endoftext|>"]]
    else:
        seq = body
        inp = [sot, lang, v.id["<|%s|>" % task], v.id["<|notimestamps|>"]] + seq
        lab = [lang, -100, -100] + seq + [v.id["<|endoftext|>"]]
    return inp[:MAX_TARGET], lab[:MAX_TARGET]


def batch_tensors(pairs, pad):
    n = max(len(i) for i, _ in pairs)
    inp = torch.full((len(pairs), n), pad, dtype=torch.long)
    lab = torch.full((len(pairs), n), -100, dtype=torch.long)
    for k, (i, l) in enumerate(pairs):
        inp[k, :len(i)] = torch.tensor(i)
        lab[k, :len(l)] = torch.tensor(l)
    return inp, lab


def noise_mel(fe_cache, rng):
    """A silence or noise window's log-mel, from the feature extractor."""
    from transformers import WhisperFeatureExtractor
    if "fe" not in fe_cache:
        fe_cache["fe"] = WhisperFeatureExtractor(feature_size=80, chunk_length=WINDOW_S, sampling_rate=16000)
    n = int(16000 * rng.uniform(1, WINDOW_S))
    x = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(n).astype(np.float32) * rng.choice(
        [0.0, 1e-4, 1e-3, 1e-2])
    return fe_cache["fe"]([x], sampling_rate=16000, return_tensors="np").input_features[0]


def spec_augment(x, rng):
    for _ in range(2):
        w = rng.randint(0, 8)
        f = rng.randint(0, 80 - w)
        x[:, f:f + w, :] = x.mean()
    for _ in range(2):
        w = rng.randint(0, 30)
        t = rng.randint(0, N_FRAMES - w)
        x[:, :, t:t + w] = x.mean()
    return x


def build_model(vsize, v, args):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    eot, sot = v.id["<|endoftext|>"], v.id["<|startoftranscript|>"]
    cfg = WhisperConfig(
        vocab_size=vsize, num_mel_bins=80, encoder_layers=args.enc_layers, decoder_layers=args.dec_layers,
        d_model=args.d_model, encoder_attention_heads=args.d_model // 64, decoder_attention_heads=args.d_model // 64,
        encoder_ffn_dim=4 * args.d_model, decoder_ffn_dim=args.dec_ffn or 4 * args.d_model, max_source_positions=N_POS,
        max_target_positions=MAX_TARGET, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=sot, dropout=0.0, begin_suppress_tokens=None, suppress_tokens=None)
    return WhisperForConditionalGeneration(cfg)


def generation_config(v):
    i = v.id
    return {
        "decoder_start_token_id": i["<|startoftranscript|>"], "eos_token_id": i["<|endoftext|>"],
        "pad_token_id": i["<|endoftext|>"], "bos_token_id": i["<|endoftext|>"],
        "no_timestamps_token_id": i["<|notimestamps|>"], "max_initial_timestamp_index": 50,
        "is_multilingual": True, "lang_to_id": {"<|en|>": i["<|en|>"], "<|ru|>": i["<|ru|>"]},
        "task_to_id": {"translate": i["<|translate|>"], "transcribe": i["<|transcribe|>"], "latex": i["<|latex|>"]},
        "suppress_tokens": [i["<|translate|>"], i["<|startoflm|>"], i["<|startofprev|>"]],
        "begin_suppress_tokens": [i["<|endoftext|>"]], "max_length": MAX_TARGET,
    }


def greedy(model, v, mel, lang, task, n=96):
    sot = v.id["<|startoftranscript|>"]
    ids = [sot, v.id["<|%s|>" % lang], v.id["<|%s|>" % task], v.id["<|notimestamps|>"]]
    with torch.no_grad():
        enc = model.model.encoder(torch.from_numpy(np.asarray(mel, np.float32))[None]).last_hidden_state
        past, step_in = None, ids
        for _ in range(n):
            o = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([step_in]), past_key_values=past,
                      use_cache=True)
            past = o.past_key_values
            logits = o.logits[0, -1]
            logits[v.ts0:] = -1e9
            t = int(logits.argmax())
            if t == v.id["<|endoftext|>"]:
                break
            ids.append(t)
            step_in = [t]
    return v.tok.decode(ids[4:], skip_special_tokens=True).strip()


def export(model, v, tok_path, out):
    os.makedirs(out, exist_ok=True)
    model.config.torch_dtype = "float16"
    model.half().save_pretrained(out, safe_serialization=True)
    model.float()
    for junk in ("generation_config.json",):
        if os.path.exists(os.path.join(out, junk)):
            os.remove(os.path.join(out, junk))
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(generation_config(v), f, indent=1)
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump({"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
                   "hop_length": 160, "n_fft": 400, "chunk_length": WINDOW_S, "n_samples": WINDOW_S * 16000,
                   "nb_max_frames": N_FRAMES, "padding_side": "right", "padding_value": 0.0,
                   "return_attention_mask": False}, f, indent=1)
    import shutil
    shutil.copy(tok_path, os.path.join(out, "tokenizer.json"))
    log("exported to", out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True, help="work dir: tokenizer, mel cache, checkpoints, log")
    ap.add_argument("--minutes", type=float, default=75)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--enc-layers", type=int, default=4)
    ap.add_argument("--dec-layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--dec-ffn", type=int, default=768, help="decoder feed-forward width (0: 4 x d-model)")
    ap.add_argument("--init-encoder", help="CTranslate2 Whisper model.bin whose encoder starts ours "
                    "(data/models/whisper-tiny.en/model.bin from scripts/setup.sh); random init when absent")
    ap.add_argument("--freeze-layers", type=int, default=2,
                    help="with --init-encoder: keep the convolutions and this many first encoder layers fixed")
    ap.add_argument("--encoder-lr-scale", type=float, default=0.2,
                    help="with --init-encoder: learning-rate factor for the pretrained encoder layers")
    ap.add_argument("--vocab", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ctc-weight", type=float, default=0.2, help="weight of the auxiliary encoder CTC loss")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="bfloat16 autocast for the forward pass (weights and optimizer stay float32)")
    ap.add_argument("--new-phase", action="store_true",
                    help="on resume, start a new warm-up + cosine learning-rate phase from the checkpoint's time")
    ap.add_argument("--export", help="write the trained model here (HF layout, float16) and exit")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)

    train, test = load_split(a.corpus, "train"), load_split(a.corpus, "test")
    tok_path = os.path.join(a.out, "tokenizer.json")
    if os.path.exists(tok_path):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tok_path)
    else:
        tok = train_tokenizer(train, tok_path, a.vocab)
    v = Vocab(tok)
    log("train %d, test %d, vocab %d" % (len(train), len(test), v.size))
    model = build_model(v.size, v, a)
    log("params %.2fM" % (sum(p.numel() for p in model.parameters()) / 1e6))
    # Auxiliary CTC head on the encoder (spoken-text BPE ids, blank = v.size): it
    # teaches the encoder alignments early, so the decoder starts to use the
    # audio within a few hundred steps. Not exported: the shipped model is plain Whisper.
    ctc = torch.nn.Linear(a.d_model, v.size + 1)
    enc_params = []
    if a.init_encoder:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import ct2_whisper
        sd, (n_layers, d, _, ffn) = ct2_whisper.encoder_state_dict(a.init_encoder)
        if (n_layers, d, ffn) != (a.enc_layers, a.d_model, 4 * a.d_model):
            sys.exit("--init-encoder has %d layers, d_model %d, ffn %d: pass matching --enc-layers/--d-model"
                     % (n_layers, d, ffn))
        sd["model.encoder.embed_positions.weight"] = sd["model.encoder.embed_positions.weight"][:N_POS]
        missing = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(x)) for k, x in sd.items()},
                                        strict=False)
        left = [k for k in missing.missing_keys if k.startswith("model.encoder.")]
        assert not left and not missing.unexpected_keys, (left, missing.unexpected_keys)
        frozen = ["model.encoder.conv1.", "model.encoder.conv2.", "model.encoder.embed_positions."] + [
            "model.encoder.layers.%d." % i for i in range(a.freeze_layers)]
        for name, p in model.named_parameters():
            if any(name.startswith(f) for f in frozen):
                p.requires_grad_(False)
            elif name.startswith("model.encoder."):
                enc_params.append(p)
        log("encoder from %s (%d layers), frozen: conv + %d layers" % (a.init_encoder, n_layers, a.freeze_layers))
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in enc_params)]
    params = enc_params + rest + list(ctc.parameters())
    opt = torch.optim.AdamW([{"params": enc_params, "scale": a.encoder_lr_scale},
                             {"params": rest + list(ctc.parameters()), "scale": 1.0}],
                            lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
    ckpt = os.path.join(a.out, "ckpt.pt")
    state = {"step": 0, "elapsed": 0.0}
    if os.path.exists(ckpt):
        c = torch.load(ckpt, weights_only=False)
        model.load_state_dict(c["model"])
        ctc.load_state_dict(c["ctc"])
        state = c["state"]
        sizes = [len(g["params"]) for g in c["opt"]["param_groups"]]
        if sizes == [len(g["params"]) for g in opt.param_groups]:
            opt.load_state_dict(c["opt"])
        else:
            log("optimizer state reset: the trainable set changed (--freeze-layers), %s -> %s"
                % (sizes, [len(g["params"]) for g in opt.param_groups]))
        log("resumed at step %d, %.1f min" % (state["step"], state["elapsed"] / 60))
    if a.new_phase and not a.export:
        # A new learning-rate phase: warm-up and a fresh cosine from here to --minutes.
        state["phase_start"], state["phase_step"] = state["elapsed"], state["step"]
        log("new phase from %.1f min to %.0f min" % (state["elapsed"] / 60, a.minutes))
    if a.export:
        export(model, v, tok_path, a.export)
        return

    mel_tr = mels_for(train, os.path.join(a.out, "mel_train.npy"))
    mel_te = mels_for(test, os.path.join(a.out, "mel_test.npy"))
    budget = a.minutes * 60
    fe_cache = {}
    t_last, ema = time.time(), None
    order = list(range(len(train)))
    rng.shuffle(order)
    pos = state["step"] * a.batch % len(order)
    model.train()
    while state["elapsed"] < budget:
        start = state.get("phase_start", 0.0)
        frac = (state["elapsed"] - start) / max(1.0, budget - start)
        warm = min(1.0, (state["step"] - state.get("phase_step", 0) + 1) / 100)
        lr = a.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        idx = [order[(pos + k) % len(order)] for k in range(a.batch)]
        pos += a.batch
        mel = torch.from_numpy(mel_tr[idx].astype(np.float32))
        items = [train[i] for i in idx]
        n_sil = 1 if rng.random() < 0.5 else 0
        if n_sil:
            mel = torch.cat([mel, torch.from_numpy(noise_mel(fe_cache, rng)[None].astype(np.float32))])
            items.append({"silence": True, "language": rng.choice(["en", "ru"])})
        if rng.random() < 0.5:
            mel = spec_augment(mel, rng)
        pairs = []
        for task in ("latex", "transcribe"):
            for r in items:
                pairs.append(make_rows(v, r, task, task == "transcribe" and rng.random() < 0.5, rng))
        inp, lab = batch_tensors(pairs, v.id["<|endoftext|>"])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            enc = model.model.encoder(mel).last_hidden_state
            out = model(encoder_outputs=(torch.cat([enc, enc]),), decoder_input_ids=inp, labels=lab)
            lp = torch.log_softmax(ctc(enc).float(), dim=-1).transpose(0, 1)
        tgt = [[] if r.get("silence") else v.text(r["spoken"]) for r in items]
        ctc_loss = torch.nn.functional.ctc_loss(
            lp, torch.tensor([t for x in tgt for t in x], dtype=torch.long),
            torch.full((len(tgt),), lp.shape[0], dtype=torch.long), torch.tensor([len(x) for x in tgt]),
            blank=v.size, zero_infinity=True)
        loss = out.loss + a.ctc_weight * ctc_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        now = time.time()
        state["elapsed"] += now - t_last
        t_last = now
        state["step"] += 1
        ema = out.loss.item() if ema is None else 0.98 * ema + 0.02 * out.loss.item()
        if state["step"] % 25 == 0:
            log("step %d  %.1f/%.0f min  lr %.2e  loss %.3f (ema %.3f)  ctc %.3f" % (
                state["step"], state["elapsed"] / 60, a.minutes, lr, out.loss.item(), ema, ctc_loss.item()))
        if state["step"] % 400 == 0 or state["elapsed"] >= budget:
            torch.save({"model": model.state_dict(), "ctc": ctc.state_dict(), "opt": opt.state_dict(),
                        "state": state}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
            model.eval()
            hits = 0
            for k in range(0, len(test), max(1, len(test) // 8))[:8]:
                hyp = greedy(model, v, mel_te[k], test[k]["language"], "latex")
                hits += hyp == test[k]["latex"]
                if k < len(test) // 3:
                    log("  ref %s\n           hyp %s" % (test[k]["latex"], hyp))
            log("  exact %d/8 on a test sample" % hits)
            model.train()
            t_last = time.time()
    log("done: step %d, %.1f min, loss ema %.3f" % (state["step"], state["elapsed"] / 60, ema or float("nan")))
    with open(os.path.join(a.out, "train_summary.json"), "w") as f:
        json.dump({"steps": state["step"], "minutes": state["elapsed"] / 60, "loss_ema": ema, "batch": a.batch,
                   "train_items": len(train), "params": sum(p.numel() for p in model.parameters())}, f)


if __name__ == "__main__":
    main()
