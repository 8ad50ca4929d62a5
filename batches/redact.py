import logging
import re
import threading

# OpenAI keys (sk-..., sk-proj-...) and bearer tokens; whatever the source, a log line never carries one.
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]+|(Bearer\s+)\S+", re.IGNORECASE)
# Keys of any format are also removed by value: every key this process sends (BatchApi registers it), so
# an upstream error that echoes a key the pattern does not know (gsk_..., hex, JWT) is redacted too.
_MIN_KNOWN_LENGTH = 8  # a shorter "key" would blank out ordinary words
_known: tuple[str, ...] = ()
_known_lock = threading.Lock()


def remember_secret(secret: str) -> None:
    global _known
    if len(secret) < _MIN_KNOWN_LENGTH or secret in _known:
        return
    with _known_lock:
        # Longest first, so a key that contains another is removed whole; readers see one tuple or the other.
        _known = tuple(sorted({*_known, secret}, key=len, reverse=True))


# The longest API text (an error message, say) shown or logged as it is.
SHOWN_LIMIT = 500


def redact(text: str) -> str:
    for secret in _known:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", text)


def shown(text: str, limit: int = SHOWN_LIMIT) -> str:
    """API text as it may be shown or logged: secrets redacted, and at most `limit` characters plus a note
    of how many more there were."""
    text = redact(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
