"""Request traces: files loaded as a ``TraceSpec`` (a time window and a request cap applied while loading), and
how each request is fitted to the model's context.

Formats (``TRACE_FORMATS``): ``mooncake``, JSONL lines ``{"timestamp": ms, "input_length": n, "output_length": m,
"hash_ids": [...]}`` where equal hash ids stand for equal ``block_tokens``-token blocks (512 in Mooncake's traces).
Bad lines are ConfigErrors naming ``file:line``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from llmd_kserve.bench.workloads.specs import TraceEntry, TraceSpec
from llmd_kserve.errors import ConfigError, config_error_from

TRACE_FORMATS = ("mooncake",)
Window = tuple[float | None, float | None]


def parse_window(text: str) -> Window:
    """``"START:END"`` seconds from the trace's first request (either side may be empty) as ``(start, end)``."""
    start, sep, end = text.partition(":")
    if not sep:
        raise ConfigError(f"expected START:END in seconds (e.g. 600:1200 or 600:), got {text!r}", "window")
    try:
        lo = float(start) if start.strip() else None
        hi = float(end) if end.strip() else None
    except ValueError:
        raise ConfigError(f"window bounds must be numbers of seconds, got {text!r}", "window") from None
    if (lo is not None and lo < 0) or (lo is not None and hi is not None and hi <= lo):
        raise ConfigError(f"need 0 <= START < END, got {text!r}", "window")
    return lo, hi


def _read_mooncake(p: Path) -> list[TraceEntry]:
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read trace: {exc}", str(p)) from exc
    entries = []
    for no, line in enumerate(lines, 1):
        if line.strip():
            try:
                entries.append(TraceEntry.model_validate(json.loads(line)))
            except ValidationError as exc:
                raise config_error_from(exc, f"{p}:{no}:", "bad trace line") from exc
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"bad trace line: {exc}", f"{p}:{no}") from exc
    return entries


_READERS: dict[str, Callable[[Path], list[TraceEntry]]] = {"mooncake": _read_mooncake}


def load_trace(path: str | Path, *, fmt: str = "mooncake", block_tokens: int = 512, time_scale: float = 1.0,
               window: Window | None = None, max_requests: int | None = None, max_model_len: int | None = None,
               fit: str = "clip") -> TraceSpec:
    """Read a trace file: the entries whose time falls in ``window`` (seconds from its first request, ``[start,
    end)``), at most ``max_requests`` of them, in the file's order."""
    if fmt not in _READERS:
        raise ConfigError(f"unknown trace format {fmt!r} (known: {', '.join(TRACE_FORMATS)})", "format")
    p = Path(path)
    entries = _READERS[fmt](p)
    if not entries:
        raise ConfigError("the trace has no requests", str(p))
    if window is not None and window != (None, None):
        t0 = min(e.timestamp for e in entries)
        lo, hi = window
        entries = [e for e in entries if (lo is None or (e.timestamp - t0) / 1000.0 >= lo)
                   and (hi is None or (e.timestamp - t0) / 1000.0 < hi)]
        if not entries:
            raise ConfigError(f"no request of the trace falls in the window {lo}:{hi} s", "window")
    if max_requests is not None:
        if not float(max_requests).is_integer() or max_requests < 1:
            raise ConfigError(f"max_requests must be a whole number >= 1, got {max_requests!r}", "max_requests")
        entries = entries[:int(max_requests)]
    try:
        return TraceSpec(entries=tuple(entries), block_tokens=block_tokens, time_scale=time_scale,
                         max_model_len=max_model_len, fit=fit, source=p.name,
                         window=window if window != (None, None) else None)
    except ValidationError as exc:
        raise config_error_from(exc, "trace:") from exc


def fit_lengths(entry: TraceEntry, max_model_len: int | None, fit: str = "clip") -> tuple[int, int] | None:
    """``(input, output)`` tokens the request is sent with: unchanged when they fit ``max_model_len``; ``clip``:
    the output cut to at most half the context, then the input cut from its end; ``drop``: None."""
    n_in, n_out = entry.input_length, entry.output_length
    if max_model_len is None or n_in + n_out <= max_model_len:
        return n_in, n_out
    if fit == "drop":
        return None
    n_out = min(n_out, max_model_len // 2)
    return min(n_in, max_model_len - n_out), n_out


@dataclass(frozen=True, slots=True)
class TraceFit:
    """What fitting a trace to the context changed: requests clipped or dropped, tokens cut."""

    max_model_len: int | None
    fit: str
    requests: int
    clipped: int = 0
    dropped: int = 0
    input_tokens_cut: int = 0
    output_tokens_cut: int = 0
    longest_input: int = 0

    def line(self) -> str:
        """One sentence for the terminal."""
        if self.max_model_len is None:
            return f"{self.requests} requests, not fitted to a context length (longest input {self.longest_input})"
        over = self.clipped + self.dropped
        if not over:
            return f"all {self.requests} requests fit the {self.max_model_len}-token context"
        if self.fit == "drop":
            return (f"{self.dropped} of {self.requests} requests do not fit the {self.max_model_len}-token context "
                    f"and are left out (longest input {self.longest_input})")
        return (f"{self.clipped} of {self.requests} requests clipped to the {self.max_model_len}-token context: "
                f"{self.input_tokens_cut} input and {self.output_tokens_cut} output tokens cut "
                f"(longest input {self.longest_input})")

    def as_dict(self) -> dict[str, int | str | None]:
        return {"max_model_len": self.max_model_len, "fit": self.fit, "requests": self.requests,
                "clipped": self.clipped, "dropped": self.dropped, "input_tokens_cut": self.input_tokens_cut,
                "output_tokens_cut": self.output_tokens_cut, "longest_input": self.longest_input}


def fit_summary(spec: TraceSpec, num_requests: int | None = None) -> TraceFit:
    """How ``spec.max_model_len`` changes the first ``num_requests`` entries (all when None)."""
    entries = spec.entries if num_requests is None else spec.entries[:num_requests]
    clipped = dropped = cut_in = cut_out = 0
    for e in entries:
        got = fit_lengths(e, spec.max_model_len, spec.fit)
        if got is None:
            dropped += 1
        elif got != (e.input_length, e.output_length):
            clipped += 1
            cut_in += e.input_length - got[0]
            cut_out += e.output_length - got[1]
    return TraceFit(spec.max_model_len, spec.fit, len(entries), clipped, dropped, cut_in, cut_out,
                    max((e.input_length for e in entries), default=0))
