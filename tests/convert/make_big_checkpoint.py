#!/usr/bin/env python3
"""Writes a synthetic DeepSeek-V4 checkpoint of about 1.8 GiB in the official layout (FP8 +
E8M0 scales, MXFP4 experts, BF16, F32, I64 tid2eid; 4 shards + index) for measuring
`v4 convert` (peak RSS vs file size, throughput). Random bytes; not committed, not a test input.

Requirements (pip): numpy.   Usage: python tests/convert/make_big_checkpoint.py OUT_DIR [--layers N]
"""
import argparse
import json
import os

import numpy as np


def tensors(L, mtp=1):
    V, D, H, HD, QL, OG, OL, E, I, NU, NH, HC, IH, ID = 8192, 2048, 16, 512, 1024, 4, 512, 64, 1024, 6, 2, 4, 16, 128
    ratios = ([0, 0] + [4, 128] * L)[:L]
    out = []

    def t(name, dtype, shape):
        out.append((name, dtype, list(shape)))

    def fp8(name, o, i):
        t(name, "F8_E4M3", (o, i))
        t(name[:-7] + ".scale", "F8_E8M0", ((o + 127) // 128, (i + 127) // 128))

    def block(p, r, hash_layer, is_mtp):
        if is_mtp:
            fp8(p + "e_proj.weight", D, D)
            fp8(p + "h_proj.weight", D, D)
            for n in ("enorm", "hnorm", "norm"):
                t(p + n + ".weight", "BF16", (D,))
            t(p + "hc_head_fn", "F32", (HC, HC * D))
            t(p + "hc_head_base", "F32", (HC,))
            t(p + "hc_head_scale", "F32", (1,))
        t(p + "attn_norm.weight", "BF16", (D,))
        t(p + "ffn_norm.weight", "BF16", (D,))
        for s in ("attn", "ffn"):
            t(p + f"hc_{s}_fn", "F32", ((2 + HC) * HC, HC * D))
            t(p + f"hc_{s}_base", "F32", ((2 + HC) * HC,))
            t(p + f"hc_{s}_scale", "F32", (3,))
        t(p + "attn.attn_sink", "F32", (H,))
        fp8(p + "attn.wq_a.weight", QL, D)
        t(p + "attn.q_norm.weight", "BF16", (QL,))
        fp8(p + "attn.wq_b.weight", H * HD, QL)
        fp8(p + "attn.wkv.weight", HD, D)
        t(p + "attn.kv_norm.weight", "BF16", (HD,))
        fp8(p + "attn.wo_a.weight", OG * OL, H * HD // OG)
        fp8(p + "attn.wo_b.weight", D, OG * OL)
        if r:
            c = 2 if r == 4 else 1
            t(p + "attn.compressor.ape", "F32", (r, c * HD))
            t(p + "attn.compressor.wkv.weight", "BF16", (c * HD, D))
            t(p + "attn.compressor.wgate.weight", "BF16", (c * HD, D))
            t(p + "attn.compressor.norm.weight", "BF16", (HD,))
        if r == 4:
            fp8(p + "attn.indexer.wq_b.weight", IH * ID, QL)
            t(p + "attn.indexer.weights_proj.weight", "BF16", (IH, D))
            t(p + "attn.indexer.compressor.ape", "F32", (4, 2 * ID))
            t(p + "attn.indexer.compressor.wkv.weight", "BF16", (2 * ID, D))
            t(p + "attn.indexer.compressor.wgate.weight", "BF16", (2 * ID, D))
            t(p + "attn.indexer.compressor.norm.weight", "BF16", (ID,))
        t(p + "ffn.gate.weight", "BF16", (E, D))
        if hash_layer:
            t(p + "ffn.gate.tid2eid", "I64", (V, NU))
        else:
            t(p + "ffn.gate.bias", "F32", (E,))
        for e in range(E):
            for w, (o, i) in (("w1", (I, D)), ("w3", (I, D)), ("w2", (D, I))):
                t(p + f"ffn.experts.{e}.{w}.weight", "I8", (o, i // 2))
                t(p + f"ffn.experts.{e}.{w}.scale", "F8_E8M0", (o, i // 32))
        fp8(p + "ffn.shared_experts.w1.weight", I, D)
        fp8(p + "ffn.shared_experts.w3.weight", I, D)
        fp8(p + "ffn.shared_experts.w2.weight", D, I)

    t("embed.weight", "BF16", (V, D))
    t("head.weight", "BF16", (V, D))
    t("norm.weight", "BF16", (D,))
    t("hc_head_fn", "F32", (HC, HC * D))
    t("hc_head_base", "F32", (HC,))
    t("hc_head_scale", "F32", (1,))
    for l in range(L):
        block(f"layers.{l}.", ratios[l], l < NH, False)
    for m in range(mtp):
        block(f"mtp.{m}.", 0, False, True)
    cfg = {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4", "vocab_size": V, "hidden_size": D,
        "num_hidden_layers": L, "num_attention_heads": H, "head_dim": HD, "qk_rope_head_dim": 64, "q_lora_rank": QL,
        "o_lora_rank": OL, "o_groups": OG, "moe_intermediate_size": I, "n_routed_experts": E, "n_shared_experts": 1,
        "num_experts_per_tok": NU, "num_hash_layers": NH, "hc_mult": HC, "sliding_window": 128,
        "num_nextn_predict_layers": mtp, "compress_ratios": ratios + [0] * mtp, "index_n_heads": IH,
        "index_head_dim": ID, "index_topk": 512, "max_position_embeddings": 65536,
        "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1},
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                                "weight_block_size": [128, 128]},
    }
    return cfg, out


SIZES = {"F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "BF16": 2, "F32": 4, "I64": 8}


def data(rng, name, dtype, shape):
    n = int(np.prod(shape)) * SIZES[dtype]
    if dtype == "F8_E8M0":
        return rng.integers(118, 131, size=n, dtype=np.uint8).tobytes()
    if dtype == "I64":
        return rng.integers(0, 64, size=int(np.prod(shape)), dtype=np.int64).tobytes()
    if dtype in ("F32", "BF16"):
        v = (rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * 0.02)
        return v.tobytes() if dtype == "F32" else (v.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    b = np.frombuffer(rng.bytes(n), dtype=np.uint8).copy()
    if dtype == "F8_E4M3":
        b[(b & 0x7F) == 0x7F] = 0x7E  # no NaN codes
    return b.tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--shards", type=int, default=4)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cfg, ts = tensors(a.layers)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    rng = np.random.default_rng(1)
    per = (len(ts) + a.shards - 1) // a.shards
    weight_map, total = {}, 0
    for s in range(a.shards):
        group = ts[s * per:(s + 1) * per]
        fn = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
        header, off = {}, 0
        for name, dt, shape in group:
            n = int(np.prod(shape)) * SIZES[dt]
            header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fn
        h = json.dumps(header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(a.out, fn), "wb") as f:
            f.write(len(h).to_bytes(8, "little"))
            f.write(h)
            for name, dt, shape in group:
                f.write(data(rng, name, dt, shape))
        total += off
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    print(f"{a.out}: {len(ts)} tensors, {total / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
