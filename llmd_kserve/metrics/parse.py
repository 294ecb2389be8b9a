"""vLLM ``/metrics`` exposition text -> :class:`EndpointMetrics` (pure; plain lines parsed directly, others by prometheus_client).

Counts and counters are summed over label sets (one per ``engine`` / ``model_name``), so a data-parallel server
reports its total; ``kv_usage`` is their mean. ``vllm:cache_config_info`` carries ``block_size`` and ``num_gpu_blocks`` as labels (``num_gpu_blocks`` is
summed over engines too). Older vLLM names (``vllm:gpu_cache_usage_perc``, ``vllm:gpu_prefix_cache_*``) are
accepted. Only the lines of the metrics we read are handed to the parser: a vLLM page is ~50 kB of histograms,
and the router scrapes every endpoint 20 times a second.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from llmd_kserve.types import EndpointMetrics

# field -> accepted metric names, preferred first
_NAMES: dict[str, tuple[str, ...]] = {
    "waiting": ("vllm:num_requests_waiting",),
    "running": ("vllm:num_requests_running",),
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prefix_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
}
_INFO = "vllm:cache_config_info"
_WANTED = frozenset(n for names in _NAMES.values() for n in names) | {_INFO}
_PREFIXES = tuple(_WANTED)
SCRAPE_NAMES: tuple[str, ...] = tuple(sorted(_WANTED))
"""The sample names read here: what a scraper asks for with ``?name[]=`` (prometheus_client filters by exact
sample name, so counters by their ``_total`` sample)."""
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^\\{}]*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"\\]*)"[ \t]*(?:,|$)')


MAX_COUNT = 1_000_000
"""Request counts are clamped to [0, MAX_COUNT] (an engine reporting -1e18 waiting must not look idlest)."""


def _label_int(value: str | None) -> int | None:
    try:
        v = int(value) if value is not None else None
    except ValueError:
        return None
    return v if v is None or v >= 0 else None


def _count(x: float) -> int:
    if math.isnan(x):
        return 0
    return int(min(float(MAX_COUNT), max(0.0, x)))


def _counter(x: float) -> float:
    return x if math.isfinite(x) and x >= 0 else 0.0


def _metric_name(line: str) -> str:
    end = len(line)
    for sep in ("{", " "):
        i = line.find(sep)
        if 0 <= i < end:
            end = i
    return line[:end]


def _fast_samples(lines: list[str]) -> list[tuple[str, dict[str, str], float]] | None:
    """The samples of plain ``name{a="b",...} value [timestamp]`` lines; None if any line is not that simple
    (escapes, odd spacing, a bad value): then prometheus_client's parser decides (and raises on garbage)."""
    out = []
    for ln in lines:
        m = _SAMPLE.fullmatch(ln)
        if m is None:
            return None
        name, label_text, value = m.groups()
        labels: dict[str, str] = {}
        if label_text:
            pos = 0
            for lm in _LABEL.finditer(label_text):
                if lm.start() != pos:
                    return None
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
            if pos != len(label_text):
                return None
        if "_" in value:  # float() takes 1_000; the exposition format does not
            return None
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            return None
    return out


def _samples(lines: list[str]) -> Iterator[tuple[str, dict[str, str], float]]:
    fast = _fast_samples(lines)
    if fast is not None:
        yield from fast
        return
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def parse_vllm_metrics(text: str, now: float) -> EndpointMetrics:
    """Parse one scrape taken at clock time ``now``; raises ValueError on a malformed line of a metric we read.

    Counts and counters are summed over label sets; ``kv_usage`` is their mean (a fraction per engine). Values
    are clamped: counts to [0, MAX_COUNT] (+Inf is the most loaded, not an error), ``kv_usage`` to [0, 1],
    counters to finite non-negative numbers.
    """
    return parse_vllm_page(text, now)[0]


def parse_vllm_page(text: str, now: float) -> tuple[EndpointMetrics, frozenset[str]]:
    """:func:`parse_vllm_metrics`, and which of :data:`SCRAPE_NAMES` the page has samples of (so a scraper can tell
    a filtered page that lost something from one that has all an unfiltered page had)."""
    lines = [ln for ln in text.splitlines() if ln.startswith(_PREFIXES) and _metric_name(ln) in _WANTED]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    seen: set[str] = set()
    for name, labels, value in _samples(lines):
        seen.add(name)
        if name == _INFO:
            bs = _label_int(labels.get("block_size"))
            if bs is not None:
                block_size = bs
            nb = _label_int(labels.get("num_gpu_blocks"))
            if nb is not None:
                num_gpu_blocks = (num_gpu_blocks or 0) + nb
        elif name in _WANTED and not math.isnan(value):
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    values: dict[str, float] = {}
    for field, names in _NAMES.items():
        for name in names:
            if name in sums:
                values[field] = sums[name] / counts[name] if field == "kv_usage" else sums[name]
                break
    return EndpointMetrics(
        waiting=_count(values.get("waiting", 0.0)),
        running=_count(values.get("running", 0.0)),
        kv_usage=min(1.0, max(0.0, values.get("kv_usage", 0.0))),
        block_size=block_size,
        num_gpu_blocks=num_gpu_blocks,
        prefix_queries=_counter(values.get("prefix_queries", 0.0)),
        prefix_hits=_counter(values.get("prefix_hits", 0.0)),
        scraped_at=now,
        stale=False,
    ), frozenset(seen)
