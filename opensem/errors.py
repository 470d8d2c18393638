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


class Interrupted(Exception):
    """Work stopped by SIGTERM (a spot preemption, `sky jobs cancel`, Ctrl-C of a supervisor) after
    saving a checkpoint. Not a success: the command exits 143 (128 + SIGTERM), so a scheduler such
    as a SkyPilot managed job does not report SUCCEEDED for a run that left no adapter. Running
    the same command again resumes."""

    exit_code = 143
