import logging
import re

# OpenAI keys (sk-..., sk-proj-...) and bearer tokens; whatever the source, a log line never carries one.
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]+|(Bearer\s+)\S+", re.IGNORECASE)


# The longest API text (an error message, say) shown or logged as it is.
SHOWN_LIMIT = 500


def redact(text: str) -> str:
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
