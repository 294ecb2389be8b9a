"""The paths a gateway lets through to the engines (the OpenAI API and health); every other path is answered 404.

No dependencies: the EPP, Envoy's bootstrap and the rendered HTTPRoute all read these.
"""

from __future__ import annotations

from typing import Literal

INFERENCE_PATHS: dict[str, Literal["completion", "chat", "responses"]] = {
    "/v1/completions": "completion", "/v1/chat/completions": "chat", "/v1/responses": "responses"}
"""Scheduled by the EPP, after the router's validation and limits."""
OTHER_PATHS = ("/v1/models", "/health")
"""Relayed to any endpoint as they came."""
ALLOWED_PATHS = (*INFERENCE_PATHS, *OTHER_PATHS)
NOT_FOUND_MESSAGE = "Not found: this gateway serves " + ", ".join(ALLOWED_PATHS) + "."
