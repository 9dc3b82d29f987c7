#!/usr/bin/env python3
"""Writes the tiny DeepSeek-V4 checkpoints of the convert tests into tests/data/convert/.

  official/   official layout and dtypes: FP8 E4M3 + F8_E8M0 128x128 block scales, MXFP4 routed
              experts as I8 [out, in/2] + F8_E8M0 [out, in/32], BF16, F32, I64 tid2eid; per-expert
              tensors; an MTP layer (+ two mtp.* tensors the converter must drop); sharded into
              two files with model.safetensors.index.json; the official config.json form.
  hf/         DeepseekV4ForCausalLM(DeepseekV4Config(...)).save_pretrained(): transformers'
              config form (layer_types, mlp_layer_types, rope_parameters) and the names it
              writes back (official names under "model.", ...). Ratios 0, 4, 128 and hash layers.
  hf_fused/   the same weights under transformers' module names (save_file(state_dict)): fused
              experts gate_up_proj [E, 2I, D] / down_proj [E, D, I], self_attn.*, mlp.* ...

Each directory also gets expected.json: for every tensor of the v4 file, its logical shape
(innermost first), the FNV-1a 64 hash of the bytes `v4 convert --type native` must write, and the
FNV-1a 64 hash of its values as little-endian f32 (what `--type f32` writes for weights). They are
computed here with numpy/torch from the checkpoint's own arrays, independently of the C++ reader.

Requirements (pip): numpy, torch, safetensors, transformers>=5.8 (all in /work/pyenv).
Run: /work/pyenv/bin/python tests/convert/make_checkpoints.py
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file as save_torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "convert")
FNV_OFFSET, FNV_PRIME, MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a(b: bytes) -> str:
    # Vectorised over 8 interleaved lanes would change the function; keep the plain definition.
    h = FNV_OFFSET
    for x in b:
        h = ((h ^ x) * FNV_PRIME) & MASK
    return "%016x" % h


def e4m3_decode(codes: np.ndarray) -> np.ndarray:
    return torch.from_numpy(codes.view(np.uint8).copy()).view(torch.float8_e4m3fn).float().numpy()


def e8m0_decode(codes: np.ndarray) -> np.ndarray:
    return np.ldexp(np.float32(1.0), codes.astype(np.int32) - 127).astype(np.float32)


E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


class Expect:
    def __init__(self):
        self.t = {}

    def add(self, name, native: np.ndarray, values: np.ndarray, dtype: str):
        """native: the bytes our file holds (numpy array in PyTorch order); values: f32 values."""
        shape = list(values.shape) if values is not None else list(native.shape)
        self.t[name] = {
            "ne": shape[::-1] if shape else [1],
            "type": dtype,
            "native_fnv": fnv1a(np.ascontiguousarray(native).tobytes()),
        }
        if values is not None:
            self.t[name]["f32_fnv"] = fnv1a(np.ascontiguousarray(values, dtype="<f4").tobytes())

    def write(self, d, extra):
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"tensors": self.t, **extra}, f, indent=1, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# (a) official layout
# ---------------------------------------------------------------------------------------------
def official(rng):
    V, D, L, H, HD, QL, OG, OL, E, I, NS, NU = 64, 256, 2, 2, 32, 64, 2, 32, 4, 32, 1, 2
    HC, IH, ID, RATIOS, MTP_RATIOS, NHASH = 2, 2, 32, [4, 128], [0], 1
    cfg = {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
        "vocab_size": V, "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H,
        "num_key_value_heads": 1, "head_dim": HD, "qk_rope_head_dim": 16, "q_lora_rank": QL,
        "o_lora_rank": OL, "o_groups": OG, "moe_intermediate_size": I, "n_routed_experts": E,
        "n_shared_experts": NS, "num_experts_per_tok": NU, "num_hash_layers": NHASH,
        "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus", "norm_topk_prob": True,
        "swiglu_limit": 10.0, "rms_norm_eps": 1e-6, "hc_mult": HC, "hc_sinkhorn_iters": 20,
        "hc_eps": 1e-6, "sliding_window": 8, "num_nextn_predict_layers": 1,
        "compress_ratios": RATIOS + MTP_RATIOS, "rope_theta": 10000, "compress_rope_theta": 160000,
        "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 64,
                         "beta_fast": 32, "beta_slow": 1},
        "max_position_embeddings": 256, "index_n_heads": IH, "index_head_dim": ID, "index_topk": 4,
        "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": False,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
        "expert_dtype": "fp4", "torch_dtype": "bfloat16", "topk_method": "noaux_tc",
    }
    tensors = {}
    ex = Expect()

    def bf16(name, shape):
        v = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        b = torch.from_numpy(v).to(torch.bfloat16)
        tensors[name] = b.view(torch.int16).numpy().view(np.uint16)  # written as BF16 below
        ex.add(name, tensors[name], b.float().numpy(), "bf16")

    def f32(name, shape):
        v = rng.standard_normal(shape).astype(np.float32)
        tensors[name] = v
        ex.add(name, v, v, "f32")

    def fp8_codes(shape):
        c = rng.integers(0, 256, size=shape, dtype=np.uint8)
        c[(c & 0x7F) == 0x7F] = 0x7E  # no NaN codes (q8_0/K-quant bounds need finite values)
        flat = c.reshape(-1)
        flat[:6] = [0x00, 0x80, 0x01, 0x81, 0x7E, 0xFE]  # +-0, +-min subnormal, +-448
        return c

    def scale_codes(shape):
        s = rng.integers(118, 131, size=shape, dtype=np.uint8)
        return s

    def fp8(name, out, inp, tiny_scale=False):
        q = fp8_codes((out, inp))
        s = scale_codes(((out + 127) // 128, (inp + 127) // 128))
        if tiny_scale:
            s.reshape(-1)[-1] = 0  # 2^-127: values become f32 subnormals
        tensors[name] = q
        tensors[name[:-len(".weight")] + ".scale"] = s
        full = np.repeat(np.repeat(e8m0_decode(s), 128, 0), 128, 1)[:out, :inp]
        ex.add(name, q, e4m3_decode(q) * full, "fp8_e4m3")
        ex.add(name[:-len(".weight")] + ".scale", s, None, "e8m0")

    def mxfp4_experts(prefix, w, out, inp):
        qs, ss, vals = [], [], []
        for e in range(E):
            q = rng.integers(0, 256, size=(out, inp // 2), dtype=np.uint8)
            s = scale_codes((out, inp // 32))
            tensors[f"{prefix}ffn.experts.{e}.{w}.weight"] = q.view(np.int8)
            tensors[f"{prefix}ffn.experts.{e}.{w}.scale"] = s
            codes = np.stack([q & 15, q >> 4], axis=-1).reshape(out, inp)  # low nibble first
            vals.append(E2M1[codes] * np.repeat(e8m0_decode(s), 32, 1))
            qs.append(q)
            ss.append(s)
        name = f"{prefix}ffn.experts.{w}.weight"
        ex.add(name, np.stack(qs), np.stack(vals), "mxfp4")
        ex.t[name]["ne"] = [inp, out, E]
        ex.add(f"{prefix}ffn.experts.{w}.scale", np.stack(ss), None, "e8m0")

    def block(p, ratio, hash_layer, mtp):
        if mtp:
            fp8(p + "e_proj.weight", D, D)
            fp8(p + "h_proj.weight", D, D, tiny_scale=True)
            bf16(p + "enorm.weight", (D,))
            bf16(p + "hnorm.weight", (D,))
            bf16(p + "norm.weight", (D,))
            f32(p + "hc_head_fn", (HC, HC * D))
            f32(p + "hc_head_base", (HC,))
            f32(p + "hc_head_scale", (1,))
        bf16(p + "attn_norm.weight", (D,))
        bf16(p + "ffn_norm.weight", (D,))
        for s in ("attn", "ffn"):
            f32(p + f"hc_{s}_fn", ((2 + HC) * HC, HC * D))
            f32(p + f"hc_{s}_base", ((2 + HC) * HC,))
            f32(p + f"hc_{s}_scale", (3,))
        f32(p + "attn.attn_sink", (H,))
        fp8(p + "attn.wq_a.weight", QL, D)
        bf16(p + "attn.q_norm.weight", (QL,))
        fp8(p + "attn.wq_b.weight", H * HD, QL)
        fp8(p + "attn.wkv.weight", HD, D)
        bf16(p + "attn.kv_norm.weight", (HD,))
        fp8(p + "attn.wo_a.weight", OG * OL, H * HD // OG)
        fp8(p + "attn.wo_b.weight", D, OG * OL)
        if ratio:
            c = 2 if ratio == 4 else 1
            f32(p + "attn.compressor.ape", (ratio, c * HD))
            bf16(p + "attn.compressor.wkv.weight", (c * HD, D))
            bf16(p + "attn.compressor.wgate.weight", (c * HD, D))
            bf16(p + "attn.compressor.norm.weight", (HD,))
        if ratio == 4:
            fp8(p + "attn.indexer.wq_b.weight", IH * ID, QL)
            bf16(p + "attn.indexer.weights_proj.weight", (IH, D))
            f32(p + "attn.indexer.compressor.ape", (4, 2 * ID))
            bf16(p + "attn.indexer.compressor.wkv.weight", (2 * ID, D))
            bf16(p + "attn.indexer.compressor.wgate.weight", (2 * ID, D))
            bf16(p + "attn.indexer.compressor.norm.weight", (ID,))
        bf16(p + "ffn.gate.weight", (E, D))
        if hash_layer:
            ids = rng.integers(0, E, size=(V, NU), dtype=np.int64)
            ids[0, :] = [0, E - 1]
            tensors[p + "ffn.gate.tid2eid"] = ids
            ex.add(p + "ffn.gate.tid2eid", ids.astype("<i4"), None, "i32")
        else:
            f32(p + "ffn.gate.bias", (E,))
        mxfp4_experts(p, "w1", I, D)
        mxfp4_experts(p, "w3", I, D)
        mxfp4_experts(p, "w2", D, I)
        fp8(p + "ffn.shared_experts.w1.weight", I * NS, D)
        fp8(p + "ffn.shared_experts.w3.weight", I * NS, D)
        fp8(p + "ffn.shared_experts.w2.weight", D, I * NS)

    bf16("embed.weight", (V, D))
    bf16("head.weight", (V, D))
    bf16("norm.weight", (D,))
    f32("hc_head_fn", (HC, HC * D))
    f32("hc_head_base", (HC,))
    f32("hc_head_scale", (1,))
    for l in range(L):
        block(f"layers.{l}.", RATIOS[l], l < NHASH, False)
    block("mtp.0.", MTP_RATIOS[0], False, True)
    # Shared with the main model in the official checkpoint layout: the converter drops them.
    tensors["mtp.0.emb.tok_emb.weight"] = np.zeros((2, 2), dtype=np.float32)
    tensors["mtp.0.head.weight"] = np.zeros((2, 2), dtype=np.float32)

    d = os.path.join(OUT, "official")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_sharded(d, tensors)
    ex.write(d, {"n_mtp_layers": 1})


def st_dtype_of(name, a):
    if a.dtype == np.uint16:
        return "BF16"
    if a.dtype == np.uint8:
        return "F8_E8M0" if name.endswith(".scale") else "F8_E4M3"
    return {np.dtype(np.int8): "I8", np.dtype(np.int64): "I64", np.dtype(np.float32): "F32"}[a.dtype]


def write_st(path, tensors):
    """A safetensors file with exact dtype tags (numpy has no bf16/fp8; written by hand)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.tobytes()
        header[name] = {"dtype": st_dtype_of(name, a), "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_sharded(d, tensors):
    names = sorted(tensors)
    half = [n for n in names if n.startswith("layers.1.") or n.startswith("mtp.")]
    rest = [n for n in names if n not in half]
    weight_map = {}
    for i, group in enumerate((rest, half)):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        write_st(os.path.join(d, fn), {n: tensors[n] for n in group})
        weight_map.update({n: fn for n in group})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map},
                  f, indent=1, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# (b) transformers layout, (c) transformers module names with fused experts
# ---------------------------------------------------------------------------------------------
def transformers_model():
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
    torch.manual_seed(0)
    cfg = DeepseekV4Config(
        vocab_size=64, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        head_dim=32, q_lora_rank=64, o_groups=2, o_lora_rank=128, n_routed_experts=2, num_experts_per_tok=1,
        n_shared_experts=1, index_n_heads=2, index_head_dim=32, index_topk=4, sliding_window=8, hc_mult=2,
        compress_ratios=[0, 4, 128], num_hash_layers=1, qk_rope_head_dim=16, max_position_embeddings=256,
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                         "beta_fast": 32, "beta_slow": 1})
    m = DeepseekV4ForCausalLM(cfg)
    with torch.no_grad():  # random values everywhere (some parameters start as ones or zeros)
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for l in m.model.layers:
            if hasattr(l.mlp.gate, "tid2eid"):
                l.mlp.gate.tid2eid.copy_(torch.randint(0, 2, l.mlp.gate.tid2eid.shape))
    return cfg, m.to(torch.bfloat16)


def hf_expect(cfg, m):
    """Expected v4 tensors from the module's own state dict (transformers names), mapped by hand."""
    sd = {k: v for k, v in m.state_dict().items()}
    ex = Expect()
    I = cfg.moe_intermediate_size

    def put(name, t):
        if t.dtype == torch.int64:
            ex.add(name, t.numpy().astype("<i4"), None, "i32")
            return
        ty = {torch.bfloat16: "bf16", torch.float32: "f32"}[t.dtype]
        native = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        ex.add(name, native, t.float().numpy(), ty)

    put("embed.weight", sd["model.embed_tokens.weight"])
    put("head.weight", sd["lm_head.weight"])
    put("norm.weight", sd["model.norm.weight"])
    put("hc_head_fn", sd["model.hc_head.hc_fn"])
    put("hc_head_base", sd["model.hc_head.hc_base"])
    put("hc_head_scale", sd["model.hc_head.hc_scale"])
    ren = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "attn_hc.fn": "hc_attn_fn", "attn_hc.base": "hc_attn_base", "attn_hc.scale": "hc_attn_scale",
        "ffn_hc.fn": "hc_ffn_fn", "ffn_hc.base": "hc_ffn_base", "ffn_hc.scale": "hc_ffn_scale",
        "self_attn.sinks": "attn.attn_sink", "self_attn.q_a_proj.weight": "attn.wq_a.weight",
        "self_attn.q_a_norm.weight": "attn.q_norm.weight", "self_attn.q_b_proj.weight": "attn.wq_b.weight",
        "self_attn.kv_proj.weight": "attn.wkv.weight", "self_attn.kv_norm.weight": "attn.kv_norm.weight",
        "self_attn.o_a_proj.weight": "attn.wo_a.weight", "self_attn.o_b_proj.weight": "attn.wo_b.weight",
        "self_attn.compressor.position_bias": "attn.compressor.ape",
        "self_attn.compressor.kv_proj.weight": "attn.compressor.wkv.weight",
        "self_attn.compressor.gate_proj.weight": "attn.compressor.wgate.weight",
        "self_attn.compressor.kv_norm.weight": "attn.compressor.norm.weight",
        "self_attn.compressor.indexer.q_b_proj.weight": "attn.indexer.wq_b.weight",
        "self_attn.compressor.indexer.scorer.weights_proj.weight": "attn.indexer.weights_proj.weight",
        "self_attn.compressor.indexer.position_bias": "attn.indexer.compressor.ape",
        "self_attn.compressor.indexer.kv_proj.weight": "attn.indexer.compressor.wkv.weight",
        "self_attn.compressor.indexer.gate_proj.weight": "attn.indexer.compressor.wgate.weight",
        "self_attn.compressor.indexer.kv_norm.weight": "attn.indexer.compressor.norm.weight",
        "mlp.gate.weight": "ffn.gate.weight", "mlp.gate.e_score_correction_bias": "ffn.gate.bias",
        "mlp.gate.tid2eid": "ffn.gate.tid2eid", "mlp.shared_experts.gate_proj.weight": "ffn.shared_experts.w1.weight",
        "mlp.shared_experts.up_proj.weight": "ffn.shared_experts.w3.weight",
        "mlp.shared_experts.down_proj.weight": "ffn.shared_experts.w2.weight",
    }
    for k, v in sd.items():
        if not k.startswith("model.layers."):
            continue
        l, rest = k[len("model.layers."):].split(".", 1)
        p = f"layers.{l}."
        if rest == "mlp.experts.gate_up_proj":
            put(p + "ffn.experts.w1.weight", v[:, :I, :].contiguous())
            put(p + "ffn.experts.w3.weight", v[:, I:, :].contiguous())
        elif rest == "mlp.experts.down_proj":
            put(p + "ffn.experts.w2.weight", v.contiguous())
        else:
            put(p + ren[rest], v)
    return ex


def hf(rng):
    cfg, m = transformers_model()
    ex = hf_expect(cfg, m)
    d = os.path.join(OUT, "hf")
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d)
    os.remove(os.path.join(d, "generation_config.json")) if os.path.exists(os.path.join(d, "generation_config.json")) else None
    ex.write(d, {"n_mtp_layers": 0})

    d2 = os.path.join(OUT, "hf_fused")
    shutil.rmtree(d2, ignore_errors=True)
    os.makedirs(d2)
    shutil.copy(os.path.join(d, "config.json"), os.path.join(d2, "config.json"))
    save_torch({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(d2, "model.safetensors"))
    ex.write(d2, {"n_mtp_layers": 0})


def main():
    rng = np.random.default_rng(20260428)
    official(rng)
    hf(rng)
    for sub in ("official", "hf", "hf_fused"):
        d = os.path.join(OUT, sub)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{sub}: {size / 1024:.0f} KiB in {len(os.listdir(d))} files", file=sys.stderr)


if __name__ == "__main__":
    main()
