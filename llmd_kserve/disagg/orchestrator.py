"""The prefill hop of a disaggregated request, done by the router before it sends (and streams) the decode hop.

The proxy calls :meth:`PDOrchestrator.upstream_body` once per attempt, after scheduling and before sending to
``result.target``; whatever it returns is the body for the decode (or only) endpoint:

* no ``result.prefill``: the request as it came, minus any client-supplied ``kv_transfer_params``;
* ``result.prefill`` set: step 1 goes to that endpoint (always one the scheduler picked from the pool: nothing the
  client sent names an address), and the decode body carries step 2's ``kv_transfer_params`` verbatim (step 3);
  both hops carry the same headers, hence the same ``x-request-id``;
* the prefill hop fails (connect error, timeout, HTTP error, an answer without a KV handle): the decode endpoint
  gets the original request without ``kv_transfer_params`` and prefills locally; counted by reason.

When the prefill hop ends, the prefill endpoint's in-flight charge is released at once
(``Scheduler.on_prefill_complete``), so that the prefill pool's load reflects queued prefills, not decodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec

from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.protocol import (
    KV_TRANSFER_PARAMS,
    PrefillAnswer,
    PrefillAnswerError,
    decode_body,
    encode,
    has_client_params,
    parse_prefill_answer,
    prefill_body,
    strip_client_params,
)
from llmd_kserve.types import LLMRequest, RequestOutcome

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode


class PrefillFailed(Exception):
    """The prefill hop did not produce a KV handle; ``reason`` labels the fallback metric."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PDOrchestrator:
    """Runs prefill hops over the router's upstream session (``session()`` returns it)."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession], metrics: DisaggMetrics, *,
                 prefill_timeout_s: float = 30.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self._session = session
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=prefill_timeout_s)
        self._clock = clock

    async def upstream_body(self, llm_req: LLMRequest, result: Any, path: str, body: bytes,
                            headers: Mapping[str, str], scheduler: Any = None) -> bytes:
        """The body for ``result.target`` (see the module docstring); never raises for a failed prefill hop."""
        parsed: dict[str, Any] | None = None
        if has_client_params(body):
            obj = _decode(body)
            if isinstance(obj, dict) and KV_TRANSFER_PARAMS in obj:
                self.metrics.client_params_stripped.inc()
                log.info("request %s: dropped client-supplied kv_transfer_params", llm_req.request_id)
                parsed = strip_client_params(obj)
                body = encode(parsed)
        prefill = getattr(result, "prefill", None)
        if prefill is None:
            self.metrics.requests.labels("local").inc()
            return body
        self.metrics.requests.labels("disaggregated").inc()
        if parsed is None:
            parsed = _decode(body)
        t0 = self._clock()
        answer: PrefillAnswer | None = None
        try:
            answer = await self.prefill(prefill + path, parsed, headers)
        except PrefillFailed as exc:
            self.metrics.fallbacks.labels(exc.reason).inc()
            log.warning("request %s: prefill on %s failed (%s); prefilling on %s", llm_req.request_id, prefill,
                        exc, result.target)
            return body
        finally:
            self._release_prefill(scheduler, llm_req, result, answer)
        self.metrics.prefill_seconds.observe(self._clock() - t0)
        moved = max(0, int(result.prompt_tokens) - int(result.predicted_cached_tokens))
        self.metrics.kv_transfer_tokens.inc(moved)
        profile = getattr(getattr(scheduler, "ctx", None), "profile", None)
        if profile is not None:
            self.metrics.kv_transfer_predicted.observe(profile.kv_transfer_time(moved))
        return encode(decode_body(parsed, answer.params))

    async def prefill(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> PrefillAnswer:
        """Step 1 and 2: send the prefill request, return the parsed answer; raises :class:`PrefillFailed`."""
        try:
            async with self._session().post(url, data=encode(prefill_body(body)), headers=dict(headers),
                                            timeout=self.timeout) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise PrefillFailed(f"http_{resp.status}", raw[:200].decode(errors="replace"))
        except TimeoutError as exc:
            raise PrefillFailed("timeout", str(exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise PrefillFailed("connect", str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PrefillFailed("disconnected", str(exc)) from exc
        try:
            return parse_prefill_answer(raw)
        except PrefillAnswerError as exc:
            raise PrefillFailed("no_kv_params", str(exc)) from exc

    @staticmethod
    def _release_prefill(scheduler: Any, llm_req: LLMRequest, result: Any, answer: PrefillAnswer | None) -> None:
        """Tell the scheduler the prefill leg is over (``on_prefill_complete``; the decode leg's ``on_complete``
        comes from the proxy when the response ends)."""
        hook = getattr(scheduler, "on_prefill_complete", None)
        if hook is None:
            return
        outcome = RequestOutcome(ok=answer is not None, prompt_tokens=answer.prompt_tokens if answer else 0,
                                 cached_tokens=answer.cached_tokens if answer else None)
        try:
            hook(llm_req, result, outcome)
        except Exception:  # bookkeeping must not fail the request
            log.exception("releasing the prefill leg of %s failed", llm_req.request_id)
