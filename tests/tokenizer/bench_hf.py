#!/usr/bin/env python3
# Hugging Face `tokenizers` encode throughput on one thread, to compare with `v4 bench tokenizer`.
#   requirements: tokenizers (0.23.3 used)
#   run: TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 python tests/tokenizer/bench_hf.py tokenizer.json TEXT
# Reports MB/s for: the whole file in one encode() call; one encode() per line; encode_batch over
# lines (still one thread with the variables above).
import os
import sys
import time

from tokenizers import Tokenizer


def best(f, reps=3):
    t = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    text = open(sys.argv[2], encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    lines = text.split("\n")
    print(f"{sys.argv[2]}: {mb:.2f} MB, TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}")
    t = best(lambda: tok.encode(text, add_special_tokens=False))
    print(f"HF one encode() of the whole text: {mb / t:.1f} MB/s")
    t = best(lambda: [tok.encode(l, add_special_tokens=False) for l in lines])
    print(f"HF one encode() per line ({len(lines)} lines): {mb / t:.1f} MB/s")
    t = best(lambda: tok.encode_batch(lines, add_special_tokens=False))
    print(f"HF encode_batch(lines): {mb / t:.1f} MB/s")


if __name__ == "__main__":
    main()
