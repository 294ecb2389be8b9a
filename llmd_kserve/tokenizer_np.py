"""Vectorised (numpy) ``SimTokenizer`` path for ASCII text: the regex path's pieces and ids, several times faster.

The regex path (``tokenizer._PIECE`` + six-character chunks) costs ~1.7 ms for 8k tokens, most of it creating one
Python string per piece. Here the same segmentation is computed on the byte array: character classes, the space
that attaches to the following word, runs, chunks of six characters (three digits), then each chunk (at most six
bytes) is packed into one 64-bit word with its length, mixed with splitmix64 and reduced by multiply-shift — the same id function
``tokenizer.piece_id`` applies to a piece of at most seven UTF-8 bytes, so both paths agree exactly
(``tests/test_tokenizer_np.py`` checks them against each other on random and adversarial text).
"""

from __future__ import annotations

import sys
import threading

try:
    import numpy as np
except ImportError:  # numpy is a core dependency; without it the regex path is used
    np = None  # type: ignore[assignment]

MIX_C0, MIX_C1, MIX_C2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1
_L, _D, _P, _W = 1, 2, 3, 4
_LITTLE = sys.byteorder == "little"
"""Tokens are cut out of the text's bytes read as little-endian 64-bit words (elsewhere: the regex path)."""


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
    _CLASS_BYTES = bytes(_CLASS.tolist()) + bytes(128)  # for bytes.translate (the text is ASCII)
    _MAX = np.maximum.reduce  # the ufunc itself: ndarray.max goes through a Python-level wrapper
    _U = np.uint64
    _LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)], dtype=np.uint64)


def encode_ascii(text: str, first_id: int, n_ids: int) -> list[int] | None:
    """Token ids of ASCII ``text`` (None when numpy is missing or the text is not ASCII: use the regex path)."""
    if np is None or not _LITTLE or not text.isascii():
        return None
    if not text:
        return []
    ids, _ = _ids_and_starts(text, first_id, n_ids)
    return ids.tolist()  # type: ignore[no-any-return]


def encode_ascii_split(text: str, first_id: int, n_ids: int, cuts: list[int]) -> tuple[list[int], list[int]] | None:
    """Token ids of ASCII ``text`` in one vectorised pass, and where the character offsets ``cuts`` (ascending,
    each at a token boundary) fall in them: ``(ids, bounds)`` with ``ids[bounds[k]:bounds[k + 1]]`` the ids of the
    ``k``-th piece (``bounds`` starts with 0 and ends with ``len(ids)``). None like :func:`encode_ascii`."""
    if np is None or not _LITTLE or not text.isascii():
        return None
    if not text:
        return [], [0] * (len(cuts) + 2)
    ids, starts = _ids_and_starts(text, first_id, n_ids)
    at: list[int] = np.searchsorted(starts, np.asarray(cuts, dtype=np.int64)).tolist()
    return ids.tolist(), [0, *at, len(ids)]


class _Workspace(threading.local):
    """Per-thread scratch arrays, reused across calls: a fresh 8k-token prompt otherwise allocates ~1 MB of numpy
    temporaries per call, which glibc may return to the kernel when they are freed (heap trimming): in such heap
    states every call page-faulted the same memory back in (measured: ~100 faults, 0.47 ms instead of 0.23 ms)."""

    def __init__(self) -> None:
        self.cap = 0

    def arrays(self, n: int) -> _Workspace:
        if n > self.cap:
            cap = max(n, 2 * self.cap, 4096)
            self.pad = np.zeros(cap + 16, dtype=np.uint8)
            self.b1, self.b2, self.b3 = (np.empty(cap + 1, dtype=bool) for _ in range(3))
            self.i1, self.i2 = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
            self.u1, self.u2, self.u3, self.u4 = (np.empty(cap, dtype=np.uint64) for _ in range(4))
            self.cap = cap
        return self


_WS = _Workspace()
_WS_MAX = 1 << 20
"""Texts longer than this (characters) use fresh arrays rather than grow a thread's workspace to their size."""


def _ids_and_starts(text: str, first_id: int, n_ids: int):  # noqa: ANN202 - (ids int64 array, starts int64 array)
    """The vectorised encoder: ids and each token's first character offset, for non-empty ASCII ``text``. The
    arrays returned may be views of this thread's workspace: read them before the next call on this thread."""
    n = len(text)
    raw = text.encode("ascii")
    codes = np.frombuffer(raw, dtype=np.uint8)
    cls_bytes = raw.translate(_CLASS_BYTES)
    cls = np.frombuffer(cls_bytes, dtype=np.int8)
    ws = _WS.arrays(n) if n <= _WS_MAX else _Workspace().arrays(n)
    is_w, att, start = ws.b1[:n], ws.b2[: n + 1], ws.b3[:n]
    # a single space before a letter/digit/punctuation run joins that run (` ?[A-Za-z]+` etc.); a space inside a
    # longer whitespace run stays whitespace (`\s+` is greedy), i.e. a space attaches only after a non-space
    np.equal(cls, _W, out=is_w)
    att[n - 1 :] = False
    np.equal(codes[:-1], 32, out=att[: n - 1])
    np.greater(att[: n - 1], is_w[1:], out=att[: n - 1])  # bool a > b is a & ~b
    np.greater(att[1 : n - 1], is_w[: n - 2], out=att[1 : n - 1])
    start[0] = True
    np.not_equal(cls[1:], cls[:-1], out=start[1:])
    np.greater(start[1:], att[: n - 1], out=start[1:])
    np.logical_or(start, att[:n], out=start)
    # runs -> chunks: six characters (letters, punctuation, whitespace), three digits after an optional space
    run_at = start.nonzero()[0]  # (np.compress into the workspace is twice as slow)
    n_runs = len(run_at)
    run_len = ws.i1[:n_runs]
    np.subtract(run_at[1:], run_at[:-1], out=run_len[:-1])
    run_len[-1] = n - run_at[-1]
    # a run is longer than one token if it has over six characters, or (digits) four digits in a row
    if _MAX(run_len) > 6 or _four_digits(cls, ws.b1[:n], ws.b3[:n]):  # (is_w and start are done with)
        starts = _split_long_runs(n, cls, att, run_at, run_len.copy())
    else:  # every run is one token (the common case for short words)
        starts = run_at
    n_tok = len(starts)
    lengths = ws.u1[:n_tok]
    np.subtract(starts[1:], starts[:-1], out=lengths[:-1], casting="unsafe")
    lengths[-1] = n - starts[-1]
    # each token's bytes packed little-endian into one word (a token is at most seven bytes); gathering 8 bytes at
    # once through a stride-1 uint64 view of the text is unaligned and made numpy copy the whole view first (~0.3 ms
    # for 8k tokens), one gather per byte position cost ~65 us: instead each token is cut out of the two aligned
    # 64-bit words its bytes fall in (the text zero-padded to whole words; a little-endian machine, see below)
    padded, z, t, q, shift = ws.pad[: n + 16], ws.u2[:n_tok], ws.u3[:n_tok], ws.i2[:n_tok], ws.u4[:n_tok]
    padded[:n] = codes
    padded[n:] = 0
    words = padded[: (n + 16) & ~7].view(np.uint64)
    np.right_shift(starts, 3, out=q)
    np.bitwise_and(starts, 7, out=shift, casting="unsafe")
    shift <<= _U(3)  # the token's bit offset in its first word
    words.take(q, out=z)
    z >>= shift
    q += 1
    words.take(q, out=t)
    t <<= _U(1)  # two shifts: a shift by 64 (offset 0) is not defined
    np.subtract(_U(63), shift, out=shift)
    t <<= shift
    z |= t
    _LOW_BYTES.take(lengths.view(np.int64), out=t)
    z &= t
    np.left_shift(lengths, _U(56), out=t)
    z |= t
    with np.errstate(over="ignore"):  # splitmix64, in place
        z += _U(MIX_C0)
        np.right_shift(z, _U(30), out=t)
        z ^= t
        z *= _U(MIX_C1)
        np.right_shift(z, _U(27), out=t)
        z ^= t
        z *= _U(MIX_C2)
        np.right_shift(z, _U(31), out=t)
        z ^= t
        z >>= _U(32)
        z *= _U(n_ids)
        z >>= _U(32)
        z += _U(first_id)
    return z.view(np.int64), starts


def _four_digits(cls, d, dd) -> bool:  # noqa: ANN001 - numpy arrays (cls and two scratch bool arrays)
    """Whether the text has four digits in a row (a digit run longer than one token)."""
    np.equal(cls, _D, out=d)
    if np.count_nonzero(d) < 4:
        return False
    n = len(d)
    np.logical_and(d[:-1], d[1:], out=dd[: n - 1])  # two in a row
    np.logical_and(dd[: n - 3], dd[2 : n - 1], out=d[: n - 3])  # four in a row
    return bool(np.count_nonzero(d[: n - 3]))


def _split_long_runs(n: int, cls, att, run_at, run_len):  # noqa: ANN001, ANN202 - numpy arrays
    """Token starts when some runs are longer than one token: six characters, three digits after a space."""
    off = att.take(run_at)
    digit = cls.take(run_at + off) == _D
    long_run = np.flatnonzero(np.where(digit, run_len - off > 3, run_len > 6))
    step = np.where(digit, 3, 6)
    n_tok = np.ones(len(run_at), dtype=np.int64)
    n_tok[long_run] = (run_len[long_run] - digit[long_run] * off[long_run] + step[long_run] - 1) // step[long_run]
    first_tok = np.cumsum(n_tok) - n_tok
    j = np.arange(int(n_tok.sum())) - np.repeat(first_tok, n_tok)
    return np.repeat(run_at, n_tok) + j * np.repeat(step, n_tok) + (j > 0) * np.repeat(off & digit, n_tok)
