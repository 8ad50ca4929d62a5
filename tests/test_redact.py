"""Redaction: known key patterns, and by value every key this process has sent, whatever its format."""

import logging

from batches.client import BatchApi
from batches.redact import RedactSecretsFilter, redact


def _logged(message: str, *args) -> str:
    record = logging.LogRecord("batches.test", logging.WARNING, __file__, 1, message, args, None)
    RedactSecretsFilter().filter(record)
    return record.getMessage()


def test_a_log_line_carrying_a_sent_key_of_any_format_is_redacted():
    key = "tok_live:AbCd/EfGh+IjKl=MnOp"  # no pattern would know it
    BatchApi(base_url="http://127.0.0.1:1/v1", api_key=key).close()
    assert _logged("upstream said %s (%r)", key, key) == "upstream said [redacted] ('[redacted]')"


def test_patterns_are_redacted_even_for_keys_never_sent():
    assert redact("key sk-proj-abcdefghijkl and Bearer xyz.123") == "key sk-pro[redacted] and Bearer [redacted]"


def test_a_key_too_short_to_be_real_does_not_blank_out_ordinary_text():
    BatchApi(base_url="http://127.0.0.1:1/v1", api_key="test").close()
    assert redact("a test message") == "a test message"
