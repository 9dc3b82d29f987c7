"""The official DeepSeek-V4 numerics that Hugging Face transformers omits, as a PyTorch port.

DeepSeek's inference/model.py + kernel.py (research notes §3.8) run, on top of the plain
equations transformers implements:
  * FP8 e4m3 activation quantization (block 128, power-of-two UE8M0 scales) in front of every
    FP8/FP4 GEMM (`act_quant`), except wo_a, which convert.py dequantizes to BF16;
  * the FP8 round trip of the KV's non-RoPE dims (block 64): raw-window KV and compressed rows;
  * Hadamard (Sylvester order, scaled n^-0.5) + FP4 e2m1 round trip (block 32) of the lightning
    indexer's queries and compressed keys (`fp4_act_quant`);
  * the routed-expert order: routing weight applied before w2 (whose input is quantized), the
    shared expert not clamped.
This module implements each piece exactly (frexp for the power-of-two scales, no float log2;
e2m1 rounding to nearest, ties to even) and attaches them to a transformers
DeepseekV4ForCausalLM as hooks (`add_official_qat`, `act_quant_hook` / `bf16_input_hook` in front
of the FP8/FP4 linears, `official_experts_forward`).
v4.cpp's `--qat on` (the default) is compared against it by tests/forward (goldens made by
tests/forward/make_goldens.py).

Requirements (pip): torch, transformers>=5.8.1.
"""
import torch
import torch.nn.functional as F


def pow2_scale(amax, floor, inv_max):
    """2^ceil(log2(f32(max(amax, floor) * f32(1/max)))), exactly (frexp, no float log2)."""
    v = (torch.clamp(amax, min=floor).float() * torch.tensor(inv_max, dtype=torch.float32)).double()
    m, e = torch.frexp(v)
    e = torch.where(m == 0.5, e - 1, e)
    return torch.ldexp(torch.ones_like(v), e).float()


def blocks_of(x, block):
    """x [..., n] -> [..., ceil(n/block), block], zero-padded (zeros do not change a block's amax)."""
    n = x.shape[-1]
    pad = (-n) % block
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], pad)], -1)
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block).float()


def unblock(xb, shape):
    return xb.reshape(*shape[:-1], -1)[..., : shape[-1]]


def fp8_roundtrip(x, block):
    """Official act_quant(x, block, "ue8m0", inplace): e4m3 with power-of-two block scales
    (a last, shorter block is its own block, as our op defines it)."""
    shape = x.shape
    xb = blocks_of(x, block)
    s = pow2_scale(xb.abs().amax(-1, keepdim=True), 1e-4, 1.0 / 448.0)
    q = torch.clamp(xb / s, -448, 448).to(torch.float8_e4m3fn).float()
    return unblock(q * s, shape).to(x.dtype)


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def e2m1_round(v):
    """Round |v| <= 6 to the e2m1 grid, ties to the even code (code = index in E2M1)."""
    a = v.abs()
    idx = torch.searchsorted(E2M1, a.contiguous())          # first grid point >= a
    hi = torch.clamp(idx, max=7)
    lo = torch.clamp(idx - 1, min=0)
    d_lo, d_hi = a - E2M1[lo], E2M1[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    r = torch.where(pick_hi, E2M1[hi], E2M1[lo])
    return torch.copysign(r, v)


def fp4_roundtrip(x, block):
    """Official fp4_act_quant(x, block, inplace): e2m1 with power-of-two block scales."""
    shape = x.shape
    xb = blocks_of(x, block)
    s = pow2_scale(xb.abs().amax(-1, keepdim=True), 6 * 2.0 ** -126, 1.0 / 6.0)
    q = e2m1_round(torch.clamp(xb / s, -6, 6))
    return unblock(q * s, shape).to(x.dtype)


def hadamard(x):
    """Sylvester-ordered Walsh-Hadamard over the last dim, scaled by n^-0.5."""
    n = x.shape[-1]
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (x.float() @ h.T) * n ** -0.5


def act_quant_hook(_module, args):
    """Forward pre-hook for a linear with FP8/FP4 weights: the official FP8 activation
    quantization of its input (block 128, power-of-two scales)."""
    return (fp8_roundtrip(args[0], 128),) + tuple(args[1:])


def bf16_input_hook(_module, args):
    """Forward pre-hook for wo_a, which the official code runs in BF16 (convert.py dequantizes it):
    no FP8 quantization, a bf16 rounding of the input."""
    return (args[0].to(torch.bfloat16).float(),) + tuple(args[1:])


def add_official_qat(model, rope_dims):
    """The official model's QAT round trips, which transformers omits (research §3.8), as hooks:
    * KV (raw window and main compressed rows): FP8 round trip of the non-RoPE dims, block 64.
      Applied to kv_norm's output: RoPE only touches the last rope_dims dims and the round trip
      only the others, so this equals the official order (after RoPE).
    * indexer q and compressed keys: Hadamard then FP4 round trip, block 32, right before scoring."""
    def kv_hook(_m, _i, out):
        n = out.shape[-1] - rope_dims
        return torch.cat([fp8_roundtrip(out[..., :n], 64), out[..., n:]], -1)

    def scorer_pre(_m, args):
        q, k, h = args
        return fp4_roundtrip(hadamard(q), 32), fp4_roundtrip(hadamard(k), 32), h

    handles = []
    for layer in model.model.layers:
        att = layer.self_attn
        handles.append(att.kv_norm.register_forward_hook(kv_hook))
        if att.compressor is not None:
            handles.append(att.compressor.kv_norm.register_forward_hook(kv_hook))
            if hasattr(att.compressor, "indexer"):
                handles.append(att.compressor.indexer.scorer.register_forward_pre_hook(scorer_pre))
    return handles


def dequant_stored(w, s):
    """Stored FP8 (128x128 scales) or packed MXFP4 (I8 + scales per 32) -> f32, from the bytes."""
    s = s.float()
    if w.dtype == torch.float8_e4m3fn:
        full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: w.shape[0], : w.shape[1]]
        return w.float() * full
    b = w.view(torch.uint8).long()
    codes = torch.stack([b & 15, b >> 4], -1).view(w.shape[0], -1)
    vals = E2M1[codes & 7] * torch.where(codes >= 8, -1.0, 1.0)
    return vals * s.repeat_interleave(32, 1)


def official_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """The official expert order: the routing weight multiplies before w2, whose FP4 GEMM
    quantizes its input to FP8 (transformers multiplies after down_proj)."""
    final = torch.zeros_like(hidden_states)
    xq = fp8_roundtrip(hidden_states, 128)
    for e in range(self.num_experts):
        tok, pos = torch.where(top_k_index == e)
        if tok.numel() == 0:
            continue
        gate, up = F.linear(xq[tok], self.gate_up_proj[e]).chunk(2, dim=-1)
        h = self.act_fn(gate.clamp(max=self.limit)) * up.clamp(min=-self.limit, max=self.limit)
        h = h * top_k_weights[tok, pos, None]
        final.index_add_(0, tok, F.linear(fp8_roundtrip(h, 128), self.down_proj[e]))
    return final
