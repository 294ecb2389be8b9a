"""SimTokenizer's chunked encoding of long texts gives exactly the ids of encoding them whole."""

from __future__ import annotations

import random

from llmd_kserve import tokenizer as tk


def test_chunked_encode_equals_whole_encode_on_random_texts():
    rng = random.Random(7)
    alphabet = ["a", "Zq", "1", "123456", " ", "  ", "\n", "\t", ".", ",!", "é", "日本", " x"]
    tok = tk.SimTokenizer()
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4000)))
        chunks = tk._chunks(text)
        assert "".join(chunks) == text
        assert tok.encode(text) == tk._encode_pieces(text)
        assert tok.encode(text) == tok.encode(text)  # second time from the chunk cache


def test_prompts_sharing_a_prefix_share_its_chunks():
    prefix = " ".join(f"w{i}" for i in range(2000))
    a, b = tk._chunks(prefix + " question one?"), tk._chunks(prefix + " another question")
    assert len(a) > 3 and a[:-1] == b[:-1]
