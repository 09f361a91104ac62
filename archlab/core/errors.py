"""Errors a user fixes by editing a file, not by reading a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem in something the user wrote (a contract, a setting); services print it as one line.

    ``label`` names what is wrong, e.g. ``contract error``; the message names the file, the place and the problem.
    """

    label = "error"
