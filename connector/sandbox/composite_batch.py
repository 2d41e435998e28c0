"""``POST /services/data/vXX.X/composite/batch``: up to 25 independent subrequests in one call.

As documented
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/requests_composite_batch.htm)
and as tap-salesforce's discovery sends it (``shared/docs/api-contracts-realorg.md`` section 7.4):

- the body is ``{"batchRequests": [{"method", "url"[, "richInput"]}], "haltOnError": bool}``;
- a subrequest URL is relative to ``/services/data/`` (``v34.0/sobjects/Lead/describe``) or
  absolute (``/services/data/v61.0/...``); its version must be at least 34.0 and at most the
  batch's;
- a malformed body, an invalid method or URL (as documented: errors found while reading the
  request fail it whole) or more than 25 subrequests is a 400 and runs nothing (the error code
  ``INVALID_BATCH_REQUEST`` for the last two is inferred, not documented);
- the answer is always 200 ``{"hasErrors", "results": [{"statusCode", "result"}]}``, in request
  order; after a failed subrequest with ``haltOnError`` the rest get 412
  ``BATCH_PROCESSING_HALTED``. Each subrequest counts against the API allowance, as documented.

Each subrequest goes through the org's normal routing with the batch's session, so it answers
exactly what the same request alone would.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from connector.sandbox.salesforce_api import ApiError, ApiRequest, ApiResponse, _json

if TYPE_CHECKING:
    from connector.sandbox.salesforce_api import SalesforceApi

MAX_SUBREQUESTS = 25
MIN_SUBREQUEST_VERSION = 34.0
_METHODS = ("GET", "POST", "PATCH", "DELETE", "PUT")


def handle_batch(api: SalesforceApi, request: ApiRequest, version: str) -> ApiResponse:
    """Serve one composite batch request.

    Args:
        api: The org (routing, session checks).
        request: The outer request (already authenticated and counted).
        version: API version of the outer URL.

    Returns:
        The batch answer.

    Raises:
        ApiError: 400 for a malformed body, 405 for a method other than POST.
    """
    api._require_method(request, "POST")
    body = api._parse_body(request)
    subrequests = body.get("batchRequests") if isinstance(body, dict) else None
    if not isinstance(subrequests, list) or not subrequests:
        raise ApiError(400, "JSON_PARSER_ERROR", "batchRequests must be a non-empty array")
    if len(subrequests) > MAX_SUBREQUESTS:
        raise ApiError(
            400,
            "INVALID_BATCH_REQUEST",
            f"A batch can contain a maximum of {MAX_SUBREQUESTS} requests",
        )
    halt_on_error = bool(body.get("haltOnError", False))
    parsed = [_subrequest(entry, version, request) for entry in subrequests]
    results: list[dict[str, Any]] = []
    halted = False
    for sub in parsed:
        if halted:
            results.append(
                _result(
                    412,
                    [
                        {
                            "errorCode": "BATCH_PROCESSING_HALTED",
                            "message": "Batch processing halted per request",
                        }
                    ],
                )
            )
            continue
        response = _run(api, sub)
        payload = json.loads(response.body) if response.body else None
        results.append(_result(response.status, payload))
        halted = halt_on_error and response.status >= 400
    has_errors = any(entry["statusCode"] >= 400 for entry in results)
    return ApiResponse(200, _json({"hasErrors": has_errors, "results": results}))


def _run(api: SalesforceApi, sub: ApiRequest) -> ApiResponse:
    """Serve a subrequest as if it came alone (session checked, call counted)."""
    try:
        return api._data(sub)
    except ApiError as error:
        return error.response("composite")


def _result(status: int, payload: Any) -> dict[str, Any]:
    return {"statusCode": status, "result": payload}


def _subrequest(entry: Any, version: str, outer: ApiRequest) -> ApiRequest:
    """Build the request a subrequest stands for (a bad method or URL fails the whole batch)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        raise ApiError(400, "JSON_PARSER_ERROR", "Each batch request needs a url and a method")
    method = str(entry.get("method", "")).upper()
    if method not in _METHODS:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Invalid method: {entry.get('method')!r}")
    parts = urlsplit(entry["url"])
    path = parts.path
    if not path.startswith("/"):
        path = "/services/data/" + path
    segments = path.split("/")
    sub_version = segments[3][1:] if len(segments) > 3 and segments[3].startswith("v") else ""
    try:
        number = float(sub_version)
    except ValueError:
        number = 0.0
    if not path.startswith("/services/data/v") or not (
        MIN_SUBREQUEST_VERSION <= number <= float(version)
    ):
        raise ApiError(
            400,
            "INVALID_BATCH_REQUEST",
            f"Subrequest URL {entry['url']} must be a /services/data/ resource of version "
            f"{MIN_SUBREQUEST_VERSION} to {version}",
        )
    rich_input = entry.get("richInput")
    body = b"" if rich_input is None else json.dumps(rich_input).encode()
    headers = {
        key: value
        for key, value in outer.headers.items()
        if key.lower() in ("authorization", "sforce-query-options")
    }
    if body:
        headers["Content-Type"] = "application/json"
    return ApiRequest(method, path, parse_qs(parts.query), headers, body)
