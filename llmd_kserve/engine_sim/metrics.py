"""vLLM-named Prometheus metrics of one simulated engine, in its own registry (several engines share a process).

Gauges and counters are read from the engine core at scrape time (no per-step cost); histograms keep their bucket
counts in plain lists (a bisect per observation) and are exposed through a custom collector with vLLM's buckets.
The page honours ``?name[]=`` and ``Accept-Encoding: gzip`` as prometheus_client's ``make_asgi_app`` does.
"""

from __future__ import annotations

import bisect
import dataclasses
import gzip
from collections.abc import Collection, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.core_types import EngineStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
         160.0, 640.0, 2560.0)
_ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_LONG = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
         1920.0, 7680.0)
_TOKENS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
_ITER = (1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0)
_XFER = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


_MAX_PAGES = 16
_STAT_FIELDS = tuple(f.name for f in dataclasses.fields(EngineStats))


class Hist:
    """A cumulative histogram with fixed upper bounds (``+Inf`` implied)."""

    __slots__ = ("name", "doc", "bounds", "counts", "sum", "n")

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc, self.bounds = name, doc, tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.n = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.n += 1

    def family(self, labels: dict[str, str]) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=list(labels))
        acc, buckets = 0, []
        for b, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += c
            buckets.append(("+Inf" if b == float("inf") else str(float(b)), acc))
        fam.add_metric(list(labels.values()), buckets, self.sum)
        return fam


class EngineMetrics(Collector):
    """Everything ``GET /metrics`` shows for one engine."""

    def __init__(self, core: EngineCore, model: str, *, extra_info: dict[str, str] | None = None) -> None:
        self.core = core
        self.labels = {"engine": "0", "model_name": model}
        self.extra_info = extra_info or {}
        self.ttft = Hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", _TTFT)
        self.itl = Hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", _ITL)
        self.tpot = Hist("vllm:request_time_per_output_token_seconds",
                         "Histogram of time_per_output_token_seconds per request.", _ITL)
        self.e2e = Hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", _LONG)
        self.queue = Hist("vllm:request_queue_time_seconds",
                          "Histogram of time spent in WAITING phase for request.", _LONG)
        self.prefill = Hist("vllm:request_prefill_time_seconds",
                            "Histogram of time spent in PREFILL phase for request.", _LONG)
        self.decode = Hist("vllm:request_decode_time_seconds",
                           "Histogram of time spent in DECODE phase for request.", _LONG)
        self.prompt_tokens = Hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", _TOKENS)
        self.gen_tokens = Hist("vllm:request_generation_tokens", "Number of generation tokens processed.", _TOKENS)
        self.max_tokens = Hist("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
                               _TOKENS)
        self.iteration = Hist("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", _ITER)
        self.xfer = Hist("vllm:nixl_xfer_time_seconds", "Histogram of P/D KV transfer duration.", _XFER)
        self.hists = [self.ttft, self.itl, self.tpot, self.e2e, self.queue, self.prefill, self.decode,
                      self.prompt_tokens, self.gen_tokens, self.max_tokens, self.iteration, self.xfer]
        self.success = dict.fromkeys(FINISH_REASONS, 0)
        self.failed_transfers = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._pages: dict[tuple[frozenset[str] | None, bool], tuple[tuple[object, ...], bytes]] = {}

    def render(self, names: Collection[str] = (), gzipped: bool = False) -> bytes:
        """The exposition page, only the samples named in ``names`` if any (prometheus_client's restricted
        registry: exact sample names, e.g. ``vllm:prefix_cache_hits_total``, ``..._bucket``), gzipped if asked.
        Re-rendered only when something it shows changed (an idle engine's page is rendered once, not on every
        scrape: ~2.7 ms each for 12 histograms); one cached page per filter."""
        key = (frozenset(names) if names else None, gzipped)
        fp = self._fingerprint()
        hit = self._pages.get(key)
        if hit is not None and hit[0] == fp:
            return hit[1]
        registry = self.registry.restricted_registry(key[0]) if key[0] else self.registry
        page = generate_latest(registry)
        if gzipped:
            page = gzip.compress(page)
        if len(self._pages) >= _MAX_PAGES and key not in self._pages:
            self._pages.clear()  # scrapers ask for a few filters; a client cycling through many is not cached
        self._pages[key] = (fp, page)
        return page

    def _fingerprint(self) -> tuple[object, ...]:
        core, s = self.core, self.core.stats
        return (core.num_running, core.num_waiting, core.kv_usage, core.block_size, core.num_blocks,
                *(getattr(s, f) for f in _STAT_FIELDS), self.failed_transfers, *self.success.values(),
                *(h.n for h in self.hists), *self.extra_info.items(), *self.labels.items())

    def describe(self) -> list[Metric]:
        """The families (read once, at registration): what lets ``restricted_registry`` find this collector."""
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        core, lab = self.core, self.labels
        names, values = list(lab), list(lab.values())

        def gauge(name: str, doc: str, v: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, v)
            return g

        def counter(name: str, doc: str, v: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=names)
            c.add_metric(values, v)
            return c

        s = core.stats
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", core.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", core.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", core.kv_usage)
        yield counter("vllm:prefix_cache_queries",
                      "Prefix cache queries, in terms of number of queried tokens.", s.prefix_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                      s.prefix_hits)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.num_preemptions)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        by_source = CounterMetricFamily("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
                                        labels=[*names, "source"])
        for source, v in (("local_compute", s.prompt_tokens_computed), ("local_cache_hit", s.prompt_tokens_local_hit),
                          ("external_kv_transfer", s.prompt_tokens_external)):
            by_source.add_metric([*values, source], v)
        yield by_source
        yield counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local prefix cache).",
                      s.prompt_tokens_local_hit + s.prompt_tokens_external)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens)
        yield counter("vllm:nixl_num_failed_transfers",
                      "Number of failed P/D KV pulls (unknown or expired remote blocks; recomputed locally).",
                      self.failed_transfers)
        succ = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.",
                                   labels=[*names, "finished_reason"])
        for reason, n in self.success.items():
            succ.add_metric([*values, reason], n)
        yield succ
        for h in self.hists:
            yield h.family(lab)
        info = {
            "block_size": str(core.block_size), "num_gpu_blocks": str(core.num_blocks),
            "enable_prefix_caching": "True", "cache_dtype": "auto", "prefix_caching_hash_algo": "sha256",
            "kv_cache_size_tokens": str(core.num_blocks * core.block_size), "num_cpu_blocks": "None",
            "sliding_window": "None", **self.extra_info, "engine": "0",
        }
        g = GaugeMetricFamily("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=sorted(info))
        g.add_metric([info[k] for k in sorted(info)], 1.0)
        yield g
