"""The router's P/D metrics (share disaggregated, prefill hop time, predicted KV transfer, fallbacks), on its registry."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry

from llmd_kserve.metrics.loop_metrics import LoopCounter as Counter  # updated on the event loop's thread only
from llmd_kserve.metrics.loop_metrics import LoopHistogram as Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_XFER = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, DisaggMetrics] = weakref.WeakKeyDictionary()


class DisaggMetrics:
    """``llmd_router_pd_*`` series; one instance per registry (:meth:`on`), next to ``RouterMetrics``.

    * ``pd_requests_total{mode}``: ``disaggregated`` (a prefill endpoint was chosen) or ``local``; the share
      disaggregated is ``disaggregated / sum``.
    * ``pd_prefill_seconds``: the prefill hop as the router saw it (send to answer), successful hops.
    * ``pd_kv_transfer_predicted_seconds``: the latency model's transfer time for the tokens the decode endpoint
      lacks (the engines report the measured one as ``vllm:nixl_xfer_time_seconds``).
    * ``pd_kv_transfer_tokens_total``: prompt tokens handed from prefill to decode: the prefill engine's count
      (``remote_num_tokens``, else its ``usage.prompt_tokens``) less what the decode endpoint is predicted to hold.
    * ``pd_fallbacks_total{reason}``: prefill hops that failed (``connect``, ``timeout``, ``http_<status>``,
      ``no_kv_params``), after which the decode endpoint prefilled locally.
    * ``pd_client_params_stripped_total``: client bodies that carried ``kv_transfer_params`` (dropped).
    """

    def __init__(self, registry: CollectorRegistry, namespace: str = "llmd_router") -> None:
        r, ns = registry, namespace
        self.requests = Counter("pd_requests", "Requests by P/D mode (disaggregated or local prefill)", ["mode"],
                                namespace=ns, registry=r)
        self.prefill_seconds = Histogram("pd_prefill_seconds", "Prefill hop duration seen by the router",
                                         buckets=_SECONDS, namespace=ns, registry=r)
        self.kv_transfer_predicted = Histogram("pd_kv_transfer_predicted_seconds",
                                               "Latency-model KV transfer time of disaggregated requests",
                                               buckets=_XFER, namespace=ns, registry=r)
        self.kv_transfer_tokens = Counter("pd_kv_transfer_tokens", "Prompt tokens handed from prefill to decode",
                                          namespace=ns, registry=r)
        self.fallbacks = Counter("pd_fallbacks", "Failed prefill hops answered by a local prefill on decode",
                                 ["reason"], namespace=ns, registry=r)
        self.client_params_stripped = Counter("pd_client_params_stripped",
                                              "Client requests whose kv_transfer_params were dropped",
                                              namespace=ns, registry=r)
        for mode in ("disaggregated", "local"):
            self.requests.labels(mode)

    @classmethod
    def on(cls, registry: CollectorRegistry) -> DisaggMetrics:
        """The instance registered on ``registry`` (created on first use)."""
        m = _by_registry.get(registry)
        if m is None:
            m = _by_registry[registry] = cls(registry)
        return m
