"""A server process on 127.0.0.1 for a benchmark or a test: started, awaited, stopped.

Example:
    >>> with running_server(command, "http://127.0.0.1:5000/ping", Path("serve.log")):
    ...     ...  # send requests
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    command: list[str],
    ready_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Iterator[subprocess.Popen]:
    """Run `command` (a server) until `ready_url` answers, logging to `log_path`; stopped on
    exit. A server that dies or is not ready in `timeout` seconds raises with its log."""
    log = open(log_path, "a")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
