"""Reads a CTranslate2 Whisper `model.bin` (format versions 3-6) into numpy
arrays under Hugging Face names, encoder only: what `train.py --init-encoder`
needs to start the small model's encoder from Whisper tiny.en's.

The format and the name mapping follow models/src/runtime/ctranslate2.rs.
"""

import struct

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read(path):
    b = open(path, "rb").read()
    pos = 0

    def take(n):
        nonlocal pos
        out = b[pos:pos + n]
        pos += n
        return out

    def u(fmt):
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string():
        n = u("H")
        return take(n)[:-1].decode()

    version = u("I")
    assert 3 <= version <= 6, "unsupported CTranslate2 binary version %d" % version
    string()
    u("I")
    out = {}
    for _ in range(u("I")):
        name = string()
        rank = u("B")
        shape = [u("I") for _ in range(rank)]
        dt = u("B")
        nbytes = u("I")
        out[name] = np.frombuffer(take(nbytes), dtype=DTYPES[dt]).reshape(shape)
    for _ in range(u("I")):
        alias, target = string(), string()
        out[alias] = out[target]
    return out


def encoder_state_dict(path):
    """`model.encoder.*` weights (float32) and (layers, d_model, heads, ffn)."""
    v = read(path)
    f = {k: np.asarray(x, np.float32) for k, x in v.items() if k.startswith("encoder/")}
    sd = {}

    def lin(src, dst):
        sd[dst + ".weight"] = f[src + "/weight"]
        if src + "/bias" in f:
            sd[dst + ".bias"] = f[src + "/bias"]

    def norm(src, dst):
        sd[dst + ".weight"] = f[src + "/gamma"]
        sd[dst + ".bias"] = f[src + "/beta"]

    n = 0
    while "encoder/layer_%d/ffn/linear_0/weight" % n in f:
        n += 1
    for i in range(n):
        c, h = "encoder/layer_%d" % i, "model.encoder.layers.%d" % i
        w = f[c + "/self_attention/linear_0/weight"]
        bb = f[c + "/self_attention/linear_0/bias"]
        d = w.shape[0] // 3
        for j, p in enumerate(["q_proj", "k_proj", "v_proj"]):
            sd["%s.self_attn.%s.weight" % (h, p)] = w[j * d:(j + 1) * d]
            if p != "k_proj":
                sd["%s.self_attn.%s.bias" % (h, p)] = bb[j * d:(j + 1) * d]
        lin(c + "/self_attention/linear_1", h + ".self_attn.out_proj")
        norm(c + "/self_attention/layer_norm", h + ".self_attn_layer_norm")
        lin(c + "/ffn/linear_0", h + ".fc1")
        lin(c + "/ffn/linear_1", h + ".fc2")
        norm(c + "/ffn/layer_norm", h + ".final_layer_norm")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    sd["model.encoder.embed_positions.weight"] = f["encoder/position_encodings/encodings"]
    heads = int(np.asarray(v["encoder/num_heads"]).reshape(-1)[0]) if "encoder/num_heads" in v else None
    return sd, (n, f["encoder/conv1/weight"].shape[0], heads, f["encoder/layer_0/ffn/linear_0/weight"].shape[0])
