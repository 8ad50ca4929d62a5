"""Where the test provider reads its knobs (knobs.json in OIDC_PROVIDER_DIR, rewritten by the tests at any time):

    {"users": {"alice": {"password": "...", "email": "alice@example.com", "email_verified": true,
                         "groups": ["batch-operators"], "name": "Alice"}},
     "audience": "someone-else",   # the ID token is issued for another client
     "expired": true,              # the ID token expired five minutes ago
     "issuer": "http://evil"}      # the ID token names another issuer
"""

import json
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from oauth2_provider.oauth2_validators import OAuth2Validator


def knobs() -> dict:
    path = settings.DIR / "knobs.json"
    return json.loads(path.read_text()) if path.exists() else {}


class KnobUserBackend(ModelBackend):
    """A user exists when the knobs name them; their password is the knobs' one."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        entry = knobs().get("users", {}).get(username)
        if not entry or entry.get("password") != password:
            return None
        user, _ = get_user_model().objects.get_or_create(username=username)
        return user


class KnobbedValidator(OAuth2Validator):
    # Groups go with the openid scope, as Keycloak's group mapper adds them to every token.
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "openid"}

    def get_additional_claims(self, request):
        entry = knobs().get("users", {}).get(request.user.username, {})
        claims = {"email": entry.get("email", ""), "email_verified": entry.get("email_verified", True),
                  "groups": entry.get("groups", [])}
        if entry.get("name"):
            claims["name"] = entry["name"]
        return claims

    def get_id_token_dictionary(self, token, token_handler, request):
        claims, expiration = super().get_id_token_dictionary(token, token_handler, request)
        current = knobs()
        if current.get("audience"):
            claims["aud"] = current["audience"]  # replaces the aud oauthlib set (finalize_id_token updates)
        if current.get("expired"):
            claims["exp"] = int(time.time()) - 300
        if current.get("issuer"):
            claims["iss"] = current["issuer"]
        return claims, expiration

    # prompt=none (our session refresh). django-oauth-toolkit leaves these to the project: its authorize view has
    # already answered login_required to anyone not logged in here, and consent, once given, is remembered.
    def validate_silent_login(self, request):
        return True

    def validate_silent_authorization(self, request):
        return True
