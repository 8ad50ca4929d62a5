"""Single sign-on with OpenID Connect: mozilla-django-oidc, made safe enough for this app.

mozilla-django-oidc 5 reads fixed endpoints from settings, skips the audience check, matches users by e-mail and
answers htmx requests with a redirect when a session must be refreshed. Here:

1. the endpoints come from the issuer's discovery document, fetched at the first log-in and cached (never at
   start-up: the app starts with single sign-on off, and while the provider is down);
2. the ID token's signature (RS256, the provider's JWKS), `iss`, `aud` (and `azp`), `exp` and `nonce` are checked,
   and the code exchange uses PKCE (S256);
3. a log-in is matched by (`iss`, `sub`) only, see identities.py, which also applies OIDC_GROUP_MAP;
4. every refusal has a reason the person is shown, audited as `oidc_refused` (no token is ever logged);
5. an htmx request whose session must be refreshed gets `HX-Redirect`, and comes back to the page it was on.
"""

import logging
import threading
import time

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, logout
from django.core.exceptions import SuspiciousOperation
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.generic import View
from django_htmx.http import HttpResponseClientRedirect
from mozilla_django_oidc import middleware as oidc_middleware
from mozilla_django_oidc import views as oidc_views
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from batches import audit

from . import identities, sessions
from .identities import Refused
from .middleware import POLL_HEADER

log = logging.getLogger(__name__)

# RS256 only: with HS256 the client secret would be the key, and a token could be forged by anyone holding it.
SIGN_ALGO = "RS256"
CLOCK_SKEW_SECONDS = 30  # leeway on exp and iat between the provider's clock and ours
UNVERIFIED = "The identity provider's answer could not be verified, so you were not logged in. Please try again."


class ProviderUnavailable(Exception):
    """The discovery document could not be fetched or is not acceptable."""


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


_discovered: dict = {}
_discovery_lock = threading.Lock()


def discovery() -> dict:
    """The issuer's /.well-known/openid-configuration, cached per process for OIDC_DISCOVERY_CACHE_SECONDS. A failed
    fetch is not cached: the next log-in tries again."""
    issuer = settings.OIDC_ISSUER
    with _discovery_lock:
        cached = _discovered.get(issuer)
        if cached and time.monotonic() - cached[0] < settings.OIDC_DISCOVERY_CACHE_SECONDS:
            return cached[1]
    try:
        response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("OIDC discovery at %s failed: %s", issuer, type(exc).__name__)
        raise ProviderUnavailable(f"discovery failed: {type(exc).__name__}") from None
    _check_discovery(document, issuer)
    with _discovery_lock:
        _discovered[issuer] = (time.monotonic(), document)
    return document


def _check_discovery(document, issuer: str) -> None:
    # OpenID Connect Discovery 1.0, 4.3: the issuer in the document must be exactly the one we asked.
    named = document.get("issuer") if isinstance(document, dict) else None
    if not isinstance(named, str) or named.rstrip("/") != issuer:
        raise ProviderUnavailable("the discovery document names another issuer")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        url = document.get(key)
        if not isinstance(url, str) or not (url.startswith("https://") or (
                settings.OIDC_ALLOW_HTTP and url.startswith("http://"))):
            raise ProviderUnavailable(f"the discovery document has no https {key}")


def forget_discovery() -> None:
    with _discovery_lock:
        _discovered.clear()


def _endpoint(key: str):
    return discovery().get(key)


_SETTINGS = {
    "OIDC_RP_CLIENT_ID": lambda: settings.OIDC_CLIENT_ID,
    "OIDC_RP_CLIENT_SECRET": lambda: settings.OIDC_CLIENT_SECRET,
    "OIDC_RP_SCOPES": lambda: settings.OIDC_SCOPES,
    "OIDC_RP_SIGN_ALGO": lambda: SIGN_ALGO,
    "OIDC_RP_IDP_SIGN_KEY": lambda: None,
    "OIDC_OP_AUTHORIZATION_ENDPOINT": lambda: _endpoint("authorization_endpoint"),
    "OIDC_OP_TOKEN_ENDPOINT": lambda: _endpoint("token_endpoint"),
    "OIDC_OP_USER_ENDPOINT": lambda: _endpoint("userinfo_endpoint"),
    "OIDC_OP_JWKS_ENDPOINT": lambda: _endpoint("jwks_uri"),
    "OIDC_USE_NONCE": lambda: True,
    "OIDC_USE_PKCE": lambda: True,
    "OIDC_PKCE_CODE_CHALLENGE_METHOD": lambda: "S256",
    "OIDC_VERIFY_SSL": lambda: True,
    "OIDC_TIMEOUT": lambda: settings.OIDC_TIMEOUT,
    "OIDC_STORE_ACCESS_TOKEN": lambda: False,
    "OIDC_STORE_ID_TOKEN": lambda: False,
    "OIDC_ALLOW_UNSECURED_JWT": lambda: False,
    "OIDC_AUTH_REQUEST_EXTRA_PARAMS": lambda: {},
    "OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS": lambda: settings.OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS,
    "LOGIN_REDIRECT_URL_FAILURE": lambda: settings.LOGIN_URL,
}


def setting(name: str, *default):
    """mozilla-django-oidc's settings, answered from ours (README "Single sign-on") and the discovery document."""
    if name in _SETTINGS:
        return _SETTINGS[name]()
    return getattr(settings, name, *default)


def _discovered_setting(name: str):
    return property(lambda self: setting(name))


class OIDCBackend(OIDCAuthenticationBackend, sessions.ModelBackend):
    """Logs in the person the provider vouches for, by (iss, sub), and gives them the access OIDC_GROUP_MAP says.

    Django builds a backend for every request with a session (to load its user), so nothing here reads the
    discovery document until an actual log-in."""

    get_settings = staticmethod(setting)
    OIDC_RP_SIGN_ALGO, OIDC_RP_IDP_SIGN_KEY = SIGN_ALGO, None
    OIDC_RP_CLIENT_ID = _discovered_setting("OIDC_RP_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = _discovered_setting("OIDC_RP_CLIENT_SECRET")
    OIDC_OP_TOKEN_ENDPOINT = _discovered_setting("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = _discovered_setting("OIDC_OP_USER_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = _discovered_setting("OIDC_OP_JWKS_ENDPOINT")

    def __init__(self, *args, **kwargs):
        self.UserModel = get_user_model()

    get_user = sessions.ModelBackend.get_user

    def authenticate(self, request, nonce=None, code_verifier=None, **kwargs):
        # Only our callback passes a nonce and a PKCE verifier; a password form's request never reaches the provider.
        if request is None or not nonce or not code_verifier or not enabled():
            return None
        try:
            return super().authenticate(request, nonce=nonce, code_verifier=code_verifier)
        except Refused as refusal:
            reason, detail = str(refusal), refusal.detail
        except ProviderUnavailable as exc:
            reason, detail = "The identity provider cannot be reached. Please try again later.", str(exc)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            reason, detail = UNVERIFIED, f"the provider answered {status}"
        except requests.RequestException as exc:
            reason, detail = "The identity provider cannot be reached. Please try again later.", type(exc).__name__
        except (jwt.InvalidTokenError, SuspiciousOperation) as exc:
            # PyJWT's messages name the failed check ("Signature has expired", "Audience doesn't match"), never
            # the token.
            reason, detail = UNVERIFIED, f"{type(exc).__name__}: {exc}"
        log.warning("single sign-on refused: %s", detail)
        request.oidc_refusal = reason
        audit.record("oidc_refused", username=getattr(request, "oidc_email", ""), request=request, ok=False,
                     detail=detail)
        return None

    def _verify_jws(self, payload, key):
        """The ID token's signature, and that it was issued by our issuer, for us, and is still valid."""
        if jwt.get_unverified_header(payload).get("alg") != SIGN_ALGO:
            raise SuspiciousOperation(f"the ID token is not signed with {SIGN_ALGO}")
        claims = jwt.decode(payload, key, algorithms=[SIGN_ALGO], audience=settings.OIDC_CLIENT_ID,
                            issuer=discovery()["issuer"], leeway=CLOCK_SKEW_SECONDS,
                            options={"require": ["iss", "sub", "aud", "exp", "iat"]})
        # OpenID Connect Core 1.0, 3.1.3.7: with several audiences, azp must name us.
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != settings.OIDC_CLIENT_ID:
            raise SuspiciousOperation("the ID token has several audiences and is not authorized for us")
        return claims

    def verify_token(self, token, **kwargs):
        if not kwargs.get("nonce"):
            raise SuspiciousOperation("no nonce to check the ID token against")
        return super().verify_token(token, **kwargs)

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims, with the userinfo endpoint's on top (fresher groups and e-mail), but only if it
        speaks of the same subject (OpenID Connect Core 1.0, 5.3.2)."""
        userinfo = super().get_userinfo(access_token, id_token, payload) if self.OIDC_OP_USER_ENDPOINT else {}
        if userinfo and userinfo.get("sub") != payload["sub"]:
            raise SuspiciousOperation("the userinfo answer is about another subject")
        return {**payload, **userinfo, "iss": payload["iss"], "sub": payload["sub"]}

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        self.request.oidc_email = str(claims.get("email", ""))[:150]
        return identities.log_in(claims, request=self.request)


class AuthenticationRequestView(oidc_views.OIDCAuthenticationRequestView):
    """GET /oidc/authenticate/: off (404) without OIDC_ISSUER; back to the log-in page when the provider is down."""

    get_settings = staticmethod(setting)
    OIDC_RP_CLIENT_ID = _discovered_setting("OIDC_RP_CLIENT_ID")
    OIDC_OP_AUTH_ENDPOINT = _discovered_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the parent reads the endpoint here, before the provider was asked

    def get(self, request):
        if not enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            discovery()
        except ProviderUnavailable:
            messages.error(request, f"{settings.OIDC_PROVIDER_NAME} cannot be reached. Please try again later.")
            return redirect("login")
        return super().get(request)


class CallbackView(oidc_views.OIDCAuthenticationCallbackView):
    """GET /oidc/callback/: where the provider sends the browser back, at log-in and at each session refresh."""

    get_settings = staticmethod(setting)

    def get(self, request):
        if not enabled():
            raise Http404("Single sign-on is not configured.")
        if request.GET.get("error") and request.GET.get("state") not in request.session.get("oidc_states", {}):
            # An error for no log-in or refresh of ours (a forged link): mozilla's view would log the person
            # out; it is shown, and nothing else happens.
            messages.error(request, "Single sign-on did not complete. Please try again.")
            return redirect("login")
        return super().get(request)

    def login_failure(self):
        # A refresh that fails ends the session too: the provider no longer vouches for this person.
        request = self.request
        reason = getattr(request, "oidc_refusal", "")
        if not reason and request.GET.get("error"):
            code = request.GET["error"] if request.GET["error"].replace("_", "").isalpha() else "error"
            reason = f"{settings.OIDC_PROVIDER_NAME} did not log you in ({code[:40]})."
        # Only after a real answer: a bare link to this URL must not log anyone out.
        if request.user.is_authenticated and (reason or "error" in request.GET):
            logout(request)
        messages.error(request, reason or "Single sign-on did not complete. Please try again.")
        return redirect("login")


class SessionRefresh(oidc_middleware.SessionRefresh):
    """Sends a single sign-on session back to the provider (prompt=none) every OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS, so
    groups removed there, or a person removed there, take effect here. Password sessions are never refreshed."""

    get_settings = staticmethod(setting)
    OIDC_OP_AUTHORIZATION_ENDPOINT = _discovered_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")

    def __init__(self, get_response):
        MiddlewareMixin.__init__(self, get_response)  # the parent reads the endpoint at start-up
        self.OIDC_EXEMPT_URLS = []
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        self.OIDC_STATE_SIZE, self.OIDC_NONCE_SIZE = 32, 32
        self.OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
        self.OIDC_USE_NONCE = True

    @cached_property
    def exempt_urls(self):
        return {reverse(name) for name in ("oidc_authentication_init", "oidc_authentication_callback", "login",
                                           "logout")}

    def process_request(self, request):
        if not enabled():
            return None
        self.OIDC_RP_CLIENT_ID, self.OIDC_RP_SCOPES = settings.OIDC_CLIENT_ID, settings.OIDC_SCOPES
        try:
            response = super().process_request(request)
        except ProviderUnavailable:
            logout(request)
            messages.info(request, f"{settings.OIDC_PROVIDER_NAME} cannot be reached to renew your session. "
                                   "Please log in again later.")
            return redirect("login")
        if response is None or not (request.htmx or request.headers.get(POLL_HEADER) == "1"):
            return response
        # htmx would follow a redirect itself and swap the provider's page into a fragment; the whole page goes
        # instead, and comes back to the page, not to the fragment's URL.
        page = request.htmx.current_url_abs_path if request.htmx else None
        safe = page and url_has_allowed_host_and_scheme(page, allowed_hosts={request.get_host()})
        request.session["oidc_login_next"] = page if safe else None
        return HttpResponseClientRedirect(response["Location"])
