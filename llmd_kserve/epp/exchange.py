"""One ext_proc stream (one HTTP request through Envoy) as a state machine: ProcessingRequest in, responses out.

In ``full`` and ``headers`` modes the request side runs in ``FULL_DUPLEX_STREAMED``: body chunks are collected
until the body ends (nothing is sent back meanwhile), then the pick goes out as the request-headers response (with
the new ``content-length``), followed by the body the picker admitted, in chunks: the EPP's own encoding, never the
client's bytes. A body over ``offload_bytes`` is admitted by the caller off the event loop
(:attr:`Exchange.admission_due`, then :meth:`Exchange.admitted`). The response side runs in one of three modes:

* ``full`` — response bodies stream through the EPP (``FULL_DUPLEX_STREAMED``): every chunk is handed straight back,
  the tail is kept to read ``usage`` (SSE or JSON), and the request completes at the body's end;
* ``headers`` — no response body crosses gRPC, and our Envoy config does not send response headers either
  (``EnvoyConfig.response_headers``): cheaper, no ``usage``, no status; the request completes at the trailers or when
  Envoy closes the stream at the end of the HTTP exchange. Response headers that do arrive are read as in ``full``
  (status, ``x-llmd-endpoint``, and a P/D pick's prefill endpoint released there rather than at the end);
* ``none`` — two round trips per request and nothing of the response: the request headers are answered at once
  with no change, the request body comes whole (``BUFFERED``) and its answer carries the pick (header, metadata,
  new body). Envoy keeps the stream open until the HTTP exchange ends and then closes it: the request completes
  there, as in ``headers``.

Pure apart from the picker it calls: no gRPC here, so the whole protocol is testable with plain messages.
"""

from __future__ import annotations

import logging
from typing import Literal

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from llmd_kserve.control.usage import parse_usage
from llmd_kserve.epp import protocol
from llmd_kserve.epp.picker import Admitted, EndpointPicker, Pick, Reject

log = logging.getLogger(__name__)
ResponseMode = Literal["full", "headers", "none"]
RESPONSE_MODES: tuple[ResponseMode, ...] = ("full", "headers", "none")
_TAIL = 16_384
_JSON_KEEP = 1 << 20


def usage_from_body(body: bytes, sse: bool) -> object | None:
    """``usage`` of a JSON body, or of the last SSE ``data:`` event that carries one."""
    if not sse:
        return parse_usage(body)
    idx = body.rfind(b'"usage"')
    start = body.rfind(b"data:", 0, idx) if idx >= 0 else -1
    if start < 0:
        return None
    end = body.find(b"\n", idx)
    return parse_usage(body[start + 5:end if end >= 0 else len(body)].strip())


class Exchange:
    """Feed each ``ProcessingRequest`` to :meth:`handle`; send back what it returns, in order; call :meth:`close`
    when the stream ends for any reason."""

    def __init__(self, picker: EndpointPicker, *, response_mode: ResponseMode = "full",
                 max_body_bytes: int = 16 << 20, offload_bytes: int | None = None) -> None:
        self.picker = picker
        self.response_mode = response_mode
        self.max_body_bytes = max_body_bytes
        self.offload_bytes = offload_bytes
        self.admission_due = False
        """The body is complete and over ``offload_bytes``: run ``picker.admit(headers, body)`` (in a thread) and
        hand its answer to :meth:`admitted`."""
        self._due_eos = True
        self._after: list[pb.ProcessingResponse] = []
        self.headers: dict[str, str] = {}
        self.metadata: dict[str, dict] = {}
        self.pick: Pick | None = None
        self.status: int | None = None
        self.served: str | None = None
        self._body = bytearray()
        self._sse = False
        self._resp_tail = bytearray()
        self._picked_sent = False
        self.headers_only_request = False

    # --- request side -------------------------------------------------------------------------------------------
    @property
    def body(self) -> bytes:
        """The request body received so far."""
        return bytes(self._body)

    def _decide(self, end_of_stream: bool, admitted: Admitted | Reject | None = None) -> list[pb.ProcessingResponse]:
        if admitted is None and self.offload_bytes is not None and len(self._body) > self.offload_bytes:
            self.admission_due, self._due_eos = True, end_of_stream
            return []
        self.admission_due = False
        buffered = self.response_mode == "none" and not self.headers_only_request
        subset = protocol.subset_hint(self.metadata)
        result = self.picker.pick(self.headers, bytes(self._body), subset, admitted)
        if isinstance(result, Reject):
            log.info("request %s rejected: %d %s", self.headers.get("x-request-id", "-"), result.status, result.reason)
            self._picked_sent = True
            return [protocol.immediate_response(result.status, result.body(),
                                                {protocol.REASON_HEADER: result.reason, **result.headers},
                                                result.reason)]
        self.pick = result
        body = bytes(self._body) if result.body is None else result.body
        extra = {}
        if result.body is not None and not self.headers_only_request:
            extra["content-length"] = str(len(body))
        if result.prefill is not None:
            extra[protocol.PREFILL_HEADER] = protocol.host_port(result.prefill)
        remove = [] if result.prefill is not None else [protocol.PREFILL_HEADER]
        self._picked_sent = True
        self._body = bytearray()
        if buffered:  # the answer to the whole body: header, metadata and (the EPP's) body in one message
            return [protocol.request_body_response(protocol.host_port(result.target), result.body, extra, remove,
                                                   endpoint=result.target)]
        out = [protocol.request_headers_response(protocol.host_port(result.target), extra, remove,
                                                 endpoint=result.target)]
        if not self.headers_only_request:
            out += protocol.body_chunks(body, response=False, end_of_stream=end_of_stream)
        return out

    def admitted(self, answer: Admitted | Reject) -> list[pb.ProcessingResponse]:
        """Finish a decision left pending by :attr:`admission_due` with ``picker.admit``'s answer."""
        if not self.admission_due:
            raise RuntimeError("no admission is pending")
        after, self._after = self._after, []
        return [*self._decide(self._due_eos, answer), *after]

    def _request_headers(self, msg: pb.HttpHeaders, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self.headers = protocol.header_map(msg)
        self.metadata = protocol.filter_metadata(req)
        if msg.end_of_stream:  # no body (GET): decide now
            self.headers_only_request = True
            return self._decide(True)
        return [protocol.headers_continue()] if self.response_mode == "none" else []

    def _request_body(self, msg: pb.HttpBody) -> list[pb.ProcessingResponse]:
        if self._picked_sent or self.admission_due:  # late chunks of a rejected or decided request: nothing to add
            return []
        self._body += msg.body
        if len(self._body) > self.max_body_bytes:
            self._picked_sent = True
            reject = Reject(413, "body_too_large", f"Request body exceeds {self.max_body_bytes} bytes.")
            return [protocol.immediate_response(413, reject.body(), {protocol.REASON_HEADER: reject.reason})]
        if self.response_mode == "none":  # BUFFERED: the whole body in this one message
            return self._decide(True)
        return self._decide(True) if msg.end_of_stream else []

    # --- response side ------------------------------------------------------------------------------------------
    def _response_headers(self, msg: pb.HttpHeaders, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self.status, content_type = protocol.response_status(msg)
        self.served = protocol.served_endpoint(req)
        self._sse = content_type.startswith("text/event-stream")
        if self.pick is None:
            return [protocol.response_headers_response()]
        self.picker.response_started(self.pick, self.status)
        if msg.end_of_stream:
            self._finish(self.status < 400)
        return [protocol.endpoint_header_response(self.pick.target)]

    def _response_body(self, msg: pb.HttpBody) -> list[pb.ProcessingResponse]:
        chunk = msg.body
        ticket = self.pick.ticket if self.pick is not None else None
        if ticket is not None and ticket.observe is not None:
            ticket.observe(chunk)
        if self._sse:
            self._resp_tail += chunk
            if len(self._resp_tail) > 2 * _TAIL:
                del self._resp_tail[:-_TAIL]
        elif len(self._resp_tail) + len(chunk) <= _JSON_KEEP:
            self._resp_tail += chunk
        out = protocol.body_chunks(chunk, response=True, end_of_stream=msg.end_of_stream)
        if msg.end_of_stream:
            self._finish(self.status is not None and self.status < 400)
        return out

    def _finish(self, ok: bool, outcome: str | None = None) -> None:
        if self.pick is None or self.pick.done:
            return
        usage = usage_from_body(bytes(self._resp_tail), self._sse) if ok and self._resp_tail else None
        self.picker.complete(self.pick, ok=ok, usage=usage, served=self.served, outcome=outcome)

    # --- dispatch -----------------------------------------------------------------------------------------------
    def handle(self, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        which = req.WhichOneof("request")
        if which == "request_headers":
            return self._request_headers(req.request_headers, req)
        if which == "request_body":
            return self._request_body(req.request_body)
        if which == "request_trailers":
            if self._picked_sent or self.admission_due:
                return [protocol.trailers_response(False)]
            out = self._decide(False)
            if self.admission_due:  # the trailers' answer goes after the decision's
                self._after = [protocol.trailers_response(False)]
                return []
            return [*out, protocol.trailers_response(False)]
        if which == "response_headers":
            return self._response_headers(req.response_headers, req)
        if which == "response_body":
            return self._response_body(req.response_body)
        if which == "response_trailers":
            self._finish(self.status is not None and self.status < 400)
            return [protocol.trailers_response(True)]
        return []

    def close(self, cancelled: bool = False) -> None:
        """The stream ended: a request still open completes now (in ``headers`` mode this is the normal end)."""
        if self.pick is None or self.pick.done:
            return
        # headers and none modes: Envoy ends (cancels) the stream when the HTTP exchange is over; without response
        # headers (the default in these modes) the status is unknown, and the exchange's end counts as ok
        if self.response_mode != "full":
            self._finish(self.status is None or self.status < 400)
        else:
            self._finish(False, "client_disconnected" if self.status is not None else "aborted")
