"""The exception tree: misuse and invalid input raise these; expected failures are values."""

from __future__ import annotations


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

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


class NoEndpointError(LlmdError):
    """No endpoint is eligible for a request (all filtered out, or the pool is empty)."""


class ClusterError(LlmdError):
    """Kubernetes is unreachable, a CRD is missing, or RBAC denied an operation."""
