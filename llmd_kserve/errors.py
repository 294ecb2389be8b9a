"""The exception tree: misuse and invalid input raise these; expected failures are values.

    LlmdError                     every error this package raises on purpose
    ├── ConfigError               a bad configuration value or file; ``path`` names the field (CLI: one line, exit 2)
    ├── NoEndpointError           the scheduler found no eligible endpoint (the router answers NoEndpoint)
    ├── ClusterError              Kubernetes unreachable, a CRD missing, RBAC denied
    └── HTTPError                 answered over HTTP as an OpenAI error body; ``status`` and ``type`` say which
        ├── BadRequest      400   malformed request (``InvalidRequestError``: the validators' name for it)
        ├── Unauthorized    401   missing or wrong API key
        ├── NotFound        404   unknown model or resource
        ├── UpstreamFailed  502   every upstream attempt failed before an answer (or a stream broke)
        ├── GatewayTimeout  504   every upstream attempt timed out before its first byte (or a stream went silent)
        └── NoEndpoint      503   no endpoint is eligible for the request
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic


class LlmdError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LlmdError):
    """A configuration file or value is invalid; ``path`` names the bad field (``plugins[2].parameters.weight``)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def openai_error(message: str, type_: str, param: str | None, code: int) -> dict[str, dict[str, object]]:
    """``{"error": {"message", "type", "param", "code"}}``: the one shape of an error body (as vLLM and OpenAI)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class HTTPError(LlmdError):
    """An error answered over HTTP with ``status`` and an OpenAI-shaped body of ``type`` (subclasses fix both;
    ``status``/``type_`` override them for the odd case, e.g. an engine's simulated 500)."""

    status: int = 500
    type: str = "InternalServerError"

    def __init__(self, message: str, param: str | None = None, status: int | None = None,
                 type_: str | None = None) -> None:
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        if type_ is not None:
            self.type = type_
        super().__init__(message)

    def body(self) -> dict[str, dict[str, object]]:
        return openai_error(self.message, self.type, self.param, self.status)


class BadRequest(HTTPError):
    """400: a client request is malformed."""

    status = 400
    type = "BadRequestError"


InvalidRequestError = BadRequest
"""The request validators' name for :class:`BadRequest`."""


class Unauthorized(HTTPError):
    """401: the request has no valid API key."""

    status = 401
    type = "AuthenticationError"


class NotFound(HTTPError):
    """404: the model (or resource) does not exist."""

    status = 404
    type = "NotFoundError"


class UpstreamFailed(HTTPError):
    """502: every upstream attempt failed before an answer could be relayed."""

    status = 502
    type = "BadGatewayError"


class GatewayTimeout(HTTPError):
    """504: every upstream attempt timed out before its first byte, or a stream went silent too long."""

    status = 504
    type = "GatewayTimeoutError"


class NoEndpoint(HTTPError):
    """503: no endpoint is eligible for the request (pool empty, or all filtered out)."""

    status = 503
    type = "ServiceUnavailableError"


class NoEndpointError(LlmdError):
    """No endpoint is eligible for a request (all filtered out, or the pool is empty)."""


class ClusterError(LlmdError):
    """Kubernetes is unreachable, a CRD is missing, or RBAC denied an operation."""


def error_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """``("plugins", 2, "parameters", "threshold")`` -> ``plugins[2].parameters.threshold``; a ``prefix`` ending in
    ``:`` (a file, ``profile.yaml:``) is followed by the field directly, and dropped with no field."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out and not out.endswith(":") else str(part)
    return out.removesuffix(":")


def config_error_from(exc: pydantic.ValidationError, prefix: str = "", what: str = "") -> ConfigError:
    """The first error of a pydantic ValidationError as a ConfigError at ``prefix`` + the field's path (the
    message led by ``what``, e.g. ``bad trace line``, when given)."""
    err = exc.errors()[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"{what}: {err['msg']}{more}" if what else err["msg"] + more,
                       error_path(tuple(err["loc"]), prefix))
