"""Errors a user can fix (bad config, a broker that is not running, unreadable weights).

The CLI prints them as one line ``vigil: <message>`` and exits with ``exit_code``; anything else
is a bug and keeps its traceback. So a user mistake is raised as a subclass of :class:`UserError`
where the input is read (naming the input), never caught as a plain ``ValueError`` or ``OSError``
higher up: those are bugs, or a failure nobody has explained to the user yet.

The subclasses also derive from ``ValueError`` (or the built-in error they replace), so code that
caught the built-in before still catches them.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or environment; its message says what and how to fix it."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config file (or section) that cannot be used; the message names the file and the key."""


class UsageError(UserError, ValueError):
    """A command-line argument that cannot be used; the message names the option."""


class InputError(UserError, ValueError):
    """A file, folder or stream named by the user that cannot be read or written; the message
    names it."""


class InputNotFound(UserError, FileNotFoundError):
    """A file or folder named by the user that does not exist; the message names it."""
