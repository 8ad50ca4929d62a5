"""Start the test provider: `python -m tests.oidc_provider.serve` with OIDC_PROVIDER_DIR and OIDC_PROVIDER_PORT set.

Creates its database and the one client, Batchboard's (confidential, authorization code with PKCE, RS256), then
serves until killed. Redirect URIs: the Django test client's host, and any port of 127.0.0.1 (RFC 8252 loopback,
which django-oauth-toolkit honours), where browser tests run the app.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")

from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET  # noqa: E402

REDIRECT_URIS = "http://testserver/oidc/callback/ http://127.0.0.1/oidc/callback/"


def main():
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.core.servers.basehttp import WSGIServer, run
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import get_application_model

    call_command("migrate", verbosity=0)
    get_application_model().objects.update_or_create(client_id=CLIENT_ID, defaults=dict(
        name="Batchboard", client_secret=CLIENT_SECRET, client_type="confidential",
        authorization_grant_type="authorization-code", algorithm="RS256", redirect_uris=REDIRECT_URIS,
        skip_authorization=False))
    print(f"provider ready at {settings.ISSUER}", flush=True)
    run("127.0.0.1", settings.PORT, get_wsgi_application(), threading=True, server_cls=WSGIServer)


if __name__ == "__main__":
    main()
