#!/usr/bin/env python3
"""Golden token ids for Kiln's byte-level BPE tokenizer, computed by Hugging
Face's `tokenizers` (pip install --no-deps tokenizers) from the tokenizer.json
that scripts/gguf_to_safetensors.py writes for SmolLM2-135M.

    python gen_bpe_golden.py ~/.cache/kiln/smollm2-hf/tokenizer.json > bpe_golden.json
"""
import json
import sys

from tokenizers import Tokenizer

TEXTS = [
    "Once upon a time,",
    "Hello world",
    " Hello world",
    "Hello  world",
    "  leading and trailing   ",
    "tabs\tand\nnewlines\n\n\nend",
    "   \n  \t x",
    "12345 and 3.14159, 2024-11-26",
    "It's we're they've I'm you'll he'd IT'S",
    "naïve café résumé — “quotes” ‘single’",
    "日本語のテキスト。中文文本。한국어",
    "emoji 🙂🚀👍🏽 and ZWJ 👩‍👩‍👧",
    "Здравствуй, мир! Ελληνικά",
    "مرحبا بالعالم",
    "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_end|>b <|endoftext|> c",
    "!!!???...;;; ---",
    "ⅷ ½ ² ٣ 𝟘",
    "\u00a0non-breaking\u2003em space",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "ctrl\u0004bytes\u0006 \u0013dropped\u0001kept",
    "",
    " ",
    "\n",
]

tok = Tokenizer.from_file(sys.argv[1])
cases = []
for t in TEXTS:
    ids = tok.encode(t, add_special_tokens=False).ids
    cases.append({"text": t, "ids": ids})
json.dump({"generator": "tokenizers " + __import__("tokenizers").__version__, "cases": cases}, sys.stdout,
          ensure_ascii=False, indent=1)
print()
