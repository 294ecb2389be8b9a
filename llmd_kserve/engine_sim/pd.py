"""Prefill/decode disaggregation on the engine side, shaped like vLLM's NixlConnector ``kv_transfer_params``.

Prefill side (request carries ``do_remote_decode: true``): the engine prefills, answers after one token and keeps
the request's blocks for a lease (``kv_lease_s``, vLLM's ``VLLM_NIXL_ABORT_REQUEST_TIMEOUT`` is 480 s), returning
``{do_remote_prefill: true, do_remote_decode: false, remote_block_ids, remote_engine_id, remote_request_id,
remote_host, remote_port, tp_size}`` (vLLM 0.32 adds ``remote_prefill_cached_tokens``, the prefill's own
prefix-cache hit, which the decode then reports as its ``cached_tokens``). ``remote_port`` is the engine's HTTP
port: the simulated NIXL side channel is ``POST /_sim/nixl/pull`` there. Decode side (``do_remote_prefill: true``): the engine pulls (the prefill engine
checks the ids and frees its blocks), waits ``kv_bytes_per_token * tokens / link bandwidth`` for the tokens it does
not already hold in its own prefix cache, then decodes without prefilling. A failed pull (unknown or expired ids,
unreachable peer) falls back to a local prefill (vLLM's ``recompute`` policy) and counts in
``vllm:nixl_num_failed_transfers``.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

PULL_PATH = "/_sim/nixl/pull"
PEER_CACHED = "remote_prefill_cached_tokens"
"""vLLM 0.32: the prefill's prefix-cache hit (tokens) in its ``kv_transfer_params``; the decode reports it as its
``cached_tokens`` (the KV it pulled is not counted as cached)."""


def prefill_response_params(*, block_ids: list[int], engine_id: str, request_id: str, host: str,
                            port: int) -> dict[str, Any]:
    """What a prefill engine returns in ``kv_transfer_params`` (NixlConnector's ``request_finished``)."""
    return {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": block_ids,
            "remote_engine_id": engine_id, "remote_request_id": request_id, "remote_host": host,
            "remote_port": port, "tp_size": 1}


def peer_cached_tokens(kvtp: dict | None) -> int | None:
    """The prefill's ``remote_prefill_cached_tokens`` from ``kvtp``, or None when absent or not a count."""
    v = (kvtp or {}).get(PEER_CACHED)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def wants_remote_decode(kvtp: dict | None) -> bool:
    return bool(kvtp and kvtp.get("do_remote_decode"))


def wants_remote_prefill(kvtp: dict | None) -> bool:
    return bool(kvtp and kvtp.get("do_remote_prefill"))


class PullClient:
    """The decode side's half of the side channel (one aiohttp session per engine)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def pull(self, kvtp: dict) -> bool:
        """Ask the prefill engine for the blocks named in ``kvtp``; False if unknown, expired or unreachable."""
        host, port = kvtp.get("remote_host"), kvtp.get("remote_port")
        if not host or not port or kvtp.get("remote_request_id") is None:
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {k: kvtp.get(k) for k in ("remote_engine_id", "remote_request_id", "remote_block_ids")}
        try:
            async with self._session.post(f"http://{host}:{port}{PULL_PATH}", json=body) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info("KV pull from %s:%s failed: %s", host, port, exc)
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
