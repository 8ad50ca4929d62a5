from celery import shared_task

from . import throttle


@shared_task(time_limit=300)
def forget_ended_login_windows() -> int:
    return throttle.forget_ended_windows()
