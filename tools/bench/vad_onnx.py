#!/usr/bin/env python3
"""Reference for tools/bench/vad.sh: silero-vad's ONNX model (the wheel's
silero_vad.onnx) run by onnxruntime on one thread, window by window exactly
as silero's OnnxWrapper does. Prints one JSON line like `voxtok vad --bench`.
usage: vad_onnx.py WHEEL AUDIO.wav REPS"""
import json, sys, tempfile, time, zipfile, os
import numpy as np, soundfile as sf, onnxruntime as ort

whl, wav, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
tmp = tempfile.mkdtemp()
zipfile.ZipFile(whl).extract("silero_vad/data/silero_vad.onnx", tmp)
o = ort.SessionOptions(); o.inter_op_num_threads = 1; o.intra_op_num_threads = 1
s = ort.InferenceSession(os.path.join(tmp, "silero_vad/data/silero_vad.onnx"), providers=["CPUExecutionProvider"], sess_options=o)
x, sr = sf.read(wav, dtype="float32")
assert sr == 16000 and x.ndim == 1
x = np.pad(x, (0, (-len(x)) % 512))
sr_t = np.array(16000, dtype=np.int64)
t0 = time.perf_counter()
for _ in range(reps):
    state = np.zeros((2, 1, 128), np.float32); ctx = np.zeros((1, 64), np.float32)
    for i in range(0, len(x), 512):
        inp = np.concatenate([ctx, x[None, i:i + 512]], axis=1)
        p, state = s.run(None, {"input": inp, "state": state, "sr": sr_t})
        ctx = inp[:, -64:]
dt = (time.perf_counter() - t0) / reps
print(json.dumps({"path": wav, "vad": "silero-onnxruntime", "audio_s": len(x) / sr, "seconds": dt, "x_realtime": len(x) / sr / dt}))
