"""The Endpoint Picker Protocol on the wire: header and metadata names, ext_proc response builders, subset parsing.

Gateway API Inference Extension, ``docs/proposals/004-endpoint-picker-protocol``:

* the data plane MAY restrict the pick to a subset: filter metadata ``envoy.lb.subset_hint`` →
  ``x-gateway-destination-endpoint-subset``, a list of ``ip[:port]`` or one comma-separated string; an empty or
  wholly ineligible subset is answered 503;
* the EPP names the pick twice, with the same value: request header ``x-gateway-destination-endpoint`` and dynamic
  metadata ``envoy.lb`` → ``x-gateway-destination-endpoint`` (``ip:port``), clearing the route cache;
* no ready endpoint → ImmediateResponse 503; a request to drop (shed) → 429;
* on the response, ``envoy.lb`` → ``x-gateway-destination-endpoint-served`` names the endpoint that served it.

In ``FULL_DUPLEX_STREAMED`` body mode the processor owns the body: it sends it back as ``streamed_response``
chunks, each at most :data:`BODY_CHUNK_LIMIT` bytes (Envoy takes 64 KiB per message; GIE keeps a margin). In
``BUFFERED`` body mode (the ``none`` response mode) the whole body comes in one message and the pick goes back as its
answer (:func:`request_body_response`): header, metadata and the new body together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format

DESTINATION_HEADER = "x-gateway-destination-endpoint"
DESTINATION_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
SERVED_KEY = "x-gateway-destination-endpoint-served"
PREFILL_HEADER = "x-prefiller-host-port"
"""llm-d's header: the prefill endpoint the decode side's sidecar runs step 1 against (set only by the EPP)."""
REASON_HEADER = "x-llmd-reject-reason"
ENDPOINT_HEADER = "x-llmd-endpoint"
BODY_CHUNK_LIMIT = 62_000
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
PICK_PREFIX = "/pick"
"""The HTTP pick (``epp.http_pick``): the path prefix Envoy's ``ext_authz`` puts before the client's path."""


def host_port(endpoint_id: str) -> str:
    """``http://10.0.0.5:8000`` → ``10.0.0.5:8000`` (the form Envoy's ORIGINAL_DST cluster reads)."""
    parts = urlsplit(endpoint_id)
    return parts.netloc or endpoint_id


def header_map(headers: pb.HttpHeaders) -> dict[str, str]:
    """Envoy's header list as a dict of lower-case names (``raw_value`` preferred, as Envoy fills it)."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        key = h.key.lower()
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def response_status(headers: pb.HttpHeaders) -> tuple[int, str]:
    """``:status`` (0 when missing or not a number) and ``content-type`` of response headers, nothing else decoded."""
    status, ctype = 0, ""
    for h in headers.headers.headers:
        key = h.key
        if key == ":status":
            value = h.raw_value or h.value.encode()
            status = int(value) if value.isdigit() else 0
        elif key.lower() == "content-type":
            ctype = (h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value).lower()
    return status, ctype


def filter_metadata(req: pb.ProcessingRequest) -> dict[str, dict[str, Any]]:
    """``metadata_context.filter_metadata`` as plain dicts (namespace → key → value); ``{}`` without converting
    anything when there is none (the usual case on the request path)."""
    namespaces = req.metadata_context.filter_metadata
    if not namespaces:
        return {}
    return {ns: json_format.MessageToDict(s) for ns, s in namespaces.items()}


def subset_hint(metadata: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...] | None:
    """The subset the data plane allows (``ip`` or ``ip:port`` items), or None when no hint was given.

    Accepts a list (control planes, test harnesses) or one comma-separated string (header-to-metadata rules);
    list items may themselves hold commas. An empty tuple means "a hint was given, and it is empty" (→ 503).
    """
    ns = metadata.get(SUBSET_NAMESPACE)
    if not isinstance(ns, Mapping) or SUBSET_KEY not in ns:
        return None
    value = ns[SUBSET_KEY]
    items: Iterable[Any] = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out += [p.strip() for p in item.split(",") if p.strip()]
    return tuple(out)


def in_subset(endpoint_id: str, subset: Sequence[str]) -> bool:
    """Whether an endpoint matches a subset item: ``ip:port`` exactly, or a bare ``ip`` (every port of that IP)."""
    hp = host_port(endpoint_id)
    host = hp.rsplit(":", 1)[0]
    return any(item in (hp, host) for item in subset)


def served_endpoint(req: pb.ProcessingRequest) -> str | None:
    """``envoy.lb`` → ``x-gateway-destination-endpoint-served`` of a message's metadata (read in place), if any."""
    namespaces = req.metadata_context.filter_metadata
    if DESTINATION_NAMESPACE not in namespaces:
        return None
    fields = namespaces[DESTINATION_NAMESPACE].fields
    if SERVED_KEY not in fields:
        return None
    return fields[SERVED_KEY].string_value or None


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                                      append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def _pick_common(destination: str, headers: Mapping[str, str], remove: Sequence[str],
                 body: bytes | None = None) -> pb.CommonResponse:
    mutation = pb.HeaderMutation(set_headers=[_header(DESTINATION_HEADER, destination),
                                              *(_header(k, v) for k, v in headers.items())],
                                 remove_headers=list(remove))
    common = pb.CommonResponse(header_mutation=mutation, clear_route_cache=True)
    if body is not None:
        common.body_mutation.body = body
    return common


def _name_pick(out: pb.ProcessingResponse, destination: str, endpoint: str | None) -> pb.ProcessingResponse:
    fields = out.dynamic_metadata.fields[DESTINATION_NAMESPACE].struct_value.fields
    fields[DESTINATION_HEADER].string_value = destination
    if endpoint is not None:
        fields[ENDPOINT_HEADER].string_value = endpoint
    return out


def request_headers_response(destination: str, headers: Mapping[str, str] = {}, remove: Sequence[str] = (), *,
                             endpoint: str | None = None) -> pb.ProcessingResponse:
    """The pick: ``x-gateway-destination-endpoint`` header and ``envoy.lb`` metadata (one value), route cache cleared;
    ``endpoint``: also ``envoy.lb`` → ``x-llmd-endpoint`` (our Envoy's routes copy it into the response)."""
    out = pb.ProcessingResponse(request_headers=pb.HeadersResponse(
        response=_pick_common(destination, headers, remove)))
    return _name_pick(out, destination, endpoint)


def request_body_response(destination: str, body: bytes | None, headers: Mapping[str, str] = {},
                          remove: Sequence[str] = (), *, endpoint: str | None = None) -> pb.ProcessingResponse:
    """The pick as the answer to a ``BUFFERED`` request body: the same header and metadata as
    :func:`request_headers_response` (Envoy still holds the request headers, so they can change and the route is
    chosen anew), and ``body`` in place of the client's (``None``: the client's, unchanged)."""
    out = pb.ProcessingResponse(request_body=pb.BodyResponse(
        response=_pick_common(destination, headers, remove, body)))
    return _name_pick(out, destination, endpoint)


_HEADERS_CONTINUE = pb.ProcessingResponse(request_headers=pb.HeadersResponse())


def headers_continue() -> pb.ProcessingResponse:
    """The (shared, never mutated) answer to request headers when the pick waits for the buffered body: no change."""
    return _HEADERS_CONTINUE


def body_chunk(piece: bytes, *, response: bool, end_of_stream: bool) -> pb.ProcessingResponse:
    """One ``streamed_response`` body message (``piece`` at most :data:`BODY_CHUNK_LIMIT` bytes)."""
    mutation = pb.BodyMutation(streamed_response=pb.StreamedBodyResponse(body=piece, end_of_stream=end_of_stream))
    common = pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation))
    return pb.ProcessingResponse(response_body=common) if response else pb.ProcessingResponse(request_body=common)


def body_chunks(body: bytes, *, response: bool, end_of_stream: bool = True,
                limit: int = BODY_CHUNK_LIMIT) -> list[pb.ProcessingResponse]:
    """``body`` handed back in ``streamed_response`` chunks of at most ``limit`` bytes (one, possibly empty,
    when ``body`` is short); the last one carries ``end_of_stream``."""
    if len(body) <= limit:  # the usual case, without slicing
        return [body_chunk(body, response=response, end_of_stream=end_of_stream)]
    last = (len(body) - 1) // limit * limit
    return [body_chunk(body[i:i + limit], response=response, end_of_stream=end_of_stream and i == last)
            for i in range(0, len(body), limit)]


def response_headers_response(headers: Mapping[str, str] = {}) -> pb.ProcessingResponse:
    mutation = pb.HeaderMutation(set_headers=[_header(k, v) for k, v in headers.items()])
    return pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=pb.CommonResponse(
        header_mutation=mutation)))


@lru_cache(maxsize=1024)
def endpoint_header_response(endpoint: str) -> pb.ProcessingResponse:
    """The response-headers answer that names the endpoint in ``x-llmd-endpoint``: built once per endpoint (shared:
    never mutate it)."""
    return response_headers_response({ENDPOINT_HEADER: endpoint})


_TRAILERS = {True: pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
             False: pb.ProcessingResponse(request_trailers=pb.TrailersResponse())}


def trailers_response(response: bool) -> pb.ProcessingResponse:
    """The (shared, never mutated) answer to response or request trailers: nothing to change."""
    return _TRAILERS[response]


def immediate_response(status: int, body: bytes, headers: Mapping[str, str] = {},
                       details: str = "") -> pb.ProcessingResponse:
    """Answer the client directly (Envoy does not call any upstream): 4xx/5xx with an OpenAI-shaped JSON body."""
    mutation = pb.HeaderMutation(set_headers=[_header("content-type", "application/json"),
                                              *(_header(k, v) for k, v in headers.items())])
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status), headers=mutation, body=body, details=details))
