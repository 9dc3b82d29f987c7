"""Held-out perplexity of a v4.cpp model file (.v4) computed by PyTorch: the reference that
`v4 perplexity` must match.

  python tools/train/eval_v4file.py --v4 FULL.v4 --checkpoint DIR --text tests/data/default-model/heldout.txt
  python tools/train/eval_v4file.py --v4 FP8.v4  --checkpoint DIR --text ... --official

The file's weights (read by v4file.py, dequantized to float32) are loaded into transformers'
DeepseekV4ForCausalLM built from DIR/config.json (the checkpoint the file was converted from;
its tokenizer.json is used too), and the held-out perplexity is computed with eval_ppl.py's
protocol (its functions are imported). Compare with:
  v4 perplexity -m FULL.v4 -f heldout.txt -c 1024 --qat off       (no --official)
  v4 perplexity -m FP8.v4  -f heldout.txt -c 1024                  (--official; qat on is v4's default)

--official adds the official DeepSeek-V4 numerics that v4.cpp runs with `--qat on`, as the hooks of
tests/reference/official_numerics.py (imported, via tests/forward/make_goldens.py):
  * FP8 e4m3 activation quantization (block 128, power-of-two scales) in front of every matmul
    whose weight is FP8 in the file, except attn.wo_a (official: BF16) and the output head;
    those two see their input rounded to bf16, as v4.cpp's FP8 kernel (avx512_bf16) does;
  * FP8 round trip of the KV's non-RoPE dims (block 64), Hadamard + FP4 round trip of the
    indexer's queries and keys (add_official_qat);
  * routed experts in the official order with FP8 inputs (official_experts_forward), when the
    routed experts are FP8 in the file.
Top-k ties go to the lower index (make_goldens.stable_topk), v4.cpp's rule, in both modes.

pip requirements: torch, transformers>=5.17, tokenizers, numpy
"""
import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "forward"))

from eval_ppl import heldout_windows, report, report_tail, score_windows  # noqa: E402
from v4file import SCALED_TYPES, V4File, V4FileError  # noqa: E402

# Our canonical names (docs/FORMAT.md) -> transformers' parameter/buffer names.
GLOBAL_NAMES = {"embed.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight",
                "norm.weight": "model.norm.weight", "hc_head_fn": "model.hc_head.hc_fn",
                "hc_head_base": "model.hc_head.hc_base", "hc_head_scale": "model.hc_head.hc_scale"}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "hc_attn_fn": "attn_hc.fn", "hc_attn_base": "attn_hc.base", "hc_attn_scale": "attn_hc.scale",
    "hc_ffn_fn": "ffn_hc.fn", "hc_ffn_base": "ffn_hc.base", "hc_ffn_scale": "ffn_hc.scale",
    "attn.attn_sink": "self_attn.sinks",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_norm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv.weight": "self_attn.kv_proj.weight",
    "attn.kv_norm.weight": "self_attn.kv_norm.weight",
    "attn.wo_a.weight": "self_attn.o_a_proj.weight",
    "attn.wo_b.weight": "self_attn.o_b_proj.weight",
    "attn.compressor.ape": "self_attn.compressor.position_bias",
    "attn.compressor.wkv.weight": "self_attn.compressor.kv_proj.weight",
    "attn.compressor.wgate.weight": "self_attn.compressor.gate_proj.weight",
    "attn.compressor.norm.weight": "self_attn.compressor.kv_norm.weight",
    "attn.indexer.wq_b.weight": "self_attn.compressor.indexer.q_b_proj.weight",
    "attn.indexer.weights_proj.weight": "self_attn.compressor.indexer.scorer.weights_proj.weight",
    "attn.indexer.compressor.ape": "self_attn.compressor.indexer.position_bias",
    "attn.indexer.compressor.wkv.weight": "self_attn.compressor.indexer.kv_proj.weight",
    "attn.indexer.compressor.wgate.weight": "self_attn.compressor.indexer.gate_proj.weight",
    "attn.indexer.compressor.norm.weight": "self_attn.compressor.indexer.kv_norm.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
    "ffn.gate.tid2eid": "mlp.gate.tid2eid",
    "ffn.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
    "ffn.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
    # routed experts: stacked [E, I, D] (w1, w3) and [E, D, I] (w2) in our file
    "ffn.experts.w1.weight": "mlp.experts.gate_up_proj",   # first I rows of each expert
    "ffn.experts.w3.weight": "mlp.experts.gate_up_proj",   # last I rows
    "ffn.experts.w2.weight": "mlp.experts.down_proj",
}
# Weights that v4.cpp multiplies without the FP8 activation quantization even when they are FP8.
NO_ACT_QUANT = ("attn.wo_a.weight", "head.weight")


def hf_name(name):
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return "model.layers.%s.%s" % (parts[1], LAYER_NAMES[parts[2]])
    return None


def load_weights(model, f):
    """Copies every tensor of the file into the model; every parameter and routing buffer of the
    model must be written exactly once, with its exact shape. Returns {canonical name: type}."""
    live = dict(model.named_parameters())
    live.update({n: b for n, b in model.named_buffers() if n.endswith(("tid2eid", "e_score_correction_bias"))})
    written, types = set(), {}
    for name, entry in f.tensors.items():
        if entry.type_name == "e8m0":
            continue  # scales: applied by f.array() to the weight that names them
        if name.startswith("mtp."):
            continue  # MTP layers: transformers' DeepseekV4ForCausalLM has none
        target = hf_name(name)
        if target is None or target not in live:
            raise SystemExit("error: %s: tensor '%s' has no place in transformers' DeepseekV4ForCausalLM "
                             "(config mismatch? check --checkpoint)" % (f.path, name))
        try:
            value = torch.from_numpy(f.array(name))
        except V4FileError as e:
            raise SystemExit("error: %s" % e)
        dest = live[target]
        if ".ffn.experts." in name and not name.endswith(".w2.weight"):
            inter = dest.shape[1] // 2
            rows = slice(0, inter) if ".w1." in name else slice(inter, 2 * inter)
            dest_view, key = dest[:, rows], (target, ".w1." in name)
        else:
            dest_view, key = dest, (target, None)
        if tuple(value.shape) != tuple(dest_view.shape):
            raise SystemExit("error: %s: tensor '%s' has shape %s, transformers' %s needs %s (config mismatch?)"
                             % (f.path, name, list(value.shape), target, list(dest_view.shape)))
        with torch.no_grad():
            dest_view.copy_(value.to(dest.dtype))
        written.add(key)
        types[name] = entry.type_name
    missing = [n for n, t in live.items() if (n, None) not in written
               and not ((n, True) in written and (n, False) in written)]
    if missing:
        raise SystemExit("error: %s lacks tensors for %s" % (f.path, ", ".join(missing[:8])))
    return types


def add_official_hooks(model, types, rope_dims):
    """--official (see the module docstring). Returns the hook handles and a restore function."""
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as mdv4
    from make_goldens import act_quant_hook, add_official_qat, bf16_input_hook, official_experts_forward

    handles = add_official_qat(model, rope_dims)
    scaled_experts = set()
    for name, type_name in types.items():
        if type_name not in SCALED_TYPES or name == "embed.weight":
            continue  # the embedding is a row lookup (of the dequantized rows), not a matmul
        if ".ffn.experts." in name:
            scaled_experts.add(name)
            continue
        module = model.get_submodule(hf_name(name).rsplit(".", 1)[0])
        hook = bf16_input_hook if name.endswith(NO_ACT_QUANT) else act_quant_hook
        handles.append(module.register_forward_pre_hook(hook))
    all_experts = [n for n in types if ".ffn.experts." in n]
    old_forward = mdv4.DeepseekV4Experts.forward
    if scaled_experts and len(scaled_experts) != len(all_experts):
        raise SystemExit("error: only some routed experts are FP8/MXFP4; --official supports all or none")
    if scaled_experts:
        mdv4.DeepseekV4Experts.forward = official_experts_forward

    def restore():
        mdv4.DeepseekV4Experts.forward = old_forward
        for h in handles:
            h.remove()
    return restore


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--v4", required=True, help="model file written by `v4 convert`")
    parser.add_argument("--checkpoint", required=True, help="the HF checkpoint folder it was converted from "
                        "(config.json, tokenizer.json)")
    parser.add_argument("--text", required=True, help="held-out text file (UTF-8)")
    parser.add_argument("--official", action="store_true", help="official numerics (v4 perplexity --qat on)")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-windows", type=int, default=0, help="score only the first N windows (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from tokenizers import Tokenizer
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
    from make_goldens import stable_topk

    for path in (args.v4, os.path.join(args.checkpoint, "config.json"),
                 os.path.join(args.checkpoint, "tokenizer.json"), args.text):
        if not os.path.exists(path):
            sys.exit("error: %s not found" % path)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        f = V4File(args.v4)
    except (OSError, V4FileError) as e:
        sys.exit("error: %s" % e)
    arch = f.meta.get("general.architecture")
    if arch != "deepseek_v4":
        sys.exit("error: %s: general.architecture is %r, not 'deepseek_v4'" % (args.v4, arch))
    config = DeepseekV4Config.from_pretrained(args.checkpoint)
    for key, attr in (("deepseek_v4.vocab_size", "vocab_size"), ("deepseek_v4.hidden_size", "hidden_size"),
                      ("deepseek_v4.n_layers", "num_hidden_layers")):
        if f.meta.get(key) != getattr(config, attr):
            sys.exit("error: %s: %s = %s but %s/config.json has %s = %s: not the checkpoint it was converted from"
                     % (args.v4, key, f.meta.get(key), args.checkpoint, attr, getattr(config, attr)))
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(config).to(torch.float32).eval()
    types = load_weights(model, f)
    counts = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    print("%s: %d tensors loaded (%s)" % (args.v4, len(types), ", ".join("%d %s" % (n, t) for t, n in sorted(counts.items()))))

    restore = add_official_hooks(model, types, config.qk_rope_head_dim) if args.official else (lambda: None)
    device = torch.device(args.device)
    model.to(device)
    tokenizer = Tokenizer.from_file(os.path.join(args.checkpoint, "tokenizer.json"))
    text, ids, windows, tail = heldout_windows(tokenizer, args.text, args.window, args.max_windows)
    old_topk = torch.Tensor.topk
    torch.Tensor.topk = stable_topk
    try:
        start = time.time()
        nll, scored = score_windows(model, windows, device, args.batch)
        how = "%s, fp32 %s, %.1f s" % (device, "+ official numerics" if args.official else "(transformers as is)",
                                       time.time() - start)
        report(args.text, text, ids, windows, tail, nll, scored, how)
        if tail is not None:
            tail_nll, tail_scored = score_windows(model, tail, device, 1)
            report_tail(nll, scored, tail_nll, tail_scored)
    finally:
        torch.Tensor.topk = old_topk
        restore()


if __name__ == "__main__":
    main()
