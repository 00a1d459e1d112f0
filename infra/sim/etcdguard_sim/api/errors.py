"""`Status` failures of the simulated API server, worded as the real kube-apiserver words them.

`ApiError` carries the whole `Status` object; the HTTP layer answers with its `code`. The
constructors below mirror apimachinery's `errors.New*` functions:

    not_found            404 NotFound            pods "x" not found
    already_exists       409 AlreadyExists       pods "x" already exists
    conflict             409 Conflict            Operation cannot be fulfilled on ...: <why>
    invalid              422 Invalid             Pod "x" is invalid: <field>: <detail>
    bad_request          400 BadRequest
    unsupported_media    415 UnsupportedMediaType
    method_not_allowed   405 MethodNotAllowed
    unauthorized         401 Unauthorized
    unavailable          503 ServiceUnavailable  (etcd has no quorum / no member answered)
    internal             500 InternalError
"""

from __future__ import annotations

from typing import Any

from etcdguard_sim.api import resources

__all__ = [
    "CONFLICT_MODIFIED",
    "ApiError",
    "already_exists",
    "bad_request",
    "conflict",
    "internal",
    "invalid",
    "method_not_allowed",
    "not_found",
    "status_success",
    "unauthorized",
    "unavailable",
    "unsupported_media",
]

CONFLICT_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


class ApiError(Exception):
    """A request that fails with a Kubernetes `Status` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = details


def _details(res: resources.Resource, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if res.group:
        out["group"] = res.group
    out["kind"] = res.plural
    return out


def not_found(res: resources.Resource | None, name: str = "") -> ApiError:
    if res is None:
        return ApiError(404, "NotFound", "the server could not find the requested resource", details={})
    return ApiError(404, "NotFound", f'{res.group_resource} "{name}" not found', details=_details(res, name))


def already_exists(res: resources.Resource, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{res.group_resource} "{name}" already exists', details=_details(res, name)
    )


def conflict(res: resources.Resource, name: str, why: str = CONFLICT_MODIFIED) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.group_resource} "{name}": {why}',
        details=_details(res, name),
    )


def invalid(res: resources.Resource, name: str, *, field: str, cause: str, detail: str) -> ApiError:
    """422 Invalid; `cause` is a CauseType such as FieldValueRequired or FieldValueInvalid."""
    details = {
        "name": name,
        **({"group": res.group} if res.group else {}),
        "kind": res.kind,
        "causes": [{"reason": cause, "message": detail, "field": field}],
    }
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {field}: {detail}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unsupported_media(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unavailable(detail: str) -> ApiError:
    return ApiError(
        503,
        "ServiceUnavailable",
        f"etcd has no quorum or no etcd member answered, so the API server cannot serve the "
        f"request; check the etcd members ({detail[:300]})",
    )


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def status_success(res: resources.Resource, name: str, uid: str | None) -> dict[str, Any]:
    """The `Status` a DELETE answers with when it does not return the deleted object."""
    details = _details(res, name)
    if uid:
        details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }
