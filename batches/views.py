from django.conf import settings


def site_context(request):
    return {"VERSION": settings.VERSION, "LIVE_POLL_SECONDS": settings.LIVE_POLL_SECONDS}
