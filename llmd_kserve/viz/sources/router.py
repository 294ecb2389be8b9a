"""The router itself as a live source when no Prometheus runs: its ``/metrics``, ``/debug/endpoints`` (each
endpoint's load as the router last scraped it), each engine's ``/metrics``, and ``/debug/decisions``.

``RouterSource(url, config=None, timeout=2.0)``::

    .scrape() -> Scrape            totals now (router counters + the engines' counters and histograms)
    .sample() -> LiveSample        the window since the previous ``sample()`` (the first: since the counters began)
    .decisions(limit=None, request_id=None) -> list[dict]    ``/debug/decisions`` items, newest last
    .explain(decision=None) -> DecisionExplained             the newest (or given) decision, weights from ``config``
                                                             (else the weights the router logged with it)

Every failure is a :class:`SourceError` whose message is one readable line ("router at … is not answering …").
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from llmd_kserve.config.loader import load_config
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import LlmdError
from llmd_kserve.viz.data import DecisionExplained, EndpointSample, LiveSample, explain_decision, profile_weights
from llmd_kserve.viz.sources.window import COUNTERS, HISTOGRAMS, LiveWindow, Scrape


class SourceError(LlmdError):
    """A live source could not be read (server down, bad answer); the message is one line for a panel."""


def http_get(url: str, timeout: float, what: str, api_key: str | None = None) -> bytes:
    """GET ``url`` (with ``Authorization: Bearer api_key`` when given); any failure becomes a one-line
    :class:`SourceError` naming ``what``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        hint = (": it has API keys on, give the source an api_key" if exc.code == 401 and not api_key else
                ": /metrics and /debug/* need an operator key (keys add --admin)" if exc.code == 403 and api_key
                else "")
        raise SourceError(f"{what} answered HTTP {exc.code} for {url}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"{what} at {url.split('/', 3)[:3][-1]} is not answering ({reason})") from None


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    """``selector`` is ``{k="v",...}`` or empty."""
    if not selector:
        return True
    for part in selector.strip("{}").split(","):
        k, _, v = part.partition("=")
        if labels.get(k.strip()) != v.strip().strip('"'):
            return False
    return True


def parse_totals(text: str, into: dict[str, float], hists: dict[str, dict[float, float]]) -> None:
    """Add one exposition page's counters (``COUNTERS``) and histogram buckets (``HISTOGRAMS``) to the totals."""
    wanted = {}
    for key, series in COUNTERS.items():
        name, _, selector = series.partition("{")
        wanted.setdefault(name, []).append((key, "{" + selector if selector else ""))
    hist_names = {v + "_bucket": k for k, v in HISTOGRAMS.items()}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in wanted:
                for key, selector in wanted[s.name]:
                    if key == "answered" and s.labels.get("status") != "200":
                        continue
                    if _matches(s.labels, selector):
                        into[key] = into.get(key, 0.0) + s.value
            elif s.name in hist_names:
                le = float("inf") if s.labels["le"] == "+Inf" else float(s.labels["le"])
                h = hists.setdefault(hist_names[s.name], {})
                h[le] = h.get(le, 0.0) + s.value


class RouterSource:
    """Live numbers straight from a running router and the engines behind it."""

    def __init__(self, url: str, config: str | Path | SchedulerConfig | None = None, timeout: float = 2.0,
                 clock: Any = time.time, api_key: str | None = None) -> None:
        """``api_key``: for a router started with API keys (every route but ``/health`` needs one)."""
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.config = load_config(config) if isinstance(config, (str, Path)) else config
        self._clock = clock
        self._window = LiveWindow()

    def _json(self, path: str) -> Any:
        body = http_get(self.url + path, self.timeout, "router", self.api_key)
        try:
            return json.loads(body)
        except ValueError:
            raise SourceError(f"router at {self.url} answered {path} with something that is not JSON") from None

    def scrape(self) -> Scrape:
        counters: dict[str, float] = {}
        hists: dict[str, dict[float, float]] = {}
        parse_totals(http_get(self.url + "/metrics", self.timeout, "router", self.api_key).decode(), counters, hists)
        eps = self._json("/debug/endpoints").get("endpoints", [])
        samples = []
        for ep in eps:
            m = ep.get("metrics", {})
            samples.append(EndpointSample(ep["id"], float(m.get("waiting", 0)), float(m.get("running", 0)),
                                          float(m.get("kv_usage", 0.0)), ep.get("role", "both")))
            try:  # the engines' own counters and histograms (an engine that is down only loses its share)
                parse_totals(http_get(ep["id"] + "/metrics", self.timeout, "engine").decode(), counters, hists)
            except SourceError:
                continue
        return Scrape(self._clock(), counters, hists, tuple(sorted(samples, key=lambda e: e.endpoint)))

    def sample(self) -> LiveSample:
        return self._window.update(self.scrape(), source=f"router {self.url}")

    def since_start(self) -> LiveSample | None:
        return self._window.since_start()

    def decisions(self, limit: int | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        query = [f"limit={limit}"] if limit is not None else []
        if request_id:
            query.append(f"request_id={urllib.request.quote(request_id)}")
        return list(self._json("/debug/decisions" + ("?" + "&".join(query) if query else "")).get("decisions", []))

    def explain(self, decision: Mapping[str, Any] | None = None) -> DecisionExplained:
        """A decision (default: the newest) with each scorer's weighted score: the weights of ``config`` when the
        source has one, else the weights the router logged with the decision (routers with config reload)."""
        if decision is None:
            recent = self.decisions(limit=1)
            if not recent:
                raise SourceError(f"router at {self.url} has made no decision yet")
            decision = recent[-1]
        weights = profile_weights(self.config) if self.config is not None else decision.get("weights")
        if not weights:
            raise SourceError("this router logs no weights with its decisions: RouterSource(config=...) "
                              "gives them")
        try:
            return explain_decision(decision, weights)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
