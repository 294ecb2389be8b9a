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
