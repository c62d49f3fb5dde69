"""Plain typed request builders."""

from typing import Any


def memory_body(content: str, namespace: str = "agent-1", **fields: Any) -> dict[str, Any]:
    return {"namespace": namespace, "content": content, **fields}


def assert_error(body: dict[str, Any], error_type: str) -> dict[str, Any]:
    """Check the one error shape every 4xx/5xx has; return the error object."""
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message", "details"}, error
    assert error["type"] == error_type, error
    assert isinstance(error["message"], str) and error["message"]
    return error
