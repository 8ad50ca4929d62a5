import getpass
import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from batches import audit
from batches.client import ApiError, BatchApi, PermanentError
from batches.models import Connection, KeyUnreadable


class Command(BaseCommand):
    help = (
        "Add (or update) a connection to an OpenAI-compatible Batch API. The key is read from an environment "
        "variable or prompted for, never taken as an argument, and checked with one cheap call."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug", help="URL name (default: from NAME)")
        parser.add_argument("--base-url", default=settings.API_DEFAULT_BASE_URL)
        parser.add_argument("--organization", default="", help="sent as OpenAI-Organization")
        parser.add_argument("--project", default="", help="sent as OpenAI-Project")
        parser.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                            help="environment variable holding the key (default OPENAI_API_KEY); prompted if unset")
        parser.add_argument("--force", action="store_true", help="save even if the API refuses the key")

    def handle(self, *args, name, slug=None, base_url, organization, project, api_key_env, force, **options):
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            if not self.stdin_is_tty():
                raise CommandError(f"{api_key_env} is not set and there is no terminal to ask for the key.")
            key = getpass.getpass(f"API key for {name} (input hidden): ").strip()
        if not key:
            raise CommandError("No API key given.")
        slug = slug or slugify(name)[:50]
        connection = Connection.objects.filter(slug=slug).first() or Connection(slug=slug)
        before = _audited(connection)
        connection.name, connection.base_url = name, base_url
        connection.organization, connection.project = organization, project
        connection.set_api_key(key)
        try:
            connection.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None

        api = BatchApi(base_url=base_url, api_key=key, organization=organization, project=project)
        try:
            page = api.list_batches(limit=1)
        except ApiError as exc:
            if isinstance(exc, PermanentError) and not force:
                raise CommandError(f"The API refused the key: {exc}. Nothing saved (use --force to save anyway).")
            self.stdout.write(self.style.WARNING(f"Could not check the key: {exc}. Saved anyway."))
        else:
            count = "at least one batch" if page["data"] else "no batches yet"
            self.stdout.write(self.style.SUCCESS(f"The key works: {base_url} answered ({count})."))
        finally:
            api.close()
        created = connection.pk is None
        connection.save()
        changed = [field for field, value in _audited(connection).items() if value != before[field]]
        audit.connection_saved(connection, created=created, changed=changed, username="manage.py add_connection")
        self.stdout.write(f"Connection {connection.slug!r} saved; key ending {connection.api_key_hint}.")

    def stdin_is_tty(self) -> bool:
        return os.isatty(0)


def _audited(connection: Connection) -> dict:
    """The fields this command sets, to audit which it changed (the key's value is compared, never recorded)."""
    try:
        key = connection.api_key if connection.api_key_encrypted else ""
    except KeyUnreadable:
        key = ""
    return {"name": connection.name, "base_url": connection.base_url, "organization": connection.organization,
            "project": connection.project, "api_key": key}
