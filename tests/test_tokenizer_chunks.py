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


def test_a_run_of_uncached_chunks_is_encoded_in_one_pass_and_split_exactly():
    rng = random.Random(11)
    words = [" " + "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 7))) for _ in range(500)]
    words += [" 12345", ".", " ,", "  ", "\n"]
    tok = tk.SimTokenizer()
    for _ in range(30):
        shared = "".join(rng.choice(words) for _ in range(rng.randint(300, 900)))
        fresh = "".join(rng.choice(words) for _ in range(rng.randint(300, 900)))
        tok.encode(shared)  # its chunks are cached; the next text's tail is one uncached run
        text = shared + fresh
        assert tok.encode(text) == tk._encode_pieces(text)
        chunks = tk._chunks(text)
        cuts = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks) - 1)]
        split = tk.encode_ascii_split(text, tk._FIRST_ID, tk.VOCAB_SIZE - tk._FIRST_ID, cuts)
        assert split is not None
        ids, bounds = split
        assert [tk._encode_pieces(c) for c in chunks] == [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert tk.encode_ascii_split("é x", 3, 100, [1]) is None  # not ASCII: the regex path
