"""The tuner's errors that end a command with exit status 1 (bad settings and search-space
files have their own, exit status 2)."""


class TunerError(RuntimeError):
    """Something outside the tuner failed; the message says what and why."""
