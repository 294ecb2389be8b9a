"""Vectorised (numpy) ``SimTokenizer`` path for ASCII text: the regex path's pieces and ids, several times faster.

The regex path (``tokenizer._PIECE`` + six-character chunks) costs ~1.7 ms for 8k tokens, most of it creating one
Python string per piece. Here the same segmentation is computed on the byte array: character classes, the space
that attaches to the following word, runs, chunks of six characters (three digits), then each chunk (at most six
bytes) is packed into one 64-bit word with its length, mixed with splitmix64 and reduced by multiply-shift — the same id function
``tokenizer.piece_id`` applies to a piece of at most seven UTF-8 bytes, so both paths agree exactly
(``tests/test_tokenizer_np.py`` checks them against each other on random and adversarial text).
"""

from __future__ import annotations

try:
    import numpy as np
except ImportError:  # numpy is a core dependency; without it the regex path is used
    np = None  # type: ignore[assignment]

MIX_C0, MIX_C1, MIX_C2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1
_L, _D, _P, _W = 1, 2, 3, 4


def mix64(x: int) -> int:
    """splitmix64's finaliser on a 64-bit int (the scalar twin of the numpy version below)."""
    z = (x + MIX_C0) & _MASK
    z = ((z ^ (z >> 30)) * MIX_C1) & _MASK
    z = ((z ^ (z >> 27)) * MIX_C2) & _MASK
    return z ^ (z >> 31)


def reduce_id(mixed: int, first_id: int, n_ids: int) -> int:
    """A mixed word onto ``first_id .. first_id + n_ids - 1`` by multiply-shift of its high half (no division)."""
    return first_id + (((mixed >> 32) * n_ids) >> 32)


def pack(piece_utf8: bytes) -> int:
    """A piece of at most seven bytes as one 64-bit word: little-endian bytes, length in the top byte."""
    return int.from_bytes(piece_utf8, "little") | (len(piece_utf8) << 56)


if np is not None:
    _CLASS = np.full(128, _P, dtype=np.int8)
    _CLASS[ord("A") : ord("Z") + 1] = _L
    _CLASS[ord("a") : ord("z") + 1] = _L
    _CLASS[ord("0") : ord("9") + 1] = _D
    for _c in " \t\n\v\f\r\x1c\x1d\x1e\x1f":  # what Python's str regex \s matches below 128
        _CLASS[ord(_c)] = _W
    _U = np.uint64
    _LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)], dtype=np.uint64)


def encode_ascii(text: str, first_id: int, n_ids: int) -> list[int] | None:
    """Token ids of ASCII ``text`` (None when numpy is missing or the text is not ASCII: use the regex path)."""
    if np is None or not text.isascii():
        return None
    if not text:
        return []
    ids, _ = _ids_and_starts(text, first_id, n_ids)
    return ids.tolist()  # type: ignore[no-any-return]


def encode_ascii_split(text: str, first_id: int, n_ids: int, cuts: list[int]) -> tuple[list[int], list[int]] | None:
    """Token ids of ASCII ``text`` in one vectorised pass, and where the character offsets ``cuts`` (ascending,
    each at a token boundary) fall in them: ``(ids, bounds)`` with ``ids[bounds[k]:bounds[k + 1]]`` the ids of the
    ``k``-th piece (``bounds`` starts with 0 and ends with ``len(ids)``). None like :func:`encode_ascii`."""
    if np is None or not text.isascii():
        return None
    if not text:
        return [], [0] * (len(cuts) + 2)
    ids, starts = _ids_and_starts(text, first_id, n_ids)
    at: list[int] = np.searchsorted(starts, np.asarray(cuts, dtype=np.int64)).tolist()
    return ids.tolist(), [0, *at, len(ids)]


def _ids_and_starts(text: str, first_id: int, n_ids: int):  # noqa: ANN202 - (ids int64 array, starts int64 array)
    """The vectorised encoder: ids and each token's first character offset, for non-empty ASCII ``text``."""
    n = len(text)
    raw = text.encode("ascii")
    codes = np.frombuffer(raw, dtype=np.uint8)
    cls = _CLASS.take(codes)
    # a single space before a letter/digit/punctuation run joins that run (` ?[A-Za-z]+` etc.); a space inside a
    # longer whitespace run stays whitespace (`\s+` is greedy), i.e. a space attaches only after a non-space
    is_w = cls == _W
    att = np.zeros(n + 1, dtype=bool)
    att[: n - 1] = codes[:-1] == 32
    att[: n - 1] &= ~is_w[1:]
    att[1 : n - 1] &= ~is_w[:-2]
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(cls[1:], cls[:-1], out=start[1:])
    start[1:] &= ~att[: n - 1]
    start |= att[:n]
    # runs -> chunks: six characters (letters, punctuation, whitespace), three digits after an optional space
    run_at = np.flatnonzero(start)
    off = att.take(run_at)
    digit = cls.take(run_at + off) == _D
    run_len = np.empty(len(run_at), dtype=np.int64)
    np.subtract(run_at[1:], run_at[:-1], out=run_len[:-1])
    run_len[-1] = n - run_at[-1]
    long_run = np.flatnonzero(np.where(digit, run_len - off > 3, run_len > 6))
    if len(long_run) == 0:  # every run is one token (the common case)
        starts = run_at
    else:
        step = np.where(digit, 3, 6)
        n_tok = np.ones(len(run_at), dtype=np.int64)
        n_tok[long_run] = (run_len[long_run] - digit[long_run] * off[long_run] + step[long_run] - 1) // step[long_run]
        first_tok = np.cumsum(n_tok) - n_tok
        j = np.arange(int(n_tok.sum())) - np.repeat(first_tok, n_tok)
        starts = np.repeat(run_at, n_tok) + j * np.repeat(step, n_tok) + (j > 0) * np.repeat(off & digit, n_tok)
    lengths = np.empty(len(starts), dtype=np.uint64)
    np.subtract(starts[1:], starts[:-1], out=lengths[:-1], casting="unsafe")
    lengths[-1] = n - starts[-1]
    # each token's bytes packed little-endian into one word, one byte position at a time (a token is at most
    # seven bytes); gathering 8 bytes at once through a stride-1 uint64 view of the text is unaligned and made
    # numpy copy the whole view first (~0.3 ms for 8k tokens)
    padded = np.zeros(n + 8, dtype=np.uint8)
    padded[:n] = codes
    z = padded.take(starts).astype(np.uint64)
    for k in range(1, int(lengths.max())):
        z |= padded.take(starts + k).astype(np.uint64) << _U(8 * k)
    z &= _LOW_BYTES.take(lengths.view(np.int64))
    z |= lengths << _U(56)
    with np.errstate(over="ignore"):  # splitmix64, in place (no temporaries but the shifts)
        z += _U(MIX_C0)
        z ^= z >> _U(30)
        z *= _U(MIX_C1)
        z ^= z >> _U(27)
        z *= _U(MIX_C2)
        z ^= z >> _U(31)
        z >>= _U(32)
        z *= _U(n_ids)
        z >>= _U(32)
        z += _U(first_id)
    return z.view(np.int64), starts
