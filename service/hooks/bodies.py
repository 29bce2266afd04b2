"""Limits on a parsed request body that the JSON parser itself does not enforce.

orjson parses up to 1024 levels of nesting but serialises at most 255, and the pipeline serialises parts
of the request (cache keys, de-duplication digests): a body nested between those two depths used to parse
and then fail with a 500. The body is refused at parse time instead, with a 400 that says why.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.hooks.errors import HookError

#: deepest nesting accepted (orjson's serialisation limit; real FHIR resources stay far below ~20 levels)
MAX_JSON_DEPTH = 254


def check_depth(parsed: Any) -> Any:
    """`parsed` unchanged, or HookError(400) when it is nested more than MAX_JSON_DEPTH levels.

    Serialising once with orjson is the check: it is C code that stops at exactly the limit every later
    serialisation has, and costs microseconds for a typical request."""
    if isinstance(parsed, (dict, list)):
        try:
            orjson.dumps(parsed)
        except orjson.JSONEncodeError:
            raise HookError(400, f"Request body is nested more than {MAX_JSON_DEPTH} levels deep",
                            code="structure") from None
    return parsed
