import logging
import re

# OpenAI keys (sk-..., sk-proj-...) and bearer tokens; whatever the source, a log line never carries one.
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]+|(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
