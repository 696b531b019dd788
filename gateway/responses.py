"""The gateway's JSON response: orjson, and a ``timestamp`` in every body."""

from typing import Any

import orjson
from starlette.responses import JSONResponse

from gateway.codec import now_text


class JsonResponse(JSONResponse):
    """A JSON response written by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def respond(
    content: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None
) -> JsonResponse:
    """``content`` as JSON, its ``timestamp`` filled with the current time when unset."""
    if not content.get("timestamp"):
        content["timestamp"] = now_text()
    return JsonResponse(content, status_code=status_code, headers=headers)
