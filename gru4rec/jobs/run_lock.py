"""A job's lock on its work directory, and the record a killed run leaves behind.

The lock is `fcntl.flock` on `<work_dir>/<name>.lock`, taken by the job itself: the kernel
releases it when the process ends, however it ends (SIGKILL included), so a lock is never
stale; a second run started meanwhile is refused with who holds it. The file also holds a
record of the running job (pid, start, run directory, MLflow run), which the job clears
when it ends on its own. A record found on entry is therefore one a killed run left: the
next run reads it (`previous`) to clean up after it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from gru4rec.errors import JobBusyError


class RunLock:
    """`with RunLock(path) as lock:` the work directory is this process's until the block
    ends. `lock.previous`: the record a killed run left ({} if none); `lock.note(...)`
    adds to this run's record; the record is cleared on exit (kept only by a kill)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.previous: dict[str, Any] = {}
        self.record: dict[str, Any] = {}
        self._fd: int | None = None
        self._keep = False

    def keep_record(self) -> None:
        """Leave this run's record for the next run to clean up after (for a run that
        could not mark its own MLflow runs finished)."""
        self._keep = True

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise JobBusyError(
                f"{self.path.parent}: another run is using this work directory (pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                f"{holder.get('started', '?')}); it holds {self.path}. Wait for it to finish, "
                "or stop it."
            ) from None
        self._fd = fd
        self.previous = _read(fd)
        self.note(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
        return self

    def note(self, **values: Any) -> None:
        """Add to this run's record (written through at once: a kill may come next)."""
        assert self._fd is not None, "note() inside the with block"
        self.record.update(values)
        _write(self._fd, self.record)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._fd is not None
        try:
            if not self._keep:
                _write(self._fd, {})  # ended on its own: nothing to clean up next time
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = None


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = b""
    while chunk := os.read(fd, 65536):
        text += chunk
    try:
        record = json.loads(text or b"{}")
    except ValueError:  # a record cut short by a kill mid-write: treat as unknown
        return {"unreadable": True}
    return record if isinstance(record, dict) else {}


def _write(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record).encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    os.fsync(fd)
