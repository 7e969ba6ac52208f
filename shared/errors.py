"""The root of the exceptions the project defines, and its branch for what a user can fix.

Every exception class in ``shared``, ``producer`` and ``workers`` derives from
:class:`ActionstreamError` (tests/shared/test_errors.py checks). Bad input or configuration
derives from :class:`UserError` too, which the CLI (``workers.console.cli``) catches by type.
A class keeps its builtin base (``ValueError``, ``RuntimeError``, ...) beside, after this one,
so that callers catching the builtin still catch it.
"""


class ActionstreamError(Exception):
    """The root of every exception the project defines."""


class UserError(ActionstreamError):
    """Bad input or configuration a user can fix: the CLI prints its message, no traceback,
    and exits with :attr:`exit_code`."""

    exit_code = 2  # shared.supervisor.USER_ERROR: restarting the process will not help
