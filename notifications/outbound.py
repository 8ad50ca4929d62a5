"""Outbound HTTP to channels, without SSRF: only https:// targets, and only to public addresses.

The address is checked when a channel is saved (url_problem) and again at each send, on the very address the
socket connects to (resolved once, checked, then connected to), so a name that later resolves elsewhere (DNS
rebinding) is refused too. No proxies from the environment, no redirects. The response body is never read.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

LOCAL_RECEIVER_HOST = "127.0.0.1"


class AddressRefused(Exception):
    """The target is not https://, or resolves to a private, loopback, link-local or otherwise non-public
    address."""


def _local_receivers_allowed(scheme: str, host: str) -> bool:
    """Tests only (ALERTS_ALLOW_LOCAL_RECEIVERS): http://127.0.0.1 for the receivers they start."""
    return settings.ALERTS_ALLOW_LOCAL_RECEIVERS and scheme == "http" and host == LOCAL_RECEIVER_HOST


def address_problem(address: str) -> str:
    """Why a connection to this IP address is refused, or ""."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"resolves to a {kind.replace('_', '-')} address ({ip})"
    if not ip.is_global:
        return f"resolves to a non-public address ({ip})"
    return ""


def _resolve(host: str, port: int) -> list[tuple]:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AddressRefused(f"{host} does not resolve") from None


def url_problem(url: str) -> str:
    """Why this URL may not be a channel's target (checked when saving), or ""."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "This is not a valid URL."
    host = (parts.hostname or "").lower()
    if not host:
        return "This is not a valid URL."
    if _local_receivers_allowed(parts.scheme, host):
        return ""
    if parts.scheme != "https":
        return "The URL must start with https://."
    try:
        for *_, sockaddr in _resolve(host, port):
            if problem := address_problem(sockaddr[0]):
                return f"{host} {problem}: only public addresses may be targets."
    except AddressRefused as refused:
        return f"{refused}."
    return ""


class _Checked:
    """A urllib3 connection that resolves its host once, refuses non-public addresses, and connects to the
    address it checked."""

    def _new_conn(self):
        infos = _resolve(self._dns_host, self.port)
        if not _local_receivers_allowed(self.scheme, self.host):
            for *_, sockaddr in infos:
                if problem := address_problem(sockaddr[0]):
                    raise AddressRefused(f"{self.host} {problem}")
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else settings.ALERT_SEND_TIMEOUT
        error = None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            try:
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class _CheckedHTTPConnection(_Checked, HTTPConnection):
    scheme = "http"


class _CheckedHTTPSConnection(_Checked, HTTPSConnection):
    scheme = "https"


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}


def post_json(url: str, body: str, headers: dict[str, str]) -> int:
    """POST a JSON body; returns the status code. Raises AddressRefused, or requests' RequestException."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not _local_receivers_allowed(parts.scheme, (parts.hostname or "").lower()):
        raise AddressRefused("the URL must start with https://")
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: the address checked is the one reached
        session.mount("http://", _CheckedAdapter(max_retries=0))
        session.mount("https://", _CheckedAdapter(max_retries=0))
        response = session.post(url, data=body.encode(), allow_redirects=False, stream=True,
                                headers={"Content-Type": "application/json", "User-Agent": "Batchboard", **headers},
                                timeout=(settings.ALERT_SEND_TIMEOUT, settings.ALERT_SEND_TIMEOUT))
        response.close()  # the body is never read: neither shown nor logged
        return response.status_code
