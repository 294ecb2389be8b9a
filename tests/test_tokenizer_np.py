"""The vectorised ASCII path of SimTokenizer gives exactly the regex path's ids."""

from __future__ import annotations

import random

import pytest

from llmd_kserve.tokenizer import SimTokenizer, piece_id
from llmd_kserve.tokenizer_np import encode_ascii, np

pytestmark = pytest.mark.skipif(np is None, reason="numpy missing")

EDGE = [
    "", " ", "  ", "a", " a", "a ", "a b", "a  b", "a\n b", " \n", "x" * 20, " " + "y" * 13, "1234567",
    " 12345", "ab12cd", "a 1", "a  12", "!!", " !!!!!!!!", "a.b", "\t\t\t\t\t\t\t x", "       z", " 7 ",
    "\x00\x01 a", "\x1c x", "\x1f\x1fq", "hello, world! 2026-11-30 12:00", "a" * 6 + " " + "b" * 6,
    "<|user|>\nWhat is 12345 + 6789?\n<|assistant|>\n",
]
ALPHABET = "ab Z09 \n\t.,!-_ \x1c\x00\x7f" + " " * 6


def _ref(text: str) -> list[int]:
    return SimTokenizer().encode_regex(text)


@pytest.mark.parametrize("text", EDGE)
def test_edge_cases_match_regex_path(text: str) -> None:
    fast = encode_ascii(text, 3, 32000 - 3)
    assert fast == _ref(text)


def test_random_ascii_matches_regex_path() -> None:
    rng = random.Random(15)
    for _ in range(400):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 120)))
        assert encode_ascii(text, 3, 32000 - 3) == _ref(text), repr(text)


def test_non_ascii_takes_regex_path_and_ids_in_range() -> None:
    tok = SimTokenizer()
    text = "naïve café — ünïcödé wörds 東京"
    assert encode_ascii(text, 3, 32000 - 3) is None
    ids = tok.encode(text)
    assert ids == _ref(text) and all(3 <= i < 32000 for i in ids)
    assert piece_id("東京東京東京") != piece_id("東京東京東")  # > 7 bytes: the digest branch


def test_distinct_pieces_get_distinct_ids_mostly() -> None:
    words = [f" w{i}" for i in range(2000)]
    ids = {piece_id(w) for w in words}
    assert len(ids) > 1900  # 32k-id vocabulary: a few birthday collisions, not a degenerate hash


def test_workspace_reuse_across_sizes_and_threads_gives_the_same_ids() -> None:
    """The vectorised pass reuses per-thread scratch arrays: long then short texts (stale bytes past the end),
    and several threads at once, each get exactly the regex path's ids."""
    import threading

    rng = random.Random(16)
    texts = ["".join(rng.choice(ALPHABET + "abcdefgh" * 4) for _ in range(rng.choice([5, 300, 5000, 40]))) + "x"
             for _ in range(60)]
    want = [_ref(t) for t in texts]
    assert [encode_ascii(t, 3, 32000 - 3) for t in texts] == want
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(len(texts)):
            j = (i * 7 + k) % len(texts)
            if encode_ascii(texts[j], 3, 32000 - 3) != want[j]:
                errors.append(texts[j])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
