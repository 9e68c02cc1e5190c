"""Schemathesis hooks for confab (README "Reliability", issue 24 item 3).

`no_server_error`: no 5xx.
`unified_error_body`: every 4xx/5xx answer is CONTRACT §2's unified error body
`{statusCode, error, message, code, fields?}` with `statusCode` equal to the HTTP status.
Loaded by tests/api/reliability_schema.rs through SCHEMATHESIS_HOOKS.
"""

import json

import schemathesis


@schemathesis.check
def no_server_error(ctx, response, case):
    if response.status_code < 500:
        return None
    raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")


@schemathesis.check
def unified_error_body(ctx, response, case):
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        raise AssertionError(
            f"{response.status_code} without a JSON body: {response.content[:200]!r}"
        )
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code}: error body is not an object: {body!r}")
    problems = []
    if body.get("statusCode") != response.status_code:
        problems.append(f"statusCode {body.get('statusCode')!r} != {response.status_code}")
    for key in ("error", "message", "code"):
        if not isinstance(body.get(key), str) or not body.get(key):
            problems.append(f"{key} missing or not a string")
    if "fields" in body and not isinstance(body["fields"], dict):
        problems.append("fields is not an object")
    if problems:
        raise AssertionError(f"not the unified error body ({'; '.join(problems)}): {body!r}")
    return None
