"""The API's one error type, answered as ``{"error": code, "detail": sentence}``.

::

    RunfoldError
    └── ApiError      an HTTP error answer: status, stable code, a sentence for people
"""

from __future__ import annotations

from typing import Any

from schemas.errors import RunfoldError

__all__ = ["ApiError"]


class ApiError(RunfoldError):
    """An error the API answers with ``status`` and a JSON body naming what was wrong."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON answer."""
        return {"error": self.code, "detail": self.detail, **self.extra}
