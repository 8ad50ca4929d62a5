import os
import secrets

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand

from batches.models import Batch, Connection, default_poll_interval
from batches.store import delete_batches


class Command(BaseCommand):
    help = "First-run set-up for `make run`: a demo admin user and a connection (real API or the simulator)."

    def add_arguments(self, parser):
        parser.add_argument("--simulator-url", default="http://127.0.0.1:8100/v1")

    def handle(self, *args, simulator_url, **options):
        login_file = settings.VAR_DIR / "demo-login.txt"
        if not User.objects.exists():
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser("admin", password=password)
            user.groups.add(Group.objects.get(name="Admin"))
            login_file.write_text(f"  Log in as: admin / {password}\n")
            login_file.chmod(0o600)
            self.stdout.write("Created the demo superuser 'admin'.")
        elif not login_file.exists():
            login_file.write_text("  Log in with an existing user (create one: python manage.py createsuperuser).\n")

        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if key:
            base_url = os.environ.get("OPENAI_BASE_URL", "").strip() or settings.API_DEFAULT_BASE_URL
            connection, created = Connection.objects.get_or_create(
                slug="openai", defaults={"name": "OpenAI", "base_url": base_url}
            )
            connection.base_url = base_url
            connection.organization = os.environ.get("OPENAI_ORG_ID", connection.organization)
            connection.project = os.environ.get("OPENAI_PROJECT_ID", connection.project)
            connection.set_api_key(key)
            connection.enabled = True
            connection.save()
            Connection.objects.filter(slug="simulator").update(enabled=False)
            self.stdout.write(f"Connection 'openai' uses OPENAI_API_KEY against {base_url}.")
        else:
            connection = Connection.objects.filter(slug="simulator").first() or Connection(
                slug="simulator", name="Simulator"
            )
            connection.base_url, connection.enabled = simulator_url, True
            connection.set_api_key("sk-sim")
            if connection.pk:
                # The simulator keeps its world in memory: each start is a new account whose batch ids may
                # repeat the last run's with other histories. Start its connection afresh.
                cleared = delete_batches(Batch.objects.filter(connection=connection))
                connection.forget_sync_state()
                connection.poll_interval = default_poll_interval()
                connection.data_version += 1
                if cleared:
                    self.stdout.write(f"Cleared the stored batches of the previous simulator run ({cleared} batches).")
            connection.save()
            Connection.objects.filter(slug="openai").update(enabled=False)
            self.stdout.write(f"No OPENAI_API_KEY: connection 'simulator' watches the local simulator at {simulator_url}.")
