"""The simulated engine's ``POST /v1/responses`` (vLLM's Responses API, text only): stored responses, and
``previous_response_id`` continuing the stored conversation (an unknown id: 404, as vLLM answers)."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from llmd_kserve.engine_sim.driver import frontend_wait
from llmd_kserve.engine_sim.openai_api import json_bytes, parse_generate
from llmd_kserve.errors import HTTPError, InvalidRequestError, NotFound
from llmd_kserve.http_errors import error_response

if TYPE_CHECKING:
    from llmd_kserve.engine_sim.server import EngineServer

MAX_STORED = 10_000
"""Stored responses kept (oldest forgotten first)."""
_decode = msgspec.json.Decoder().decode


def _input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = body.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise InvalidRequestError("'input' must be a string or a non-empty list of items", param="input")
    out = []
    for item in items:
        content = item.get("content")
        if isinstance(content, list):  # input_text / output_text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": item.get("role") or "user", "content": content if isinstance(content, str) else ""})
    return out


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + json_bytes({"type": kind, "sequence_number": seq, **fields}) \
        + b"\n\n"


class ResponsesAPI:
    """``/v1/responses`` of one engine; ``stored``: response id -> the conversation up to and including it."""

    def __init__(self, eng: EngineServer) -> None:
        self.eng = eng
        self.stored: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except HTTPError as exc:
            return error_response(exc)

    def _conversation(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        prev = body.get("previous_response_id")
        history: list[dict[str, Any]] = []
        if prev is not None:
            if not isinstance(prev, str):
                raise InvalidRequestError("'previous_response_id' must be a string", param="previous_response_id")
            found = self.stored.get(prev)
            if found is None:
                raise NotFound(f"Response with id '{prev}' not found.", "response_id", type_="invalid_request_error")
            history = list(found)
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise InvalidRequestError("'instructions' must be a string", param="instructions")
        system = [{"role": "system", "content": instructions}] if instructions else []
        return system + [m for m in history if m["role"] != "system" or not system] + _input_messages(body)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        eng = self.eng
        try:
            body = _decode(await request.read())
        except msgspec.DecodeError as exc:
            raise InvalidRequestError(f"JSON decode error: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidRequestError("request body must be a JSON object")
        if not eng.ready():
            raise HTTPError("engine is starting", status=503, type_="ServiceUnavailable")
        eng.n_requests += 1
        messages = self._conversation(body)
        chat = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_output_tokens")}
        req = parse_generate(chat, "chat", model=eng.opts.model, tok=eng.tok, max_model_len=eng.core.max_model_len,
                             default_output_len=eng.opts.default_output_len)
        if eng.opts.time_scale > 0:
            await frontend_wait(eng.frontend, len(req.prompts[0]), eng.opts.time_scale)
        rid = f"resp_{uuid.uuid4().hex}"
        cid = eng.core_id(rid, 0)
        s = eng.submit(cid, req.prompts[0], req)
        stream = body.get("stream") is True
        resp: web.StreamResponse | None = None
        seq = 0
        head = {"id": rid, "object": "response", "created_at": int(time.time()), "model": req.model,
                "status": "in_progress", "output": [], "previous_response_id": body.get("previous_response_id")}
        text: list[str] = []
        try:
            if stream:
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                   "Cache-Control": "no-cache"})
                await resp.prepare(request)
                await resp.write(_event("response.created", seq, response=head))
            while toks := await s.next_batch():
                pieces = [eng.tok.decode([t]) for t in toks]
                text.extend(pieces)
                if resp is not None:
                    await resp.write(b"".join(_event("response.output_text.delta", seq := seq + 1, item_id=f"msg_{rid}",
                                                     output_index=0, content_index=0, delta=p) for p in pieces))
        finally:
            if s.finish_reason is None:
                eng.abort(cid)
        answer = "".join(text)
        if body.get("store", True) is not False:
            self.stored[rid] = [*messages, {"role": "assistant", "content": answer}]
            while len(self.stored) > MAX_STORED:
                self.stored.popitem(last=False)
        n_out = len(s.tokens)
        done = {**head, "status": "completed", "output": [{
            "id": f"msg_{rid}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": answer, "annotations": []}]}],
            "usage": {"input_tokens": len(req.prompts[0]), "output_tokens": n_out,
                      "total_tokens": len(req.prompts[0]) + n_out,
                      "input_tokens_details": {"cached_tokens": s.cached_tokens}}}
        if resp is None:
            return web.Response(body=json_bytes(done), content_type="application/json")
        await resp.write(_event("response.completed", seq + 1, response=done))
        await resp.write_eof()
        return resp
