#!/usr/bin/env python3
"""Builds a small S2L-style Hugging Face parquet dataset from spoken maths pairs,
with audio spoken by espeak-ng (voices `en` / `ru`), 16 kHz mono 16-bit WAV.

Input: a TSV (`#` lines are comments) with columns
    spoken <TAB> language (en|ru) <TAB> kind (equation|sentence) [<TAB> latex]
When the LaTeX column is absent the target is made by voxtok's rules converter
(`voxtok latex --lang L -`); a line whose words the converter cannot all place
is an error (fix the line or give its LaTeX).

Output: OUT/data/<split>-00000-of-00001.parquet with the schema shared with
tools/s2l/make_corpus.py (issue 10's training corpus):
    audio {bytes: binary (WAV), path: string}, spoken, latex, language, kind

Deterministic: fixed espeak-ng speed/pitch per language, no randomness.

    /work/venv/bin/python tools/s2l/make_synthetic.py \
        --pairs tools/s2l/synthetic_pairs.tsv --out tests/fixtures/s2l/synthetic
"""

import argparse
import io
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

SR = 16000
VOICE = {"en": "en", "ru": "ru"}


def read_pairs(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 3 or cols[1] not in VOICE or cols[2] not in ("equation", "sentence"):
                sys.exit("%s:%d: expected spoken<TAB>en|ru<TAB>equation|sentence[<TAB>latex]" % (path, n))
            rows.append(dict(spoken=cols[0], language=cols[1], kind=cols[2],
                             latex=cols[3] if len(cols) > 3 else None, line=n))
    return rows


def rules_latex(rows, voxtok, path):
    """Fills missing LaTeX with `voxtok latex`, one call per language."""
    for lang in VOICE:
        todo = [r for r in rows if r["latex"] is None and r["language"] == lang]
        if not todo:
            continue
        text = "".join(r["spoken"] + "\n" for r in todo)
        p = subprocess.run([voxtok, "latex", "--lang", lang, "-"], input=text.encode(),
                           capture_output=True)
        out = p.stdout.decode().split("\n")
        if p.returncode != 0 or len(out) < len(todo):
            sys.exit("voxtok latex failed (%d): %s" % (p.returncode, p.stderr.decode()))
        for r, l in zip(todo, out):
            if not l.strip():
                sys.exit("%s:%d: the rules converter made nothing of %r" % (path, r["line"], r["spoken"]))
            r["latex"] = l
        if p.stderr.strip():
            sys.exit("%s: the rules converter could not place some words (%s): %s"
                     % (path, lang, p.stderr.decode()))


def speak(text, lang, speed):
    """espeak-ng → sox (16 kHz mono) → trimmed float samples → WAV bytes."""
    es = subprocess.run(["espeak-ng", "-v", VOICE[lang], "-s", str(speed), "-p", "50", "--stdout", text],
                        capture_output=True, check=True)
    sx = subprocess.run(["sox", "-q", "-t", "wav", "-", "-t", "raw", "-e", "float", "-b", "32", "-c", "1", "-",
                         "rate", "-v", str(SR)], input=es.stdout, capture_output=True, check=True)
    x = np.frombuffer(sx.stdout, dtype=np.float32).copy()
    loud = np.nonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-9))[0]
    if len(loud):  # keep 0.1 s of silence either side
        x = x[max(0, loud[0] - SR // 10): loud[-1] + SR // 10]
    x *= 0.8 / (np.abs(x).max() + 1e-9)
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_bad(out, good_wav):
    """Reader/benchmark error fixtures: a parquet with no audio column, and one
    whose rows are good, undecodable audio bytes, and an unbalanced LaTeX reference."""
    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.table({"spoken": ["x squared"], "latex": ["x^{2}"], "language": ["en"]}),
                   os.path.join(out, "no_audio.parquet"))
    audio_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({
        "audio": pa.array([{"bytes": good_wav, "path": "good.wav"},
                           {"bytes": b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(64), "path": "bad.wav"},
                           {"bytes": good_wav, "path": "badref.wav"}], type=audio_t),
        "spoken": ["x squared plus two x plus one equals zero"] * 3,
        "latex": ["x^{2} + 2x + 1 = 0", "x^{2} + 2x + 1 = 0", "\\frac{1}{2"],
        "language": ["en"] * 3,
        "kind": ["equation"] * 3,
    }), os.path.join(out, "broken_items.parquet"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="tools/s2l/synthetic_pairs.tsv")
    ap.add_argument("--out", default="tests/fixtures/s2l/synthetic")
    ap.add_argument("--split", default="test")
    ap.add_argument("--voxtok", default="target/debug/voxtok")
    ap.add_argument("--speed", type=int, default=170, help="espeak-ng words per minute")
    ap.add_argument("--bad-out", default="tests/fixtures/s2l/bad", help="error fixtures ('' to skip)")
    a = ap.parse_args()
    rows = read_pairs(a.pairs)
    rules_latex(rows, a.voxtok, a.pairs)
    audio = []
    for i, r in enumerate(rows):
        audio.append({"bytes": speak(r["spoken"], r["language"], a.speed), "path": "%s-%03d.wav" % (a.split, i)})
    table = pa.table({
        "audio": pa.array(audio, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "spoken": [r["spoken"] for r in rows],
        "latex": [r["latex"] for r in rows],
        "language": [r["language"] for r in rows],
        "kind": [r["kind"] for r in rows],
    })
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    path = os.path.join(a.out, "data", "%s-00000-of-00001.parquet" % a.split)
    pq.write_table(table, path)
    if a.bad_out:
        write_bad(a.bad_out, audio[0]["bytes"])
    secs = sum(len(x["bytes"]) - 44 for x in audio) / 2 / SR
    print("%s: %d rows, %.1f s of audio, %d bytes" % (path, len(rows), secs, os.path.getsize(path)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
