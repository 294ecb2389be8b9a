"""One generation request's lifecycle on the simulated engine: P/D handshake, streaming or whole response, stops."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from llmd_kserve.engine_sim import pd
from llmd_kserve.engine_sim.driver import Stream, frontend_wait
from llmd_kserve.engine_sim.openai_api import ChunkWriter, GenRequest, chat_body, completion_body, json_bytes, usage
from llmd_kserve.errors import InvalidRequestError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from llmd_kserve.engine_sim.server import EngineServer


class _Text:
    """Detokenizes a stream incrementally and applies ``stop`` strings (excluded from the output, as vLLM does)."""

    __slots__ = ("tok", "stop", "acc", "stop_hit", "maxlen")

    def __init__(self, tok, stop: tuple[str, ...]) -> None:  # noqa: ANN001 - Tokenizer
        self.tok, self.stop, self.acc, self.stop_hit = tok, stop, "", None
        self.maxlen = max((len(s) for s in stop), default=0)

    def feed(self, tokens: list[int]) -> list[str]:
        """Text pieces for ``tokens`` (one per token, cut at a stop string; later tokens dropped)."""
        pieces = [self.tok.decode([t]) for t in tokens]
        if not self.stop:
            return pieces
        out: list[str] = []
        for p in pieces:
            before = len(self.acc)
            self.acc += p
            start = max(0, before - self.maxlen + 1)
            hits = [(i, s) for s in self.stop if (i := self.acc.find(s, start)) >= 0]
            if hits:
                idx, s = min(hits)
                self.stop_hit = s
                out.append(self.acc[before:idx] if idx > before else "")
                self.acc = self.acc[:max(idx, before)]
                break
            out.append(p)
        return out


async def generate(eng: EngineServer, request: web.Request, req: GenRequest, rid: str, base: str) -> web.StreamResponse:
    """Run ``req`` on ``eng`` and answer it (validation already done); InvalidRequestError before anything is sent."""
    created = int(time.time())
    kvtp = req.kv_transfer_params if eng.opts.kv_connector else None
    prefill_side, decode_side = pd.wants_remote_decode(kvtp), pd.wants_remote_prefill(kvtp)
    if (prefill_side or decode_side) and len(req.prompts) != 1:
        raise InvalidRequestError("kv_transfer_params need a single prompt", param="prompt")
    scale = eng.opts.time_scale
    if scale > 0:  # the server's front end: HTTP, validation, block hashing (engine_sim.frontend)
        await frontend_wait(eng.frontend, sum(map(len, req.prompts)), scale)
    # vLLM 0.32 (OutputProcessor): a decode reports the prefill engine's cached tokens, passed in kv_transfer_params
    cached_override = pd.peer_cached_tokens(kvtp) if decode_side and eng.core.vllm_version == "0.32" else None
    remote_kv = False
    if decode_side:
        remote_kv = await eng.pull.pull(kvtp)  # type: ignore[arg-type]
        if remote_kv:
            prompt = req.prompts[0]
            t = eng.profile.kv_transfer_time(len(prompt) - eng.core.cached_prefix_tokens(prompt),
                                             eng.opts.kv_link_gbps)
            eng.metrics.xfer.observe(t)
            if scale > 0:
                await asyncio.sleep(t * scale)
        else:
            eng.metrics.failed_transfers += 1
    try:
        subs = []
        for i, p in enumerate(req.prompts):
            cid = eng.core_id(base, i)
            subs.append((cid, eng.submit(cid, p, req, hold_on_finish=prefill_side, remote_kv=remote_kv)))
    except ValueError as exc:
        for cid, _s in subs:
            eng.abort(cid)
        raise InvalidRequestError(str(exc)) from exc
    texts = [_Text(eng.tok, req.stop) for _ in subs]
    try:
        if req.stream:
            return await _stream(eng, request, req, rid, base, created, subs, texts, cached_override)
        pieces = await asyncio.gather(*(_collect(eng, cid, s, t) for (cid, s), t in zip(subs, texts, strict=True)))
    finally:
        for cid, s in subs:
            if s.finish_reason is None:
                eng.abort(cid)
    out_kvtp = None
    if prefill_side:
        cid, s = subs[0]
        blocks = eng.core.held_blocks(cid)
        if blocks is not None:
            eng.hold(cid)
            host = eng.url.removeprefix("http://").rsplit(":", 1)[0]
            out_kvtp = pd.prefill_response_params(block_ids=blocks, engine_id=eng.engine_id, request_id=cid,
                                                  host=host, port=eng.port)
            if eng.core.vllm_version == "0.32":  # Scheduler.update_from_output: this engine's hits, for the decode
                out_kvtp[pd.PEER_CACHED] = s.cached_tokens
    use = _usage(req, subs, cached_override)
    choices = [("".join(p), _reason(s, t), t.stop_hit) for p, (_c, s), t in zip(pieces, subs, texts, strict=True)]
    if req.kind == "completion":
        body = completion_body(rid, created, req.model, choices, use, out_kvtp)
    else:
        text, fin, sr = choices[0]
        body = chat_body(rid, created, req.model, text, fin, sr, use, out_kvtp)
    return web.Response(body=json_bytes(body), content_type="application/json", headers={"x-request-id": base})


def _reason(s: Stream, t: _Text) -> str:
    return "stop" if t.stop_hit is not None else (s.finish_reason or "abort")


def _usage(req: GenRequest, subs: list[tuple[str, Stream]], cached: int | None = None) -> dict:
    """``usage`` of the answer; ``cached``: the cached tokens to report instead of the engine's own."""
    n_prompt = sum(len(p) for p in req.prompts)
    n_out = sum(len(s.tokens) for _c, s in subs)
    return usage(n_prompt, n_out, sum(s.cached_tokens for _c, s in subs) if cached is None else cached)


async def _collect(eng: EngineServer, cid: str, s: Stream, t: _Text) -> list[str]:
    out: list[str] = []
    while True:
        toks = await s.next_batch()
        if not toks:
            return out
        out.extend(t.feed(toks))
        if t.stop_hit is not None:
            eng.abort(cid, reason="stop")
            return out


async def _stream(eng: EngineServer, request: web.Request, req: GenRequest, rid: str, base: str, created: int,
                  subs: list[tuple[str, Stream]], texts: list[_Text], cached: int | None) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache", "x-request-id": base})
    await resp.prepare(request)
    w = ChunkWriter(req.kind, rid, created, req.model)
    if req.kind == "chat":
        await resp.write(w.role())

    async def pump(index: int, cid: str, s: Stream, t: _Text) -> None:
        while True:
            toks = await s.next_batch()
            if not toks:  # ended without a token in hand (abort): close the choice
                await resp.write(w.token(index, "", s.finish_reason or "abort"))
                return
            pieces = t.feed(toks)
            if t.stop_hit is not None:
                eng.abort(cid, reason="stop")
                chunks = [w.token(index, p) for p in pieces[:-1]]
                chunks.append(w.token(index, pieces[-1], "stop", t.stop_hit))
                await resp.write(b"".join(chunks))
                return
            last = len(pieces) - 1 if s.finish_reason is not None else -1
            await resp.write(b"".join(w.token(index, p, s.finish_reason if i == last else None)
                                      for i, p in enumerate(pieces)))
            if last >= 0:
                return

    try:
        await asyncio.gather(*(pump(i, cid, s, t) for i, ((cid, s), t) in enumerate(zip(subs, texts, strict=True))))
        if req.include_usage:
            await resp.write(w.usage(_usage(req, subs, cached)))
        await resp.write(ChunkWriter.DONE)
        await resp.write_eof()
    except ConnectionResetError:  # the client went away mid-stream: the caller aborts what is left
        log.debug("request %s: client disconnected mid-stream", rid)
    return resp
