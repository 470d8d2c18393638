"""The one exception type that means "the user gave us something wrong".

The CLI turns an `OpenSEMError` into a single red line and exit code 2; anything else is a
bug and keeps its traceback.
"""


class OpenSEMError(Exception):
    """A problem with the user's input or setup, explained in one line that says how to fix it."""


class ConfigError(OpenSEMError):
    """A config file or `--set` override is malformed or fails the schema."""


class NotBuiltError(OpenSEMError):
    """A stage whose implementation has not landed yet."""
