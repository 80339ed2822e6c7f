"""How failures become HTTP answers: always JSON `{"detail": "<one line>"}`, never a traceback.

A client's mistake (bad JSON, an invalid manifest, a stale version, a missing object) must never surface as a
5xx: storage errors carry their own HTTP status, manifest errors are 422, request-shape errors are 422 with
the offending parameter named. Only genuine server bugs answer 500, with a generic message (the details go
to the server log, not to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shipyard.resources import ManifestError
from shipyard.resources.manifest import format_loc
from shipyard.store import StoreError

log = logging.getLogger("shipyard.api")


class BodyTooLarge(Exception):
    """Raised while reading a request body that exceeds the limit (the Content-Length header can lie)."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"request body exceeds {limit >> 20} MiB")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def validation_detail(errors: list[Any]) -> str:
    """Summarise pydantic/FastAPI errors as one line naming the first offending location."""
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] in ("query", "path", "header", "body"):
        where = f"{loc[0]} parameter {format_loc(loc[1:])}" if len(loc) > 1 else loc[0]
    else:
        where = format_loc(loc)
    message = one_line(first.get("msg", "invalid"))
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {message}{suffix}" if where else f"{message}{suffix}"


def error_response(status: int, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": one_line(detail), **extra}, status_code=status, headers=headers)


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status", 500)
    if status >= 500:
        log.error("store failure: %s", exc)
        return error_response(status, "storage error; see the server log")
    return error_response(status, str(exc) or type(exc).__name__)


async def _manifest_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ManifestError)
    return error_response(422, str(exc), errors=[exc.to_dict()])


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, validation_detail(list(exc.errors())))


async def _body_too_large(_: Request, exc: Exception) -> JSONResponse:
    return error_response(413, str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal server error; see the server log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(ManifestError, _manifest_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(Exception, _unexpected)
