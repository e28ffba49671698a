#!/usr/bin/env python3
"""Reference outputs of the shipped spoken-maths model (assets/s2l-small) on
the bundled examples (assets/examples/*.wav), from Hugging Face `transformers`
in float32 on CPU: greedy token ids for the `latex` and `transcribe` tasks
(no timestamps, the generation config's suppress rules), so the Rust test can
check that voxtok runs the shipped weights exactly as transformers does.

    python tools/s2l/ref_examples.py  ->  tests/fixtures/s2l/small_ref.json
"""

import glob
import json
import os

import numpy as np
import soundfile as sf
import torch
from tokenizers import Tokenizer
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
model_dir = os.path.join(root, "assets", "s2l-small")
model = WhisperForConditionalGeneration.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
gen = json.load(open(os.path.join(model_dir, "generation_config.json")))
pre = json.load(open(os.path.join(model_dir, "preprocessor_config.json")))
tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
fe = WhisperFeatureExtractor(feature_size=80, chunk_length=pre["chunk_length"], sampling_rate=16000)
lang = {"en": gen["lang_to_id"]["<|en|>"], "ru": gen["lang_to_id"]["<|ru|>"]}
out = []
for path in sorted(glob.glob(os.path.join(root, "assets", "examples", "*.wav"))):
    x, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    mel = torch.from_numpy(fe([x], sampling_rate=16000, return_tensors="np").input_features)
    code = "ru" if "_ru" in os.path.basename(path) else "en"
    rec = {"file": os.path.basename(path), "language": code}
    with torch.no_grad():
        enc = model.model.encoder(mel).last_hidden_state
        for task in ("latex", "transcribe"):
            prompt = [gen["decoder_start_token_id"], lang[code], gen["task_to_id"][task], gen["no_timestamps_token_id"]]
            ids = list(prompt)
            for step in range(100):
                logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
                logits[gen["suppress_tokens"]] = -np.inf
                if step == 0:
                    logits[gen["begin_suppress_tokens"]] = -np.inf
                t = int(logits.argmax())
                if t == gen["eos_token_id"]:
                    break
                ids.append(t)
            rec[task] = {"ids": ids[len(prompt):], "text": tok.decode(ids[len(prompt):]).strip()}
    out.append(rec)
    print(rec["file"], "|", rec["latex"]["text"], "|", rec["transcribe"]["text"])
json.dump(out, open(os.path.join(root, "tests", "fixtures", "s2l", "small_ref.json"), "w"), indent=1, ensure_ascii=False)
