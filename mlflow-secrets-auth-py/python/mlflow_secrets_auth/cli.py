"""The ``mlflow-secrets-auth`` command: the same implementation as the Rust
binary (``info``, ``doctor``, ``exec``, ``header``, ``completions``), run from
the extension module. ``exec`` replaces this Python process with the command.
"""

from __future__ import annotations

import sys

from ._core import cli


def main() -> int:
    """Runs the command on ``sys.argv`` and exits with its code."""
    sys.exit(cli(["mlflow-secrets-auth", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
