"""API ids in URL paths: any string the API sends survives one path segment and comes back unchanged.

An id made only of [A-Za-z0-9_-] is written as it is; any other is "~" + the base64url of its UTF-8, without
"=" padding. Percent-encoding would not do: WSGI servers decode %2F before routing, and browsers drop "."
and ".." segments. Each id has exactly one URL: a segment that is not the canonical form of an id is a 404.
"""

import base64
import hashlib
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


# A request's custom_id is any string the submitter chose, of any length. Up to LONG_ID_SEGMENT characters of
# URL it is written as an API id is (above); a longer one is written as "~~" + the base64url of its first
# LONG_ID_PREFIX_BYTES (whole characters) + "." + a SHA-256 of the whole id, so that every request's URL stays
# short enough for any server and proxy (gunicorn refuses request lines over 4 KB).
LONG_ID_SEGMENT = 300
LONG_ID_PREFIX_BYTES = 150
_DIGEST_CHARS = 32


class LongRequestId(str):
    """What a long id's URL names: the prefix to look the id up by (the str value), and the segment itself,
    which only the one id whose canonical URL it is matches."""

    segment: str

    def matches(self, value: str) -> bool:
        return encode_request_id(value) == self.segment


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_DIGEST_CHARS]


def encode_request_id(value: str) -> str:
    segment = encode_id(value)  # "" is "~"
    if len(segment) <= LONG_ID_SEGMENT:
        return segment
    prefix = value.encode()[:LONG_ID_PREFIX_BYTES].decode(errors="ignore")  # whole characters only
    return f"~~{base64.urlsafe_b64encode(prefix.encode()).decode().rstrip('=')}.{_digest(value)}"


def decode_request_id(segment: str) -> str:
    """The custom_id `segment` names, or for a long one a LongRequestId to look it up by; ValueError (a 404)
    when it names none."""
    if not segment.startswith("~~"):
        if len(segment) > LONG_ID_SEGMENT:
            raise ValueError("a long id has a shorter URL")
        return decode_id(segment)
    encoded, _, digest = segment[2:].partition(".")
    prefix = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    if "\x00" in prefix or len(digest) != _DIGEST_CHARS:
        raise ValueError("not the canonical form of a long id")
    value = LongRequestId(prefix)
    value.segment = segment
    return value


class RequestIdConverter:
    regex = r"[A-Za-z0-9_-]+|~[A-Za-z0-9_-]*|~~[A-Za-z0-9_-]+\.[0-9a-f]+"

    def to_python(self, value: str) -> str:
        return decode_request_id(value)

    def to_url(self, value: str) -> str:
        return encode_request_id(value)
