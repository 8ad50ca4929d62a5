"""Shared by the bench scripts: a private database (SQLite file, or a fresh PostgreSQL database) and Django."""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(database_url: str | None, label: str):
    """Point Django at a database of its own; returns a cleanup function that removes it."""
    from cryptography.fernet import Fernet

    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("BATCHBOARD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    cleanup = lambda: None  # noqa: E731
    if database_url and database_url.startswith("postgres"):
        import psycopg

        parts = urlsplit(database_url)
        name = f"batchboard_bench_{label}_{os.getpid()}"  # two runs on one server keep apart
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))

        def cleanup():
            from django.db import connections

            connections.close_all()
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        directory = tempfile.mkdtemp(prefix=f"batchboard-bench-{label}-", dir=ROOT / "var")
        os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"

        def cleanup():
            import shutil

            from django.db import connections

            connections.close_all()
            shutil.rmtree(directory, ignore_errors=True)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return cleanup


def run_on_private_database(parser, label: str, run) -> None:
    """Parse the arguments (adding --database-url), run `run(args)` on a database of its own, remove it."""
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL server to create a private bench database on (default: a temp SQLite file)")
    args = parser.parse_args()
    cleanup = setup_django(args.database_url, label)
    try:
        run(args)
    finally:
        cleanup()


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float = 60) -> None:
    """Wait until something answers HTTP at `url` (any status)."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def stop_processes(processes: list) -> None:
    """Terminate every process, then wait for each (killing one that does not stop)."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def measure(phase) -> tuple[float, float]:
    """Run `phase()`: its seconds, and its peak RSS growth in MB (the kernel's high-water mark is reset first)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then VmHWM is the peak since start: an upper bound
    before = _kib("VmRSS")
    started = time.monotonic()
    phase()
    seconds = time.monotonic() - started
    return seconds, max(0, _kib("VmHWM") - before) / 1024


def _kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))
