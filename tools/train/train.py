"""Trains v4.cpp's small default DeepSeek-V4 model from scratch (transformers' DeepseekV4ForCausalLM).

  python tools/train/train.py --data DIR --out DIR --minutes 7            (GPU run)
  python tools/train/train.py --data DIR --out DIR --max-steps 2 --batch 2 --device cpu   (smoke test)

DIR (--data) holds tokenizer.json + tokenizer_config.json and either train.tokens.npy /
heldout.tokens.npy (uint16 token streams, written by `--prepare-only`) or train.txt / heldout.txt.
The model config (model_config() below) has every DeepSeek-V4 feature: mHC with 4 streams,
sliding-only layers, CSA (ratio 4, lightning indexer, index_topk < compressed rows at 1024),
HCA (ratio 128), hash-routed and learned-router MoE, a shared expert, attention sinks and the
grouped output projection. Works with transformers 5.17 and 5.24 (only keys both know are used).

Training: fp32 master weights, bf16 autocast, AdamW, linear warmup then cosine decay over the
wall-clock budget (--minutes), random 1024-token windows of the training stream. The learned
routers' e_score_correction_bias is updated after each step (auxiliary-loss-free balancing as
in DeepSeek-V3/V4: bias += rate * sign(mean load - load)), since transformers does not train it.
Every --eval-seconds (and at the end) the held-out loss is measured; when it is the best so far
the model is saved (save_pretrained, safetensors, bf16 except the modules V4 keeps in fp32,
shards <= 15 MB) with the tokenizer files into OUT/model, so a killed run still leaves the best
model of at most --eval-seconds ago. OUT/train_log.jsonl gets one line per log/eval/save event.

pip requirements: torch>=2.4, transformers>=5.17 (DeepseekV4), tokenizers, numpy, safetensors
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch

SEQ_LEN = 1024


def model_config(vocab_size):
    from transformers import DeepseekV4Config
    return DeepseekV4Config(
        vocab_size=vocab_size,
        hidden_size=256,
        num_hidden_layers=6,
        # Legacy per-layer ratios (0 sliding, 4 CSA, 128 HCA), folded into layer_types by both 5.17 and 5.24.
        compress_ratios=[0, 4, 128, 4, 128, 0],
        num_hash_layers=2,  # layers 0-1 hash-routed MoE, 2-5 learned router
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=128,
        qk_rope_head_dim=64,
        q_lora_rank=128,
        o_groups=2,
        o_lora_rank=128,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        moe_intermediate_size=192,  # 256 would give 17.5 M parameters; the budget is <= 17 M
        index_n_heads=4,
        index_head_dim=128,
        index_topk=64,  # CSA has 1024/4 = 256 compressed rows at the training length
        sliding_window=128,
        hc_mult=4,
        hc_sinkhorn_iters=20,
        num_nextn_predict_layers=0,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        compress_rope_theta=160000.0,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        use_cache=True,
    )


# ---------------------------------------------------------------- data
def encode_file(tokenizer, path):
    """Whole file -> token ids. Paragraphs (+ their "\n\n") are encoded separately for speed: V4's
    pre-tokenizer never joins text across a "\n\n" boundary with the next paragraph, so this gives
    the same ids as encoding the file as one string (checked on the held-out file by --prepare-only)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pieces = text.split("\n\n")
    pieces = [p + "\n\n" for p in pieces[:-1]] + [pieces[-1]]
    ids = [i for enc in tokenizer.encode_batch(pieces, add_special_tokens=False) for i in enc.ids]
    return np.asarray(ids, dtype=np.uint16), text


def load_tokens(data_dir, name, tokenizer=None):
    npy = os.path.join(data_dir, name + ".tokens.npy")
    if os.path.exists(npy):
        return np.load(npy)
    txt = os.path.join(data_dir, name + ".txt")
    if not os.path.exists(txt):
        sys.exit("error: neither %s nor %s exists; run tools/train/make_corpus.sh and --prepare-only" % (npy, txt))
    tokens, _ = encode_file(tokenizer, txt)
    return tokens


def prepare(data_dir, tokenizer):
    for name in ("train", "heldout"):
        tokens, text = encode_file(tokenizer, os.path.join(data_dir, name + ".txt"))
        if name == "heldout":
            whole = tokenizer.encode(text, add_special_tokens=False).ids
            if whole != tokens.tolist():
                sys.exit("error: paragraph-wise encoding differs from whole-file encoding of heldout.txt")
        np.save(os.path.join(data_dir, name + ".tokens.npy"), tokens)
        print("%s: %d bytes -> %d tokens (%.2f bytes/token)" % (name, len(text.encode()), len(tokens),
                                                                len(text.encode()) / len(tokens)))


def heldout_windows(tokens):
    """Non-overlapping SEQ_LEN windows of the held-out stream (the tail shorter than a window is dropped)."""
    n = len(tokens) // SEQ_LEN
    return torch.from_numpy(tokens[:n * SEQ_LEN].astype(np.int64)).view(n, SEQ_LEN)


# ---------------------------------------------------------------- model helpers
def init_hash_tables(model, seed):
    """transformers initialises tid2eid to zeros (real values come from a checkpoint), which would
    send every token to expert 0. Give each token top-k distinct experts, deterministic by seed."""
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if hasattr(module, "tid2eid"):
            vocab, top_k = module.tid2eid.shape
            experts = module.num_experts
            table = torch.stack([torch.randperm(experts, generator=gen)[:top_k] for _ in range(vocab)])
            module.tid2eid.copy_(table.to(module.tid2eid.device))


class RouterBalancer:
    """Counts which experts the learned routers pick and nudges e_score_correction_bias."""

    def __init__(self, model, rate):
        self.rate, self.routers, self.counts = rate, [], {}
        for name, module in model.named_modules():
            if hasattr(module, "e_score_correction_bias"):
                self.routers.append((name, module))
                module.register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, inputs, output):
            indices = output[2]
            counts = torch.bincount(indices.reshape(-1), minlength=module.num_experts).float()
            self.counts[name] = self.counts.get(name, 0) + counts
        return hook

    @torch.no_grad()
    def step(self):
        imbalance = []
        for name, module in self.routers:
            counts = self.counts.get(name)
            if counts is None:
                continue
            mean = counts.mean()
            module.e_score_correction_bias += self.rate * torch.sign(mean - counts)
            imbalance.append((counts.max() / mean).item())
        self.counts = {}
        return max(imbalance) if imbalance else 0.0


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer_dir, out_dir):
    """bf16 copy of the weights (modules V4 keeps in fp32 stay fp32), safetensors shards <= 15 MB."""
    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules_strict", []) or [])
    state = {}
    for name, tensor in model.state_dict().items():
        fp32 = any(("." + k + ".") in ("." + name + ".") or name.startswith(k + ".") for k in keep_fp32)
        if tensor.is_floating_point() and not fp32:
            tensor = tensor.to(torch.bfloat16)
        state[name] = tensor.detach().cpu().contiguous()
    staging = out_dir.rstrip("/") + ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, state_dict=state, max_shard_size="15MB", safe_serialization=True)
    config_path = os.path.join(staging, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["dtype"] = "bfloat16"  # what most tensors in the files are (save_pretrained writes the live fp32)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(staging, name))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(staging, out_dir)


@torch.no_grad()
def evaluate(model, windows, device, batch, autocast):
    """Mean next-token loss over the held-out windows (first token of each window not scored)."""
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(windows), batch):
        ids = windows[start:start + batch].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1), reduction="sum")
        total_loss += loss.item()
        total_tokens += ids[:, 1:].numel()
    model.train()
    return total_loss / max(total_tokens, 1)


def lr_at(progress, step, args):
    """Linear warmup over --warmup steps, then cosine from --lr to --lr * --min-lr-ratio by progress
    (tokens seen / --max-tokens, or wall clock / --minutes)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", help="output folder (model/, train_log.jsonl)")
    parser.add_argument("--prepare-only", action="store_true", help="write DATA/{train,heldout}.tokens.npy and stop")
    parser.add_argument("--minutes", type=float, default=7.0, help="wall-clock training budget")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    parser.add_argument("--max-tokens", type=float, default=0,
                        help="training length in tokens: the cosine schedule ends there and training stops "
                             "(0: the schedule follows --minutes of wall clock); --minutes stays a time limit")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--bias-rate", type=float, default=1e-3, help="router bias update per step")
    parser.add_argument("--eval-seconds", type=float, default=45.0, help="wall-clock time between held-out evaluations")
    parser.add_argument("--eval-windows", type=int, default=0, help="evaluate on the first N windows (0: all)")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    import transformers
    from tokenizers import Tokenizer
    from transformers import DeepseekV4ForCausalLM

    tokenizer_path = os.path.join(args.data, "tokenizer.json")
    if not os.path.exists(tokenizer_path):
        sys.exit("error: %s not found; run tools/train/train_tokenizer.py first" % tokenizer_path)
    tokenizer = Tokenizer.from_file(tokenizer_path)
    if args.prepare_only:
        prepare(args.data, tokenizer)
        return
    if not args.out:
        sys.exit("error: --out is required for training")

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    use_autocast = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_tokens = load_tokens(args.data, "train", tokenizer)
    held_windows = heldout_windows(load_tokens(args.data, "heldout", tokenizer))
    if args.eval_windows:
        held_windows = held_windows[:args.eval_windows]

    config = model_config(tokenizer.get_vocab_size())
    model = DeepseekV4ForCausalLM(config)
    init_hash_tables(model, args.seed)
    model.to(device).train()
    n_params = count_parameters(model)
    print("transformers %s, torch %s, device %s" % (transformers.__version__, torch.__version__, device))
    print("layer_types %s" % config.layer_types)
    print("mlp_layer_types %s" % config.mlp_layer_types)
    print("parameters: %d (%.2f M); train tokens %d; held-out windows %d x %d"
          % (n_params, n_params / 1e6, len(train_tokens), len(held_windows), SEQ_LEN))

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    balancer = RouterBalancer(model, args.bias_rate)

    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "train_log.jsonl"), "a")

    def record(event):
        log.write(json.dumps(event) + "\n")
        log.flush()

    record(dict(event="start", params=n_params, config=config.to_dict(), args=vars(args),
                transformers=transformers.__version__, torch=torch.__version__))
    model_dir = os.path.join(args.out, "model")
    rng = np.random.default_rng(args.seed)
    budget = args.minutes * 60.0
    start = last_eval = time.time()
    best = float("inf")

    def evaluate_and_maybe_save(kind):
        nonlocal best
        held = evaluate(model, held_windows, device, args.batch, use_autocast)
        event = dict(event=kind, step=step, time_s=round(time.time() - start, 1), tokens=tokens_seen,
                     heldout_loss=round(held, 4), heldout_ppl=round(math.exp(held), 2), params=n_params)
        print(json.dumps(event), flush=True)
        record(event)
        if held < best:
            best = held
            save_model(model, args.data, model_dir)
            record(dict(event="saved", step=step, heldout_loss=round(held, 4)))

    tokens_seen, step, loss_sum, loss_count, window_start = 0, 0, 0.0, 0, time.time()
    while True:
        elapsed = time.time() - start
        if elapsed >= budget or (args.max_steps and step >= args.max_steps):
            break
        if args.max_tokens and tokens_seen >= args.max_tokens:
            break
        progress = tokens_seen / args.max_tokens if args.max_tokens else elapsed / budget
        lr = lr_at(progress, step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        offsets = rng.integers(0, len(train_tokens) - SEQ_LEN, size=args.batch)
        batch = torch.from_numpy(np.stack([train_tokens[o:o + SEQ_LEN] for o in offsets]).astype(np.int64)).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_autocast):
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        imbalance = balancer.step()
        step += 1
        tokens_seen += batch.numel()
        loss_sum += loss.item()
        loss_count += 1
        if step % args.log_every == 0 or step == 1:
            now = time.time()
            event = dict(event="train", step=step, time_s=round(now - start, 1), tokens=tokens_seen,
                         loss=round(loss_sum / loss_count, 4), lr=lr, grad_norm=round(float(grad_norm), 3),
                         router_max_over_mean=round(imbalance, 3),
                         tokens_per_s=round(loss_count * batch.numel() / (now - window_start)))
            print(json.dumps(event), flush=True)
            record(event)
            loss_sum, loss_count, window_start = 0.0, 0, time.time()
        if time.time() - last_eval >= args.eval_seconds:
            evaluate_and_maybe_save("eval")
            last_eval = window_start = time.time()

    evaluate_and_maybe_save("final")
    print("best held-out loss %.4f (ppl %.2f), model in %s" % (best, math.exp(best), model_dir))


if __name__ == "__main__":
    main()
