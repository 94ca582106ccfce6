"""The MLflow plugin: the ``requests`` auth and MLflow's request auth provider.

Every hop of a request — the request itself, each redirect requests follows,
the resend after a 401/403 — is decided by the core's hop policy on the URL
exactly as requests will send it: the host must be in
``MLFLOW_SECRETS_ALLOWED_HOSTS``, nothing is attached after an https→http
downgrade, every credential header is removed when the origin changes, and
when Python's parsers (``urllib.parse``, ``urllib3``) and the core read
different hosts from the URL, nothing is attached at all. A 401/403 makes the
core fetch the credential again (at most once per credential per
``MLFLOW_SECRETS_REFETCH_INTERVAL_SEC``); the request is resent once, only
with a different credential and only when its body can be replayed whole.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, List, Optional, Set, Tuple
from urllib.parse import urljoin, urlparse, urlsplit

import urllib3.exceptions
import urllib3.util
from requests.auth import AuthBase
from requests.exceptions import UnrewindableBodyError
from requests.models import PreparedRequest, Response
from requests.sessions import SessionRedirectMixin
from requests.utils import requote_uri, rewind_body

from ._core import SecretsAuth, SecretsAuthError

_log = logging.getLogger("mlflow_secrets_auth")

try:  # MLflow's plugin base class, when MLflow is installed.
    from mlflow.tracking.request_auth.abstract_request_auth_provider import (
        RequestAuthProvider as _ProviderBase,
    )
except ImportError:  # pragma: no cover - MLflow is optional for the core
    _ProviderBase = object  # type: ignore[assignment,misc]

_shared_lock = threading.Lock()
_shared: Optional[SecretsAuth] = None
_shared_failed = False


def _reset_lock_in_child() -> None:
    # A fork while another thread held the lock must not leave it held.
    global _shared_lock
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


def _shared_core() -> Optional[SecretsAuth]:
    """The process's core, or ``None`` when the configuration is unusable
    (logged once: a failed build is remembered, not retried per request)."""
    global _shared, _shared_failed
    if _shared is not None or _shared_failed:
        return _shared
    with _shared_lock:
        if _shared is None and not _shared_failed:
            try:
                core = SecretsAuth()
            except SecretsAuthError as error:
                _shared_failed = True
                _log.error("mlflow-secrets-auth: no credential will be sent: %s", error)
                return None
            for warning in core.warnings():
                _log.warning("mlflow-secrets-auth: %s", warning)
            _shared = core
        return _shared


# Removed whenever the origin changes (the configured header too).
_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _client_hosts(url: str) -> Optional[List[Tuple[str, int]]]:
    """``(host, port)`` of ``url`` as each of requests' parsers reads it:
    ``urllib.parse`` (the connection pool's key) and ``urllib3`` (the
    connection). ``None`` when either fails or finds no host."""
    try:
        split = urlsplit(url)
        default = _DEFAULT_PORTS.get(split.scheme.lower())
        parsed = urllib3.util.parse_url(url)
        hosts = [(split.hostname, split.port), (parsed.host, parsed.port)]
    except (ValueError, urllib3.exceptions.LocationParseError):
        return None
    if default is None or any(not host for host, _ in hosts):
        return None
    return [(str(host), port or default) for host, port in hosts]


def _redirect_target(response: Response, request: PreparedRequest) -> Optional[str]:
    """The URL requests will send the next hop to, built as
    ``Session.resolve_redirects`` builds it; ``None`` when there is none or it
    cannot be built."""
    try:
        url = SessionRedirectMixin.get_redirect_target(None, response)  # type: ignore[arg-type]
        if not url:
            return None
        previous_fragment = urlparse(request.url).fragment
        if url.startswith("//"):
            url = ":".join([urlparse(response.url).scheme, url])
        parsed = urlparse(url)
        if parsed.fragment == "" and previous_fragment:
            parsed = parsed._replace(fragment=previous_fragment)
        url = parsed.geturl()
        if not parsed.netloc:
            return str(urljoin(response.url, requote_uri(url)))
        return str(requote_uri(url))
    except Exception:  # noqa: BLE001 - any failure means: send nothing
        return None


def _host(url: Optional[str]) -> str:
    """A URL's host, for logs (never its path or query)."""
    try:
        return urlsplit(url or "").hostname or "?"
    except ValueError:
        return "?"


_withheld_lock = threading.Lock()
_withheld_said: Set[Tuple[str, str]] = set()
# As many (host, reason) pairs as the Rust core remembers: redirects a server
# chooses must not grow the set, nor the log, without end.
_WITHHELD_REMEMBERED = 64


def _say_withheld(url: str, reason: str) -> None:
    """Warns that the credential was withheld from ``url``'s host, once per
    (host, reason) in this process: a 401 from MLflow then has its cause in
    the log. Never the credential, never the URL's path or query."""
    key = (_host(url), reason)
    with _withheld_lock:
        if key in _withheld_said or len(_withheld_said) >= _WITHHELD_REMEMBERED:
            _log.debug("mlflow-secrets-auth: no credential sent to %s: %s", *key)
            return
        _withheld_said.add(key)
    _log.warning(
        "mlflow-secrets-auth: no credential sent to %s: %s "
        "(the hosts that get it are set by MLFLOW_SECRETS_ALLOWED_HOSTS)",
        *key,
    )


def _replayable(request: PreparedRequest) -> bool:
    """Whether the body can be sent again whole (bytes, text, none, or a
    stream requests knows how to rewind)."""
    body = request.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    position = getattr(request, "_body_position", None)
    return isinstance(position, int) and hasattr(body, "seek")


class _Chain:
    """The hops of one request: the request, its redirects, its resend."""

    __slots__ = ("core", "name", "previous", "left_https", "attached", "resent")

    def __init__(self, core: SecretsAuth, name: str) -> None:
        self.core = core
        self.name = name
        self.previous: Optional[str] = None
        self.left_https = False
        self.attached: Optional[str] = None
        self.resent = False

    def first(self, request: PreparedRequest, url: str) -> None:
        """The first hop. A plain origin needs no second reading of its host:
        the core decides it alone (and remembers its verdict)."""
        try:
            header = self.core.first(url)
        except SecretsAuthError as error:
            self.previous = url
            _log.error("mlflow-secrets-auth: no credential for %s: %s", _host(url), error)
            return
        if header is False:
            self.apply(request, url)
            return
        self.previous = url
        if header is not None:
            request.headers[header[0]] = header[1]
            self.attached = header[1]
        else:
            _say_withheld(url, "host not allowed")

    def apply(self, request: PreparedRequest, url: str) -> None:
        """Decides the hop to ``url`` and sets ``request``'s headers for it
        (requests copies them into that hop)."""
        previous, self.previous = self.previous, url
        self.attached = None
        hosts = _client_hosts(url)
        if hosts is None:
            answer: Tuple[Any, ...] = (True, self.left_https, None, "the URL does not parse")
        else:
            try:
                answer = self.core.hop(url, previous, self.left_https, hosts)
            except SecretsAuthError as error:
                _log.error("mlflow-secrets-auth: no credential for %s: %s", _host(url), error)
                answer = (True, self.left_https, None, str(error))
        strip, self.left_https, header, withheld = answer
        if previous is not None:
            for name in (*_CREDENTIAL_HEADERS, self.name) if strip else (self.name,):
                request.headers.pop(name, None)
        if header is not None:
            name, value = header
            request.headers[name] = value
            self.attached = value
        elif withheld:
            _say_withheld(url, withheld)

    def redirect(self, request: PreparedRequest, response: Response) -> None:
        """``response`` redirects: decide the hop requests will make next (it
        copies ``request``'s headers into it); with no usable target, strip
        every credential header."""
        target = _redirect_target(response, request)
        if target is not None:
            self.apply(request, target)
            return
        for name in (*_CREDENTIAL_HEADERS, self.name):
            request.headers.pop(name, None)
        self.attached = None

    def on_response(self, response: Response, **send_kwargs: Any) -> Response:
        request = response.request
        if response.is_redirect:
            self.redirect(request, response)
            return response
        if response.status_code in (401, 403) and self.attached is not None and not self.resent:
            return self._resend(response, request, send_kwargs)
        return response

    def _resend(
        self, response: Response, request: PreparedRequest, send_kwargs: Any
    ) -> Response:
        if not _replayable(request):
            return response  # a stream that cannot be rewound: the refusal as it is
        try:
            fresh = self.core.refused(self.attached)
        except SecretsAuthError as error:
            _log.error("mlflow-secrets-auth: refetch failed: %s", error)
            return response
        if fresh is None:
            return response
        retry = request.copy()
        if not isinstance(retry.body, (bytes, str, type(None))):
            try:
                rewind_body(retry)
            except UnrewindableBodyError:
                return response
        self.resent = True
        name, value = fresh
        retry.headers[name] = value
        self.attached = value
        # requests follows the resent response's redirects by copying the
        # original request: it carries no credential of its own any more, and
        # the hop policy decides the next hop like any other.
        request.headers.pop(self.name, None)
        response.content  # release the connection
        response.close()
        # The original send arguments: timeout, verify, cert, proxies, stream.
        again = response.connection.send(retry, **send_kwargs)
        again.history.insert(0, response)
        again.request = retry
        if again.is_redirect:
            self.redirect(request, again)
        return again


class MlflowSecretsAuth(AuthBase):
    """A ``requests`` auth: each hop gets what the hop policy allows."""

    def __init__(self, core: Optional[SecretsAuth] = None) -> None:
        self._core = core
        self._named: Optional[Tuple[SecretsAuth, str]] = None

    def _get_core(self) -> Optional[Tuple[SecretsAuth, str]]:
        """The core and its header name, asked once: the core of an auth
        never changes (the shared one is built once per process)."""
        named = self._named
        if named is not None:
            return named
        core = self._core if self._core is not None else _shared_core()
        if core is None:
            return None
        try:
            named = self._named = (core, core.header_name())
        except SecretsAuthError as error:
            _log.error("mlflow-secrets-auth: no credential will be sent: %s", error)
            return None
        return named

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        named = self._named or self._get_core()
        if named is None:
            return request
        chain = _Chain(*named)
        chain.first(request, request.url or "")
        hooks = request.hooks.setdefault("response", [])
        if hooks:  # a request prepared again gets one chain, not one per preparation
            hooks[:] = [h for h in hooks if not isinstance(getattr(h, "__self__", None), _Chain)]
        hooks.append(chain.on_response)
        return request


_AUTH = MlflowSecretsAuth()


class SecretsAuthProviderFactory(_ProviderBase):  # type: ignore[misc,valid-type]
    """MLflow's request auth provider ``mlflow_secrets_auth``."""

    def get_name(self) -> str:
        return "mlflow_secrets_auth"

    def get_auth(self) -> MlflowSecretsAuth:
        """Cheap and never raises: the work happens per request."""
        return _AUTH
