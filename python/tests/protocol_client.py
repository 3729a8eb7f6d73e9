"""The worker's side of the JSON-lines protocol, for tests: starts a handler as a child process
and sends and receives its lines, with a timeout on every read."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

READ_TIMEOUT = 10.0


class HandlerProcess:
    """A handler started the way the worker starts it (SLUICE_PROTOCOL, SLUICE_SLOT)."""

    def __init__(
        self, command: Sequence[str], slot: int = 0, env: dict[str, str] | None = None
    ) -> None:
        full_env = dict(os.environ, SLUICE_PROTOCOL="1", SLUICE_SLOT=str(slot))
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @classmethod
    def python(cls, script: str, **kwargs: Any) -> HandlerProcess:
        return cls([sys.executable, script], **kwargs)

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def job(self, job_id: str, input: Any = None, **fields: Any) -> None:
        message = {
            "type": "job", "id": job_id, "attempt": 1, "max_attempts": 3, "timeout_seconds": 60
        }
        if input is not None:
            message["input"] = input
        message.update(fields)
        self.send(message)

    def recv(self, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        """The next line from stdout, which must be one JSON object."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; stderr:\n{self.stderr()}") from None
        if line is None:
            raise AssertionError(f"stdout closed; stderr:\n{self.stderr()}")
        try:
            message = json.loads(line)
        except ValueError:
            raise AssertionError(f"stdout line is not JSON: {line!r}") from None
        if not isinstance(message, dict):
            raise AssertionError(f"stdout line is not an object: {line!r}")
        return message

    def recv_answer(self, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        """The next result or error line, skipping progress lines."""
        while True:
            message = self.recv(timeout)
            if message["type"] != "progress":
                return message

    def call(self, job_id: str, input: Any, **fields: Any) -> dict[str, Any]:
        self.job(job_id, input, **fields)
        return self.recv_answer()

    def close(self, timeout: float = READ_TIMEOUT) -> int:
        """Closes stdin as the worker does, and returns the exit code."""
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        finally:
            for t in self._threads:
                t.join(timeout)

    def rest_of_stdout(self) -> list[bytes]:
        """What stdout still held when it closed (after close())."""
        lines = []
        while True:
            line = self._lines.get(timeout=READ_TIMEOUT)
            if line is None:
                return lines
            lines.append(line)

    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(READ_TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
