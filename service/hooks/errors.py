"""Error answers: always a FHIR OperationOutcome body, never a stack trace or a token."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class HookError(Exception):
    """An error with an HTTP status and a message safe to show the caller."""

    def __init__(self, status: int, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def operation_outcome(message: str, code: str = "invalid", severity: str = "error") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}],
    }


def error_response(status: int, message: str, code: str = "invalid", headers: dict | None = None) -> JSONResponse:
    return JSONResponse(operation_outcome(message, code), status_code=status, headers=headers)


def hook_error_response(exc: HookError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.message, exc.code, headers)
