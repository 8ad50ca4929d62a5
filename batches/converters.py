"""API ids in URL paths: any string the API sends survives one path segment and comes back unchanged.

An id made only of [A-Za-z0-9_-] is written as it is; any other is "~" + the base64url of its UTF-8, without
"=" padding. Percent-encoding would not do: WSGI servers decode %2F before routing, and browsers drop "."
and ".." segments. Each id has exactly one URL: a segment that is not the canonical form of an id is a 404.
"""

import base64
import re

_VERBATIM = re.compile(r"[A-Za-z0-9_-]+")


def encode_id(value: str) -> str:
    if _VERBATIM.fullmatch(value):
        return value
    return "~" + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_id(segment: str) -> str:
    """The id `segment` names; ValueError (a 404 to the URL resolver) when it names none."""
    if not segment.startswith("~"):
        return segment
    encoded = segment[1:]
    value = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    if "\x00" in value or encode_id(value) != segment:  # stored ids never hold NUL (PostgreSQL refuses it)
        raise ValueError("not the canonical form of an id")
    return value


class ApiIdConverter:
    regex = r"[A-Za-z0-9_-]+|~[A-Za-z0-9_-]+"

    def to_python(self, value: str) -> str:
        return decode_id(value)

    def to_url(self, value: str) -> str:
        return encode_id(value)
