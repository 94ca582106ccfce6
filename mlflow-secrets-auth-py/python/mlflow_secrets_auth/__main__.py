"""``python -m mlflow_secrets_auth``: the ``mlflow-secrets-auth`` command."""

from .cli import main

main()
