"""Exit codes and the user-error type shared by the ``actionstream stgcn`` commands (so the
command modules need not import each other)."""

from __future__ import annotations

from shared.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(UserError, ValueError):
    """A problem with what the user gave (arguments, files); exit code 2."""
