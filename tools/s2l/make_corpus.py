#!/usr/bin/env python3
"""Builds the voxtok spoken-maths corpus: English and Russian spoken maths and
plain sentences from `grammar.py`, LaTeX targets from voxtok's rules converter,
audio rendered by espeak-ng with many voices, speeds and pitches, plus noise and
reverb (sox), written as an S2L-style Hugging Face parquet dataset:

    OUT/data/train-0000K-of-0000N.parquet, OUT/data/test-00000-of-00001.parquet

Columns: audio {bytes (16 kHz mono WAV), path}, spoken, latex, language, kind,
template, voice, speech_end_s. Deterministic for a given --seed.

    python tools/s2l/make_corpus.py --out data/s2l-corpus --train 12000 --test 300

`--compositions N` adds N training items from the training-only composition
templates (constructs inside larger expressions; see `grammar.COMPOSITIONS`) to
an existing corpus, as OUT/data/train-c-00000-of-00001.parquet, keeping its test
split out:

    python tools/s2l/make_corpus.py --out data/s2l-corpus --compositions 6000 --seed 4321

`--sentences N` likewise adds N more plain-sentence renderings (train-s shard;
test sentences stay out), to keep sentences' share after a supplement of maths.
"""

import argparse
import io
import multiprocessing as mp
import os
import random
import subprocess
import sys

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grammar  # noqa: E402

SR = 16000
EN_VOICES = ["en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan"]
RU_VOICES = ["ru", "ru-lv"]
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "Andy", "Annie", "Denis", "Edward", "Gene", "John", "Linda", "Michael", "Mike", "Paul",
            "Robert", "Steph", "Storm", "Zac", "anika", "grandpa", "max", "norbert", "shelby", "travis", "victor"]
MAX_S = 5.9  # the model's window is 6 s


def targets(items, voxtok, lang):
    """LaTeX for each spoken line through `voxtok latex`; None where words were left unplaced."""
    text = "".join(s + "\n" for s in items)
    p = subprocess.run([voxtok, "latex", "--lang", lang, "-"], input=text.encode(), capture_output=True)
    out = p.stdout.decode().split("\n")[: len(items)]
    bad = set()
    for line in p.stderr.decode().splitlines():
        if "line " in line:
            try:
                bad.add(int(line.split("line ")[1].split(":")[0]) - 1)
            except ValueError:
                pass
    return [None if i in bad or not out[i].strip() else out[i] for i in range(len(items))]


def render(job):
    """espeak-ng → sox (16 kHz, optional reverb) → numpy (lead-in silence, noise)."""
    idx, text, lang, seed = job
    r = random.Random(seed)
    for attempt in range(4):
        voice = r.choice(EN_VOICES if lang == "en" else RU_VOICES)
        var = r.choice(VARIANTS)
        v = voice + ("+" + var if var else "")
        speed = r.randint(140, 210) + 25 * attempt
        pitch = r.randint(25, 75)
        es = subprocess.run(["espeak-ng", "-v", v, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                            capture_output=True)
        if es.returncode != 0 or len(es.stdout) < 100:
            continue
        fx = ["rate", "-v", str(SR)]
        if r.random() < 0.3:
            fx += ["reverb", str(r.randint(10, 60)), "50", str(r.randint(20, 100))]
        sx = subprocess.run(["sox", "-q", "-t", "wav", "-", "-t", "raw", "-e", "float", "-b", "32", "-c", "1",
                             "-"] + fx, input=es.stdout, capture_output=True)
        if sx.returncode != 0:
            continue
        x = np.frombuffer(sx.stdout, dtype=np.float32).copy()
        lead = int(SR * r.uniform(0.0, 0.5))
        x = np.concatenate([np.zeros(lead, np.float32), x])
        if len(x) > MAX_S * SR:
            continue
        loud = np.nonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-9))[0]
        end_s = (loud[-1] + 1) / SR if len(loud) else len(x) / SR
        x *= r.uniform(0.3, 0.95) / (np.abs(x).max() + 1e-9)
        if r.random() < 0.75:
            snr = r.uniform(8, 40)
            n = np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)
            if r.random() < 0.5:  # brown-ish noise
                n = np.cumsum(n)
                n -= np.convolve(n, np.ones(401) / 401, mode="same")
            p_s = np.mean(x ** 2) + 1e-12
            n *= np.sqrt(p_s / (10 ** (snr / 10)) / (np.mean(n ** 2) + 1e-12))
            x = x + n
        x = np.clip(x, -1, 1)
        buf = io.BytesIO()
        sf.write(buf, x, SR, format="WAV", subtype="PCM_16")
        return idx, buf.getvalue(), v, round(end_s, 2)
    return idx, None, None, None


def make_split(name, n, rng, test, voxtok, exclude, only=None):
    items = []
    seen = set(exclude)
    per_lang = {"en": int(n * 0.55), "ru": n - int(n * 0.55)}
    for lang, k in per_lang.items():
        pool = []
        tries = 0
        while len(pool) < k and tries < k * 20:
            tries += 1
            text, kind, tmpl = grammar.generate(lang, rng, test, only)
            # Supplements of sentences repeat texts (new voices): there are only ~100 per language.
            if (lang, text) in (exclude if only == ["sentence"] else seen):
                continue
            if not test and grammar.uses_heldout_number(text, lang):
                continue
            seen.add((lang, text))
            pool.append((text, kind, tmpl))
        maths = [i for i, (t, k_, tm) in enumerate(pool) if tm != "sentence"]
        lat = targets([pool[i][0] for i in maths], voxtok, lang)
        latex = {i: l for i, l in zip(maths, lat)}
        for i, (text, kind, tmpl) in enumerate(pool):
            target = text if tmpl == "sentence" else latex[i]
            if target is None:
                continue
            items.append(dict(spoken=text, latex=target, language=lang, kind=kind, template=tmpl))
    rng.shuffle(items)
    return items


def write(items, rendered, path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [(it, rendered[i]) for i, it in enumerate(items) if rendered[i][0] is not None]
    table = pa.table({
        "audio": [{"bytes": b, "path": "%s.wav" % k} for k, (it, (b, v, e)) in enumerate(rows)],
        "spoken": [it["spoken"] for it, _ in rows],
        "latex": [it["latex"] for it, _ in rows],
        "language": [it["language"] for it, _ in rows],
        "kind": [it["kind"] for it, _ in rows],
        "template": [it["template"] for it, _ in rows],
        "voice": [v for _, (b, v, e) in rows],
        "speech_end_s": [e for _, (b, v, e) in rows],
    })
    pq.write_table(table, path)
    return len(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--shard", type=int, default=3000, help="train rows per parquet shard")
    ap.add_argument("--voxtok", default="target/release/voxtok")
    ap.add_argument("--compositions", type=int, default=0,
                    help="add this many composition-template training items to an existing corpus at --out")
    ap.add_argument("--sentences", type=int, default=0,
                    help="add this many plain-sentence training items (train-s shard) to an existing corpus")
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    rng = random.Random(a.seed)
    if a.compositions or a.sentences:
        import pyarrow.parquet as pq
        held = pq.read_table(os.path.join(a.out, "data", "test-00000-of-00001.parquet"),
                             columns=["language", "spoken"]).to_pylist()
        held = {(t["language"], t["spoken"]) for t in held}
        splits = [(name, make_split("train", n, rng, False, a.voxtok, held, only=only))
                  for name, n, only in (("train-c", a.compositions, "compositions"),
                                        ("train-s", a.sentences, ["sentence"])) if n]
    else:
        test = make_split("test", a.test, rng, True, a.voxtok, set())
        train = make_split("train", a.train, rng, False, a.voxtok,
                           {(t["language"], t["spoken"]) for t in test})
        splits = [("test", test), ("train", train)]
    offsets = {"test": 0, "train": 500_000, "train-c": 900_000, "train-s": 950_000}
    with mp.Pool(a.jobs) as pool:
        for name, items in splits:
            jobs = [(i, it["spoken"], it["language"], a.seed * 1_000_003 + offsets[name] + i)
                    for i, it in enumerate(items)]
            rendered = [None] * len(items)
            for k, (i, b, v, e) in enumerate(pool.imap_unordered(render, jobs, chunksize=16)):
                rendered[i] = (b, v, e)
                if k % 1000 == 0:
                    print("%s: rendered %d/%d" % (name, k, len(items)), file=sys.stderr, flush=True)
            shards = [(0, len(items))] if name != "train" else [
                (s, min(s + a.shard, len(items))) for s in range(0, len(items), a.shard)]
            total = 0
            for k, (s, e) in enumerate(shards):
                path = os.path.join(a.out, "data", "%s-%05d-of-%05d.parquet" % (name, k, len(shards)))
                total += write(items[s:e], rendered[s:e], path)
            print("%s: %d rows" % (name, total), file=sys.stderr)


if __name__ == "__main__":
    main()
