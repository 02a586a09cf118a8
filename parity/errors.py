"""Errors the CLI turns into a one-line message and an exit code, never a traceback."""


class ParityError(Exception):
    """Base of every error parity reports to a user. `exit_code` is what the CLI returns."""

    exit_code = 2


class UsageError(ParityError):
    """Bad command-line arguments, unknown names, missing paths."""


class CaseError(ParityError):
    """A case on disk is malformed. Carries every problem found, each naming its file."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CheckpointError(ParityError):
    """A checkpoint or its sidecar cannot be used."""


class RunnerUnavailable(ParityError):
    """A runner needs a package or device this machine does not have."""


class CaptureError(ParityError):
    """Outputs captured on a target that do not belong to these inputs (another pipeline, a changed frame)."""
