#!/usr/bin/env python3
# Chat-format goldens: the conversations of chat_cases.py rendered by the OFFICIAL DeepSeek-V4
# encoder (encoding/encoding_dsv4.py, encode_messages) and tokenized with the V4 tokenizer.
# The official encoder is not in this repository: save it somewhere and pass its folder.
#
#   requirements: tokenizers (0.23.3 used), zstandard
#   run: /work/pyenv/bin/python tests/tokenizer/make_chat_goldens.py /tmp/dsv4enc
# Output: tests/data/tokenizer/chat_goldens.json: [{name, conversation, thinking, reasoning_effort,
#         drop_thinking, prompt, ids}]
import copy
import json
import os
import sys

import zstandard
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "tokenizer")


def messages_of(conv):
    # The same convention as model/chat_format.cpp for {"messages", "tools"}: the tools go to the
    # first message if it is system/developer (as the official tests do), else to a new system message.
    if isinstance(conv, list):
        return copy.deepcopy(conv)
    msgs = copy.deepcopy(conv["messages"])
    if conv.get("tools") is not None:
        if not msgs or msgs[0].get("role") not in ("system", "developer"):
            msgs.insert(0, {"role": "system", "content": ""})
        msgs[0]["tools"] = conv["tools"]
    return msgs


def main():
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, HERE)
    import encoding_dsv4
    from chat_cases import CASES
    tj = zstandard.ZstdDecompressor().decompress(open(os.path.join(OUT, "v4_tokenizer.json.zst"), "rb").read())
    tok = Tokenizer.from_str(tj.decode("utf-8"))
    out = []
    for c in CASES:
        prompt = encoding_dsv4.encode_messages(messages_of(c["conversation"]),
                                               thinking_mode="thinking" if c["thinking"] else "chat",
                                               drop_thinking=c["drop_thinking"], reasoning_effort=c["reasoning_effort"])
        ids = tok.encode(prompt, add_special_tokens=False).ids
        out.append(dict(c, prompt=prompt, ids=ids))
    with open(os.path.join(OUT, "chat_goldens.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"{len(out)} cases")


if __name__ == "__main__":
    main()
