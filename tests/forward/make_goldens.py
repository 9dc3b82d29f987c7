#!/usr/bin/env python3
"""Golden logits for the V4 forward-pass tests, from Hugging Face transformers.

Two goldens per model: logits.f32 (transformers as is = our `--qat off`) and logits_qat.f32
(transformers plus the official QAT round trips as hooks, see add_official_qat = our default).

Builds tiny random DeepseekV4ForCausalLM models that cover every layer kind (sliding-only, CSA
with indexer, HCA; hash-routed and learned-router MoE; mHC; sink; grouped output projection),
saves each with save_pretrained (safetensors + config.json, transformers' layout and config form)
and the float32 logits of one prefill over a fixed token sequence.

Requirements (pip): torch, transformers>=5.8.1, safetensors, numpy.
Run:  python tests/forward/make_goldens.py            (writes tests/data/forward/)

Deliberate choices, so that transformers is an exact reference for `--qat off`:
  * every parameter is randomised at a scale that keeps activations O(1) (HF's default init is
    near zero, which would make almost any implementation look right);
  * top-k ties (the indexer's score is a sum of ReLUs: often exactly 0 on many rows) go to the
    LOWER index, the official CUDA rule our runtime implements; torch.topk on the CPU breaks ties
    differently, so it is replaced by a stable sort while the goldens are computed;
  * the shared expert's swiglu clamp (HF clamps it; the official code does not) is checked to be
    inactive on these inputs, so both conventions give the same numbers.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from official_numerics import (E2M1, act_quant_hook, add_official_qat, bf16_input_hook,  # noqa: E402
                               dequant_stored, e2m1_round, fp4_roundtrip, official_experts_forward,
                               pow2_scale)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "forward")


def stable_topk(self, k, dim=-1, largest=True, sorted=True):
    vals, idx = torch.sort(self, dim=dim, descending=largest, stable=True)
    return torch.return_types.topk((vals.narrow(dim, 0, k), idx.narrow(dim, 0, k)))


def randomise(model, gen):
    for name, p in model.named_parameters():
        shape = p.shape
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            v = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith(".sinks"):
            v = torch.randn(shape, generator=gen)
        elif "position_bias" in name:
            v = 0.5 * torch.randn(shape, generator=gen)
        elif name.endswith("hc.base") or name.endswith("hc_base"):
            v = 0.5 * torch.randn(shape, generator=gen)
        elif name.endswith("hc.scale") or name.endswith("hc_scale"):
            v = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith("hc.fn") or name.endswith("hc_fn"):
            v = torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        elif name.endswith("experts.gate_up_proj"):
            # routed experts: 4x the usual scale, so that the swiglu clamp (10) actually fires
            v = 4.0 * torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        elif "embed_tokens" in name:
            v = torch.randn(shape, generator=gen)
        elif p.dim() >= 2:
            v = torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        else:
            v = 0.5 * torch.randn(shape, generator=gen)
        with torch.no_grad():
            p.copy_(v.to(p.dtype))
    for name, b in model.named_buffers():
        with torch.no_grad():
            if name.endswith("tid2eid"):
                n_exp = model.config.n_routed_experts
                k = b.shape[-1]
                rows = [torch.randperm(n_exp, generator=gen)[:k] for _ in range(b.shape[0])]
                b.copy_(torch.stack(rows))
            elif name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))


def random_model(cfg_kwargs, seed):
    """A float32 DeepseekV4ForCausalLM with every parameter randomised (seeded), and the generator
    (whose next draws pick the test tokens)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = DeepseekV4Config(**cfg_kwargs)
    model = DeepseekV4ForCausalLM(cfg).to(torch.float32).eval()
    model.config._attn_implementation = "eager"
    randomise(model, gen)
    return cfg, model, gen


def make(name, cfg_kwargs, n_tokens, seed):
    cfg, model, gen = random_model(cfg_kwargs, seed)

    # Check the shared-expert clamp stays inactive (see the module docstring).
    peaks = []
    hooks = [m.gate_proj.register_forward_hook(lambda _m, _i, o: peaks.append(o.abs().max().item()))
             for mod in model.modules() for m in [getattr(mod, "shared_experts", None)] if m is not None]
    hooks += [m.up_proj.register_forward_hook(lambda _m, _i, o: peaks.append(o.abs().max().item()))
              for mod in model.modules() for m in [getattr(mod, "shared_experts", None)] if m is not None]

    # ... and that the routed experts' clamp does fire (else it goes untested).
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as mdv4
    routed_peaks = []
    old_gate = mdv4.DeepseekV4Experts._apply_gate

    def recording_gate(self, gate_up):
        routed_peaks.append(gate_up.abs().max().item())
        return old_gate(self, gate_up)

    # Intermediates for `--dump` comparisons: our names -> transformers modules' outputs.
    inter = {}
    def keep(name):
        return lambda _m, _i, out: inter.__setitem__(name, (out[0] if isinstance(out, tuple) else out)[0].detach())
    hooks.append(model.model.norm.register_forward_hook(keep("final_norm")))
    hooks.append(model.model.layers[2].self_attn.register_forward_hook(keep("L2.attn_out")))
    hooks.append(model.model.layers[3].mlp.register_forward_hook(keep("L3.ffn_out")))

    ids = torch.randint(0, cfg.vocab_size, (1, n_tokens), generator=gen)
    old_topk = torch.Tensor.topk
    torch.Tensor.topk = stable_topk
    mdv4.DeepseekV4Experts._apply_gate = recording_gate
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].float().numpy()
        mdv4.DeepseekV4Experts._apply_gate = old_gate
        inter_plain = dict(inter)  # the QAT run below overwrites inter
        qat_handles = add_official_qat(model, cfg.qk_rope_head_dim if hasattr(cfg, "qk_rope_head_dim")
                                       else cfg_kwargs["qk_rope_head_dim"])
        try:
            with torch.no_grad():
                logits_qat = model(input_ids=ids, use_cache=False).logits[0].float().numpy()
        finally:
            for h in qat_handles:
                h.remove()
    finally:
        torch.Tensor.topk = old_topk
        mdv4.DeepseekV4Experts._apply_gate = old_gate
    for h in hooks:
        h.remove()
    if max(routed_peaks) <= cfg.swiglu_limit:
        sys.exit(f"{name}: routed expert pre-activations peak at {max(routed_peaks):.2f}: the swiglu clamp "
                 f"({cfg.swiglu_limit}) would go untested")
    if peaks and max(peaks) >= cfg.swiglu_limit:
        sys.exit(f"{name}: shared expert pre-activation reaches {max(peaks):.2f} >= swiglu_limit: "
                 "the HF and official conventions would differ; change the seed or scales")

    d = os.path.join(OUT, name)
    model.save_pretrained(d, safe_serialization=True)
    logits.astype("<f4").tofile(os.path.join(d, "logits.f32"))
    for k, v in inter_plain.items():
        v.float().numpy().astype("<f4").tofile(os.path.join(d, f"inter.{k}.f32"))
    logits_qat.astype("<f4").tofile(os.path.join(d, "logits_qat.f32"))
    with open(os.path.join(d, "tokens.txt"), "w") as f:
        f.write(" ".join(str(int(t)) for t in ids[0]) + "\n")
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump({"n_tokens": n_tokens, "vocab_size": cfg.vocab_size, "seed": seed,
                   "logits_rms": float(np.sqrt((logits.astype(np.float64) ** 2).mean())),
                   "shared_expert_peak": max(peaks) if peaks else 0.0,
                   "routed_expert_peak": max(routed_peaks),
                   "generator": "tests/forward/make_goldens.py",
                   "transformers": __import__("transformers").__version__,
                   "torch": torch.__version__}, f, indent=1)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, {n_tokens} tokens, "
          f"logits rms {np.sqrt((logits ** 2).mean()):.3f}, routed expert peak {max(routed_peaks):.1f}, "
          f"shared expert peak {max(peaks):.1f}")


TINY = dict(
    vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=2, head_dim=128,
    qk_rope_head_dim=64, q_lora_rank=32, o_groups=2, o_lora_rank=32, moe_intermediate_size=32,
    n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, num_hash_layers=1,
    compress_ratios=[0, 4, 128, 4], sliding_window=128, index_n_heads=2, index_head_dim=128,
    index_topk=8, hc_mult=4, hc_sinkhorn_iters=20, routed_scaling_factor=1.5, swiglu_limit=10.0,
    rope_theta=10000.0, compress_rope_theta=160000.0, max_position_embeddings=4096,
    rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 256,
                  "beta_fast": 32, "beta_slow": 1},
    num_nextn_predict_layers=0, tie_word_embeddings=False,
)

# ---- native FP8 / MXFP4 checkpoint ------------------------------------------------------------
FP8_NAMES = ("attn.wq_a.weight", "attn.wq_b.weight", "attn.wkv.weight", "attn.wo_a.weight", "attn.wo_b.weight",
             "attn.indexer.wq_b.weight", "ffn.shared_experts.w1.weight", "ffn.shared_experts.w2.weight",
             "ffn.shared_experts.w3.weight")


QUANT_EXPERTS = True


def quant_fp8_blocks(w, block=128):
    """[out, in] -> (e4m3 codes, e8m0 scales [ceil(out/b), ceil(in/b)]), pow2 scale per block."""
    out_, in_ = w.shape
    ro, ri = -(-out_ // block), -(-in_ // block)
    pad = torch.zeros(ro * block, ri * block)
    pad[:out_, :in_] = w
    blocks = pad.view(ro, block, ri, block)
    s = pow2_scale(blocks.abs().amax(dim=(1, 3)), 1e-4, 1.0 / 448.0)  # [ro, ri]
    full = s.repeat_interleave(block, 0).repeat_interleave(block, 1)[:out_, :in_]
    q = torch.clamp(w / full, -448, 448).to(torch.float8_e4m3fn)
    return q, s.to(torch.float8_e8m0fnu), q.float() * full


def quant_mxfp4(w):
    """[out, in] -> (I8 [out, in/2] two e2m1 codes per byte, low nibble first; e8m0 [out, in/32])."""
    out_, in_ = w.shape
    b = w.view(out_, in_ // 32, 32)
    s = pow2_scale(b.abs().amax(-1, keepdim=True), 6 * 2.0 ** -126, 1.0 / 6.0)
    v = e2m1_round(torch.clamp(b / s, -6, 6))
    deq = (v * s).view(out_, in_)
    code = torch.searchsorted(E2M1, v.abs().contiguous()) | ((v < 0) | ((v == 0) & torch.signbit(v))).long() << 3
    code = code.view(out_, in_)
    packed = (code[:, 0::2] | (code[:, 1::2] << 4)).to(torch.uint8).view(torch.int8)
    return packed, s.view(out_, in_ // 32).to(torch.float8_e8m0fnu), deq


def make_native(name, cfg_kwargs, n_tokens, seed):
    """An official-format checkpoint: FP8 e4m3 (128x128 e8m0 scales) attention/shared-expert
    weights, MXFP4 routed experts (I8 + e8m0 per 32), the rest f32, in the names transformers
    saves (official names under "model."). Golden = transformers on the dequantized weights with
    the official numerics as hooks: FP8 activation quantization (block 128) in front of every
    FP8/FP4 GEMM except wo_a (the official convert.py dequantizes wo_a to BF16), the QAT round
    trips, and the official expert order."""
    from safetensors.torch import load_file, save_file
    cfg, model, gen = random_model(cfg_kwargs, seed)
    d = os.path.join(OUT, name)
    model.save_pretrained(d, safe_serialization=True)
    path = os.path.join(d, "model.safetensors")
    sd = load_file(path)
    out = {}
    deq = {}
    for k, v in sd.items():
        short = k.split(".", 3)[-1] if k.startswith("model.layers.") else k
        if any(short.endswith(n) for n in FP8_NAMES):
            q, sc, dq = quant_fp8_blocks(v.float())
            out[k], out[k[: -len(".weight")] + ".scale"], deq[k] = q, sc, dq
        elif ".ffn.experts." in k and k.endswith(".weight") and QUANT_EXPERTS:
            q, sc, dq = quant_mxfp4(v.float())
            out[k], out[k[: -len(".weight")] + ".scale"], deq[k] = q, sc, dq
        else:
            out[k] = v
    save_file(out, path, metadata={"format": "pt"})
    with open(os.path.join(d, "config.json")) as f:
        conf = json.load(f)
    conf["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                   "scale_fmt": "ue8m0", "weight_block_size": [128, 128]}
    conf["expert_dtype"] = "fp4"
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)

    # Load the dequantized weights back (state-dict names of the live model).
    live = model.state_dict()
    with torch.no_grad():
        for k, dq in deq.items():
            parts = k.split(".")
            L = int(parts[2])
            layer = model.model.layers[L]
            rest = ".".join(parts[3:])
            if rest.startswith("ffn.experts."):
                e, w = int(parts[5]), parts[6]
                I = cfg.moe_intermediate_size
                if w == "w1":
                    layer.mlp.experts.gate_up_proj[e, :I] = dq
                elif w == "w3":
                    layer.mlp.experts.gate_up_proj[e, I:] = dq
                else:
                    layer.mlp.experts.down_proj[e] = dq
                continue
            att, sh = layer.self_attn, layer.mlp.shared_experts
            target = {"attn.wq_a.weight": att.q_a_proj, "attn.wq_b.weight": att.q_b_proj,
                      "attn.wkv.weight": att.kv_proj, "attn.wo_a.weight": att.o_a_proj,
                      "attn.wo_b.weight": att.o_b_proj, "ffn.shared_experts.w1.weight": sh.gate_proj,
                      "ffn.shared_experts.w2.weight": sh.down_proj, "ffn.shared_experts.w3.weight": sh.up_proj}
            mod = target.get(rest)
            if mod is None and rest == "attn.indexer.wq_b.weight":
                mod = att.compressor.indexer.q_b_proj
            mod.weight.copy_(dq)
    # Every quantized weight of the live model must now be exactly the stored codes x scales.
    for k, dq in deq.items():
        assert torch.equal(dq, dequant_stored(out[k], out[k[: -len(".weight")] + ".scale"])), k

    # Every quantized weight of the live model must now be exactly the stored codes x scales.
    for k, dq in deq.items():
        assert torch.equal(dq, dequant_stored(out[k], out[k[: -len(".weight")] + ".scale"])), k
    n_q = sum(1 for _ in deq)
    ids = torch.randint(0, cfg.vocab_size, (1, n_tokens), generator=gen)
    old_topk = torch.Tensor.topk
    torch.Tensor.topk = stable_topk
    try:
        with torch.no_grad():
            plain = model(input_ids=ids, use_cache=False).logits[0].float().numpy()
    finally:
        torch.Tensor.topk = old_topk
    plain.astype("<f4").tofile(os.path.join(d, "logits.f32"))

    handles = add_official_qat(model, cfg_kwargs["qk_rope_head_dim"])
    for li, layer in enumerate(model.model.layers):
        att, sh = layer.self_attn, layer.mlp.shared_experts
        mods = {"attn.wq_a.weight": att.q_a_proj, "attn.wq_b.weight": att.q_b_proj, "attn.wkv.weight": att.kv_proj,
                "attn.wo_b.weight": att.o_b_proj, "ffn.shared_experts.w1.weight": sh.gate_proj,
                "ffn.shared_experts.w3.weight": sh.up_proj, "ffn.shared_experts.w2.weight": sh.down_proj}
        if att.compressor is not None and hasattr(att.compressor, "indexer"):
            mods["attn.indexer.wq_b.weight"] = att.compressor.indexer.q_b_proj
        handles += [mm.register_forward_pre_hook(act_quant_hook) for n, mm in mods.items()
                    if f"model.layers.{li}.{n}" in deq]  # only in front of FP8/FP4 weights
        if f"model.layers.{li}.attn.wo_a.weight" in deq:
            # wo_a runs in BF16 in the official code (its input is a bf16 activation, and our
            # FP8 kernels round x to bf16 the same way): no FP8 quantization, a bf16 rounding.
            handles.append(att.o_a_proj.register_forward_pre_hook(bf16_input_hook))
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as mdv4
    old_fwd, old_topk = mdv4.DeepseekV4Experts.forward, torch.Tensor.topk
    if any(".ffn.experts." in k for k in deq):
        mdv4.DeepseekV4Experts.forward = official_experts_forward
    torch.Tensor.topk = stable_topk
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].float().numpy()
    finally:
        mdv4.DeepseekV4Experts.forward, torch.Tensor.topk = old_fwd, old_topk
        for h in handles:
            h.remove()
    logits.astype("<f4").tofile(os.path.join(d, "logits_qat.f32"))
    with open(os.path.join(d, "tokens.txt"), "w") as f:
        f.write(" ".join(str(int(t)) for t in ids[0]) + "\n")
    print(f"{name}: native FP8/MXFP4 checkpoint, {n_tokens} tokens, logits rms {np.sqrt((logits ** 2).mean()):.3f}")


if __name__ == "__main__":
    make("tiny", TINY, n_tokens=300, seed=1)
    # index_topk above the row count: the indexer keeps every row, so the comparison is not at
    # the mercy of selection flips (a 1e-7 difference before an FP4/FP8 rounding can change which
    # rows are picked, and with random weights that moves logits by O(1)); the selection itself
    # is checked by the f32 model above, whose comparison has no FP8 activation roundings.
    make_native("tiny-fp8", dict(TINY, index_topk=64, num_experts_per_tok=4), n_tokens=200, seed=2)
