"""A trace's structure: size, time span and rate, length percentiles, and how much of it is a shared prefix.

    describe_trace(spec, top=5) -> TraceStats      pure; ``TraceStats.lines()`` for a terminal, ``.as_dict()`` for JSON

Prefix sharing is read from the hash ids alone (equal id = equal block after an equal prefix, as in Mooncake's
traces): ``blocks_seen_before`` is the share of blocks whose id an earlier request already named, and
``prefix_hit_bound`` the share of input tokens in a request's leading run of such blocks, the prefix-cache hit
rate a cache that never evicts would reach (on the requests as replayed: fitted to ``spec.max_model_len``). The top shared prefixes are the longest prefixes that many requests
start with (a prefix is listed only where no longer one is shared by as many requests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmd_kserve.bench.stats import percentile
from llmd_kserve.bench.workloads.specs import TraceSpec
from llmd_kserve.bench.workloads.trace import fit_lengths


@dataclass(frozen=True, slots=True)
class Lengths:
    """A token-length distribution."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: int

    @classmethod
    def of(cls, values: list[int]) -> Lengths:
        if not values:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        p50, p90, p99 = (percentile(values, q) or 0.0 for q in (50, 90, 99))
        return cls(sum(values) / len(values), p50, p90, p99, max(values))

    def text(self) -> str:
        return f"mean {self.mean:,.0f}, p50 {self.p50:,.0f}, p90 {self.p90:,.0f}, p99 {self.p99:,.0f}, max {self.max:,}"


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    """A prefix of ``blocks`` blocks (``tokens`` tokens) that ``requests`` requests start with."""

    blocks: int
    tokens: int
    requests: int


@dataclass(frozen=True, slots=True)
class TraceStats:
    """What ``describe_trace`` found; times are seconds of the recorded trace."""

    source: str | None
    requests: int
    span_s: float
    rate_rps: float | None
    time_scale: float
    input: Lengths
    output: Lengths
    block_tokens: int
    blocks: int
    unique_blocks: int
    blocks_seen_before: float | None
    prefix_hit_bound: float | None
    top_prefixes: tuple[SharedPrefix, ...]
    max_model_len: int | None
    over_context: int
    fit: str = "clip"

    def lines(self) -> list[str]:
        """The description, one fact a line."""
        rate = f"{self.rate_rps:.2f} req/s" if self.rate_rps is not None else "n/a"
        out = [f"trace {self.source or ''}: {self.requests:,} requests over {self.span_s:,.1f} s ({rate})".replace(
            "trace :", "trace:")]
        if self.time_scale != 1.0:
            out.append(f"  replayed with time scale {self.time_scale:g}: {self.span_s * self.time_scale:,.1f} s")
        out += [f"  input tokens:  {self.input.text()}", f"  output tokens: {self.output.text()}"]
        if self.max_model_len is not None:
            out.append(f"  longer than the {self.max_model_len:,}-token context (input + output): "
                       f"{self.over_context:,} ({self.over_context / max(self.requests, 1):.1%}), "
                       f"{'clipped' if self.fit == 'clip' else 'left out'} when replayed")
        if self.blocks:
            out.append(f"  {self.block_tokens}-token blocks: {self.blocks:,} named, {self.unique_blocks:,} distinct; "
                       f"{self.blocks_seen_before or 0:.1%} seen in an earlier request")
            fitted = " (requests fitted to the context)" if self.max_model_len is not None else ""
            out.append(f"  prefix-cache hit rate with a cache that never evicts{fitted}: {self.prefix_hit_bound or 0:.1%}")
        if self.top_prefixes:
            out.append("  top shared prefixes (by tokens x requests):")
        for p in self.top_prefixes:
            blocks = f"{p.blocks} block" + ("s" if p.blocks != 1 else "")
            out.append(f"    {blocks} (up to {p.tokens:,} tokens) starts {p.requests:,} requests")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_trace(spec: TraceSpec, top: int = 5) -> TraceStats:
    """The structure of ``spec.entries`` (see the module docstring)."""
    entries = spec.entries
    size = spec.block_tokens
    times = [e.timestamp for e in entries]
    span = (max(times) - min(times)) / 1000.0 if times else 0.0
    seen: set[int] = set()
    count: dict[int, int] = {}
    depth: dict[int, int] = {}
    best_child: dict[int, int] = {}
    named = repeated = reusable = total_in = over = 0
    for e in entries:
        fitted = fit_lengths(e, spec.max_model_len, spec.fit)
        if fitted != (e.input_length, e.output_length):
            over += 1
        n_in = fitted[0] if fitted else 0
        total_in += n_in
        leading = True
        hit_blocks = 0
        for d, h in enumerate(e.hash_ids):
            named += 1
            if h in seen:
                repeated += 1
                hit_blocks += leading
            else:
                leading = False
            count[h] = count.get(h, 0) + 1
            depth.setdefault(h, d + 1)
        reusable += min(hit_blocks * size, n_in)
        seen.update(e.hash_ids)
    for e in entries:  # a prefix is maximal unless a longer one is shared by as many requests
        for parent, child in zip(e.hash_ids, e.hash_ids[1:], strict=False):
            if depth[child] == depth[parent] + 1:
                best_child[parent] = max(best_child.get(parent, 0), count[child])
    maximal = [h for h, c in count.items() if c >= 2 and best_child.get(h, 0) < c]
    maximal.sort(key=lambda h: (-count[h] * depth[h], -count[h], depth[h]))
    prefixes = tuple(SharedPrefix(depth[h], depth[h] * size, count[h]) for h in maximal[:top])
    return TraceStats(
        source=spec.source, requests=len(entries), span_s=span,
        rate_rps=len(entries) / span if span > 0 else None, time_scale=spec.time_scale,
        input=Lengths.of([e.input_length for e in entries]), output=Lengths.of([e.output_length for e in entries]),
        block_tokens=size, blocks=named, unique_blocks=len(seen),
        blocks_seen_before=repeated / named if named else None,
        prefix_hit_bound=reusable / total_in if total_in else None, top_prefixes=prefixes,
        max_model_len=spec.max_model_len, over_context=over, fit=spec.fit)
