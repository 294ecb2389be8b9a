"""The exception tree: misuse and invalid input raise these; expected failures are values."""

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


class InvalidRequestError(LlmdError):
    """A client request is malformed; rendered as an OpenAI-shaped 4xx body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, type_: str = "BadRequestError"):
        self.message = message
        self.param = param
        self.status = status
        self.type = type_
        super().__init__(message)

    def body(self) -> dict[str, dict[str, object]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


class NoEndpointError(LlmdError):
    """No endpoint is eligible for a request (all filtered out, or the pool is empty)."""


class ClusterError(LlmdError):
    """Kubernetes is unreachable, a CRD is missing, or RBAC denied an operation."""


def error_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """``("plugins", 2, "parameters", "threshold")`` -> ``plugins[2].parameters.threshold``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def config_error_from(exc: pydantic.ValidationError, prefix: str = "") -> ConfigError:
    """The first error of a pydantic ValidationError as a ConfigError at ``prefix`` + the field's path."""
    err = exc.errors()[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(err["msg"] + more, error_path(tuple(err["loc"]), prefix))
