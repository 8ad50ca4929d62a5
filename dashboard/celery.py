import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

# `sqla+…` broker URLs (the embedded default) get kombu's SQLAlchemy transport polled ten times a second.
TRANSPORT_ALIASES["sqla"] = "dashboard.broker:Transport"

app = Celery("batchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
