"""Errors a user can fix (bad config, a broker that is not running, unreadable weights).

The CLI prints them as one line ``vigil: <message>`` and exits with ``exit_code``; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or environment; its message says what and how to fix it."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config file (or section) that cannot be used; the message names the file and the key."""
