"""MLflow request auth from a secret manager, on the mlflow-secrets-auth Rust core.

Switched on with ``MLFLOW_TRACKING_AUTH=mlflow_secrets_auth``; configured by the
``MLFLOW_SECRETS_*`` and provider variables (see the project's configuration
documentation). The ``mlflow-secrets-auth`` command (``info``, ``doctor``,
``exec``, ``header``) comes with it: ``python -m mlflow_secrets_auth``.

The plugin (``SecretsAuthProviderFactory``, ``MlflowSecretsAuth``) is loaded
on first use, so importing this package — as the command does — costs neither
``requests`` nor MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._core import SecretsAuth, SecretsAuthError, __version__

__all__ = [
    "SecretsAuth",
    "SecretsAuthError",
    "SecretsAuthProviderFactory",
    "MlflowSecretsAuth",
    "__version__",
]

# Names of mlflow-secrets-auth 0.2 that keep their meaning (see the README's
# "Moving from 0.2" for the ones that changed).
PACKAGE_NAME = "mlflow-secrets-auth"
DEFAULT_TTL_SECONDS = 300
DEFAULT_AUTH_MODE = "bearer"
PROVIDER_VAULT = "vault"
PROVIDER_AWS = "aws-secrets-manager"
PROVIDER_AZURE = "azure-key-vault"


def __getattr__(name: str) -> Any:
    """The plugin's names, imported on first use."""
    if name.startswith("__") or name == "_plugin":
        raise AttributeError(name)
    plugin = importlib.import_module(f"{__name__}._plugin")
    try:
        value = getattr(plugin, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
