"""The greedy transcript of the shipped model that tests/forward/test_default_model.cpp checks
v4.cpp against, computed by the PyTorch reference of the same file.

  python tools/train/make_transcript.py --v4 model/default/v4-tiny.v4 --checkpoint /work/default-model/best \
      --out tests/data/default-model/transcript.json

The file's weights go into transformers' DeepseekV4ForCausalLM with the official numerics hooked in
(eval_v4file.py: load_weights, add_official_hooks), the default numerics of `v4 run`. Greedy
decoding recomputes the whole sequence at every step (no cache): the reference for v4.cpp's
prefill-then-decode. Ties in the argmax go to the lower id (torch.argmax; v4.cpp's sampler too).

pip requirements: torch, transformers>=5.17, tokenizers, numpy
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "forward"))

from eval_v4file import add_official_hooks, load_weights  # noqa: E402
from v4file import V4File  # noqa: E402

PROMPT = "It is a truth universally acknowledged, that"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--v4", required=True)
    ap.add_argument("--checkpoint", required=True, help="the HF checkpoint the file was converted from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("-n", type=int, default=32)
    args = ap.parse_args()

    from tokenizers import Tokenizer
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
    from make_goldens import stable_topk

    config = DeepseekV4Config.from_pretrained(args.checkpoint)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(config).to(torch.float32).eval()
    f = V4File(args.v4)
    types = load_weights(model, f)
    restore = add_official_hooks(model, types, config.qk_rope_head_dim)
    tok = Tokenizer.from_file(os.path.join(args.checkpoint, "tokenizer.json"))
    prompt_ids = [config.bos_token_id] + tok.encode(args.prompt, add_special_tokens=False).ids
    ids = list(prompt_ids)
    old_topk = torch.Tensor.topk
    torch.Tensor.topk = stable_topk
    try:
        with torch.no_grad():
            for _ in range(args.n):
                logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
                nxt = int(torch.argmax(logits))
                ids.append(nxt)
                if nxt == config.eos_token_id:
                    break
            # The margin (top-1 minus top-2 logit) at each generated position, from one pass over
            # the final sequence: where it is tiny, a correct implementation may pick the other token.
            lg = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        margins = []
        for i in range(len(prompt_ids) - 1, len(ids) - 1):
            top2 = torch.sort(lg[i], descending=True).values[:2]
            margins.append(round(float(top2[0] - top2[1]), 5))
    finally:
        torch.Tensor.topk = old_topk
        restore()
    gen = ids[len(prompt_ids):]
    out = {"prompt": args.prompt, "prompt_ids": prompt_ids, "generated_ids": gen, "margins": margins,
           "generated_text": tok.decode(gen, skip_special_tokens=False),
           "model": os.path.basename(args.v4), "numerics": "official (qat on), f32 activations, f32 cache",
           "generator": "tools/train/make_transcript.py"}
    with open(args.out, "w") as fp:
        json.dump(out, fp, indent=1, ensure_ascii=False)
    print(args.prompt + out["generated_text"])


if __name__ == "__main__":
    main()
