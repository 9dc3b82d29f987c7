"""Held-out perplexity and sample generations of a DeepSeek-V4 HF checkpoint (v4.cpp's default model).

  python tools/train/eval_ppl.py --model /work/default-model/model \
      --text tests/data/default-model/heldout.txt [--device cpu] [--generate]

Protocol (the C++ `v4 perplexity` must do exactly this to reproduce the number):
  1. Read the file as UTF-8 and encode the WHOLE text with the model's tokenizer.json in one call,
     with no special tokens (no BOS; the model was trained on plain text without BOS).
  2. Cut the ids into non-overlapping windows of --window (1024) tokens, starting at id 0; the tail
     shorter than a window is dropped.
  3. Run each window on its own from an empty state (positions 0..1023), fp32 weights and math.
  4. Score the positions 1..1023 of each window: NLL of id[t] given ids[0..t-1] of the same window
     (the first token of each window is not scored). Loss = sum of NLL / number scored, natural log;
     perplexity = exp(loss).
Also printed: the same with the last shorter window kept (>= 2 tokens; `v4 perplexity`'s convention).
The functions heldout_windows / score_windows are the protocol; eval_v4file.py imports them.
--generate also prints greedy and sampled continuations (HF generate, with its KV/compressor cache).

pip requirements: torch, transformers>=5.17, tokenizers
"""
import argparse
import math
import os
import sys
import time

import torch


def heldout_windows(tokenizer, path, window, max_windows=0):
    """Steps 1-2 of the protocol: (text, ids, windows [n, window] int64, tail [1, t] or None).
    tail is the last shorter window (>= 2 tokens), which the protocol drops; it is returned so that
    the other convention (v4 perplexity keeps it) can be reported too. None when max_windows cuts."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    n_windows = len(ids) // window
    if max_windows:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        sys.exit("error: %s has %d tokens, fewer than one window of %d" % (path, len(ids), window))
    windows = torch.tensor(ids[:n_windows * window], dtype=torch.long).view(n_windows, window)
    rest = ids[n_windows * window:]
    tail = None
    if len(rest) >= 2 and n_windows == len(ids) // window:
        tail = torch.tensor(rest, dtype=torch.long).view(1, -1)
    return text, ids, windows, tail


def score_windows(model, windows, device, batch):
    """Steps 3-4: each window alone from an empty state; (sum of NLL in nats, tokens scored)."""
    total_nll, total_scored = 0.0, 0
    with torch.no_grad():
        for first in range(0, len(windows), batch):
            ids = windows[first:first + batch].to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                    ids[:, 1:].reshape(-1), reduction="sum")
            total_nll += nll.item()
            total_scored += ids[:, 1:].numel()
    return total_nll, total_scored


def report(path, text, ids, windows, tail, nll, scored, how):
    n_windows, window = windows.shape
    print("file %s: %d bytes, %d tokens; %d windows x %d, %d tokens scored (%d tokens after the last window not scored)"
          % (path, len(text.encode()), len(ids), n_windows, window, scored, len(ids) - n_windows * window))
    print("held-out loss %.4f nats/token, perplexity %.3f  [%s]" % (nll / scored, math.exp(nll / scored), how))


def report_tail(nll, scored, tail_nll, tail_scored):
    """The other convention: the last shorter window kept (as `v4 perplexity` does)."""
    loss = (nll + tail_nll) / (scored + tail_scored)
    print("with the tail window (%d tokens, %d scored) kept: loss %.4f nats/token, perplexity %.3f "
          "over %d tokens scored" % (tail_scored + 1, tail_scored, loss, math.exp(loss), scored + tail_scored))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder with config.json, *.safetensors, tokenizer.json")
    parser.add_argument("--text", required=True, help="held-out text file (UTF-8)")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-windows", type=int, default=0, help="score only the first N windows (0: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--generate", action="store_true", help="also print sample generations")
    parser.add_argument("--prompt", action="append", default=None, help="generation prompt (repeatable)")
    parser.add_argument("--new-tokens", type=int, default=80)
    args = parser.parse_args()

    from tokenizers import Tokenizer
    from transformers import DeepseekV4ForCausalLM

    for path in (os.path.join(args.model, "config.json"), os.path.join(args.model, "tokenizer.json"), args.text):
        if not os.path.exists(path):
            sys.exit("error: %s not found" % path)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokenizer = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    model = DeepseekV4ForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device).eval()

    text, ids, windows, tail = heldout_windows(tokenizer, args.text, args.window, args.max_windows)
    start = time.time()
    nll, scored = score_windows(model, windows, device, args.batch)
    report(args.text, text, ids, windows, tail, nll, scored, "%s, fp32, %.1f s" % (device, time.time() - start))
    if tail is not None:
        tail_nll, tail_scored = score_windows(model, tail, device, 1)
        report_tail(nll, scored, tail_nll, tail_scored)

    if args.generate:
        prompts = args.prompt or ["It is a truth universally", "In the beginning", "LOVE, n."]
        for prompt in prompts:
            prompt_ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids], device=device)
            with torch.no_grad():
                greedy = model.generate(prompt_ids, max_new_tokens=args.new_tokens, do_sample=False)
            print("\n--- greedy: %r\n%s" % (prompt, tokenizer.decode(greedy[0].tolist())))
            for seed in (1, 2):
                torch.manual_seed(seed)
                with torch.no_grad():
                    sampled = model.generate(prompt_ids, max_new_tokens=args.new_tokens, do_sample=True,
                                             temperature=0.8, top_p=0.95, top_k=0)
                print("--- sampled (T=0.8, top_p=0.95, seed %d): %r\n%s"
                      % (seed, prompt, tokenizer.decode(sampled[0].tolist())))


if __name__ == "__main__":
    main()
