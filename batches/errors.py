"""Error reports without secrets: Django's debug pages (`make run` runs with DEBUG=1) and error e-mails.

Django's own filter hides settings and request.META entries by name (API, AUTH, TOKEN, KEY, SECRET, PASS, ...).
Ours also hides secrets inside values, whatever their name: the user-info of any URL
(`redis://:password@host`, `postgres://user:password@host`, `https://token@host`), OpenAI keys and bearer
tokens, in settings (nested dicts and lists included), in META (which holds the whole environment under
runserver) and in the local variables of every frame of the traceback.
"""

import re

from django.template.defaultfilters import pprint
from django.views.debug import SafeExceptionReporterFilter

from .redact import redact

# scheme://user-info@ — a password (raw `/` included), or a token written as the user name.
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.\-]*://)[^\s@/?#]*(?::[^\s@]*)?@", re.IGNORECASE)


def hide_secrets(text: str) -> str:
    text = _URL_USERINFO.sub(lambda m: m[1] + SafeExceptionReporterFilter.cleansed_substitute + "@", text)
    return redact(text)


class _Shown:
    """A frame variable as the report prints it, with secrets hidden."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class SafeReporterFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key, value):
        # Django recurses into dicts, lists and tuples through this method, so nested strings come here too.
        if isinstance(value, str):
            value = hide_secrets(value)
        return super().cleanse_setting(key, value)

    def get_traceback_frame_variables(self, request, tb_frame):
        # Any object's printed form may carry a URL or a key (a dict of options, a client, a payload).
        return [(name, _Shown(hide_secrets(pprint(value))))
                for name, value in super().get_traceback_frame_variables(request, tb_frame)]
