"""Typed errors. Each message says what went wrong, where, and how to fix it.

The CLI turns any `Gru4RecError` into a one-paragraph message and a non-zero exit,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Gru4RecError(Exception):
    """Base class of every error the project raises on purpose."""


class InputDataError(Gru4RecError):
    """A click log or prepared data directory that cannot be used as it is."""


class ConfigError(Gru4RecError):
    """An unknown preset or parameter, or a value out of its range."""


class CheckpointError(Gru4RecError):
    """A model directory that is missing files, corrupt, or inconsistent."""


class TrainingDivergedError(Gru4RecError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"training diverged: the loss is {loss} at epoch {epoch}, step {step}. "
            "Lower the learning rate, or check the data for degenerate sessions."
        )


class JobBusyError(Gru4RecError):
    """Another run of the job holds the work directory's lock."""


class StageError(Gru4RecError):
    """A stage of the nightly job failed; nothing was published. `cause` is the error."""

    def __init__(self, stage: str, cause: BaseException, note: str = "") -> None:
        self.stage, self.cause = stage, cause
        super().__init__(
            f"nightly stage {stage!r} failed: {cause}{note} Nothing was published: the "
            "champion alias and the current outputs are as they were."
        )
