"""What a test's private server process can be made to do, whatever the server.

``RedisServer`` and ``TansuServer`` start their server their own way (``start``); this
base pauses, kills, stops and restarts it the same way, and removes its directory on
``close`` or at the end of a ``with`` block.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Self

__all__ = ["ServerProcess"]


class ServerProcess:
    """A server in a child process (``process``) with a directory of its own (``dir``)."""

    process: subprocess.Popen[bytes] | None
    dir: Path

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and return once it answers (within ``timeout`` seconds)."""
        raise NotImplementedError

    def pause(self) -> None:
        """SIGSTOP: the server freezes, connections stay open and get no answer."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port: the server keeps only what it persists."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
