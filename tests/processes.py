"""Processes tests start against the test database: a Celery worker, gunicorn serving the app."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from django.db import connections

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict:
    """The environment of a subprocess that must open the test database, not the real one."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
            "BATCHBOARD_USE_TEST_DATABASE": connections["default"].settings_dict["NAME"], **extra}


def start_worker(*extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "solo", "-Q", "batchboard-test,batchboard-test-files",
         "--without-heartbeat", "--without-mingle", "--without-gossip", "--loglevel", "INFO", *extra],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_process(process: subprocess.Popen) -> str:
    """Terminate, then kill if it takes over 30 s; returns what it printed."""
    process.terminate()
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


stop_worker = stop_process


def wait_for(predicate, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def listening_address(server: subprocess.Popen) -> str:
    """gunicorn was told port 0: the kernel picked a free one, and gunicorn logs which (before any worker boots)."""
    output = []
    for line in server.stdout:
        output.append(line)
        if found := re.search(r"Listening at: (http://\S+)", line):
            return found.group(1)
    raise AssertionError("gunicorn exited before listening:\n" + "".join(output))
