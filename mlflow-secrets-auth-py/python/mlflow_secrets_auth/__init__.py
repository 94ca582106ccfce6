"""MLflow request auth from a secret manager, on the mlflow-secrets-auth Rust core.

Switched on with ``MLFLOW_TRACKING_AUTH=mlflow_secrets_auth``; configured by the
``MLFLOW_SECRETS_*`` and provider variables (see the project's configuration
documentation). For every request MLflow sends, the credential is attached only
when that request's host is in ``MLFLOW_SECRETS_ALLOWED_HOSTS``; a redirect to
another host gets the header that host is entitled to (none, when it is not
allowed) whatever the header's name; a 401/403 answer makes the core fetch the
credential again and the request is sent once more, with its original timeout,
TLS and proxy settings.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional
from urllib.parse import urljoin

from requests.auth import AuthBase
from requests.models import PreparedRequest, Response

from ._core import SecretsAuth, SecretsAuthError, __version__

__all__ = [
    "SecretsAuth",
    "SecretsAuthError",
    "SecretsAuthProviderFactory",
    "MlflowSecretsAuth",
    "__version__",
]

_log = logging.getLogger(__name__)

try:  # MLflow's plugin base class, when MLflow is installed.
    from mlflow.tracking.request_auth.abstract_request_auth_provider import (
        RequestAuthProvider as _ProviderBase,
    )
except ImportError:  # pragma: no cover - MLflow is optional for the core
    _ProviderBase = object  # type: ignore[assignment,misc]

_core_lock = threading.Lock()
_core: Optional[SecretsAuth] = None


def _shared_core() -> Optional[SecretsAuth]:
    """The process's core, or ``None`` (logged) when the configuration is unusable."""
    global _core
    if _core is not None:
        return _core
    with _core_lock:
        if _core is None:
            try:
                _core = SecretsAuth()
            except SecretsAuthError as error:
                _log.error("mlflow-secrets-auth: no credential will be sent: %s", error)
                return None
            for warning in _core.warnings():
                _log.warning("mlflow-secrets-auth: %s", warning)
        return _core


_RETRIED = "_mlflow_secrets_auth_retried"
_ATTACHED = "_mlflow_secrets_auth_header"


class MlflowSecretsAuth(AuthBase):
    """A ``requests`` auth: the header for each request's own URL."""

    def __init__(self, core: Optional[SecretsAuth] = None) -> None:
        self._core = core

    def _get_core(self) -> Optional[SecretsAuth]:
        return self._core if self._core is not None else _shared_core()

    def _apply(self, request: PreparedRequest, url: str) -> None:
        """Sets the header ``url`` is entitled to on ``request``, removing any
        credential this auth attached before (a redirect to another host)."""
        previous = getattr(request, _ATTACHED, None)
        if previous is not None:
            request.headers.pop(previous, None)
            setattr(request, _ATTACHED, None)
        core = self._get_core()
        if core is None:
            return
        try:
            header = core.header_for(url)
        except SecretsAuthError as error:
            _log.error("mlflow-secrets-auth: no credential for %s: %s", _host(url), error)
            return
        if header is not None:
            name, value = header
            request.headers[name] = value
            setattr(request, _ATTACHED, name)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        self._apply(request, request.url or "")
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: Response, **send_kwargs: Any) -> Response:
        request = response.request
        if response.is_redirect:
            # requests copies this request's headers into the next hop and
            # strips only `Authorization` across hosts: give the next hop the
            # header its own host is entitled to, whatever the header's name.
            target = urljoin(response.url, response.headers.get("location", ""))
            self._apply(request, target)
            return response
        if (
            response.status_code in (401, 403)
            and getattr(request, _ATTACHED, None) is not None
            and not getattr(request, _RETRIED, False)
        ):
            core = self._get_core()
            if core is None:
                return response
            core.invalidate()
            retry = request.copy()
            setattr(retry, _ATTACHED, getattr(request, _ATTACHED))
            self._apply(retry, retry.url or "")
            setattr(retry, _RETRIED, True)
            response.content  # release the connection
            response.close()
            # The original send arguments: timeout, verify, cert, proxies, stream.
            again = response.connection.send(retry, **send_kwargs)
            again.history.append(response)
            again.request = retry
            return again
        return response


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"


_AUTH = MlflowSecretsAuth()


class SecretsAuthProviderFactory(_ProviderBase):  # type: ignore[misc,valid-type]
    """MLflow's request auth provider ``mlflow_secrets_auth``."""

    def get_name(self) -> str:
        return "mlflow_secrets_auth"

    def get_auth(self) -> MlflowSecretsAuth:
        """Cheap and never raises: the work happens per request."""
        return _AUTH
