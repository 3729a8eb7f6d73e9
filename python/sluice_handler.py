"""Run a Python function as the compute of a sluice worker (``SLUICE_HANDLER=process``).

The worker starts this program once per slot and sends it one job at a time over the JSON-lines
protocol of ``worker/PROTOCOL.md``; :func:`run` speaks that protocol, so a handler only computes::

    import sluice_handler          # first: prints while the model loads go to stderr too

    model = load_model()           # once per process, before run(): "ready" means loaded

    def handle(input, ctx):
        ctx.progress(0.5, "halfway")               # a fraction 0..1 and/or a short message
        if ctx.cancelled:                          # the job was cancelled: stop early
            raise sluice_handler.RetryableError("cancelled")
        if not input.get("text"):
            raise sluice_handler.PermanentError("text is empty")   # not retried
        return {"label": model(input["text"])}     # any JSON-encodable value

    if __name__ == "__main__":
        sluice_handler.run(handle)

Any other exception fails the attempt as retryable, with ``"<ExceptionType>: <message>"`` as the
job's error and the traceback in the worker's log. ``print()`` and anything else written to
stdout (by C libraries or child processes too) goes to stderr, which is the worker's log: stdout
carries the protocol alone. Child processes get an empty stdin, so none can read the protocol.
This holds from the import on when the worker started the process (``SLUICE_PROTOCOL`` is set),
else from :func:`run` on.

``ctx`` (a :class:`Context`) has ``job_id``, ``attempt`` (1 first), ``max_attempts``,
``timeout_seconds``, ``slot`` (0 to ``SLUICE_CONCURRENCY - 1``), ``input_path``,
``output_dir``, ``output_file(name)``, ``progress(fraction=None, message=None)``,
``cancelled`` and ``wait_cancelled(timeout)``.

Behaviours worth knowing:

- ``handle`` runs in the main thread, so signals and libraries that need the main thread work.
  Cancellation is cooperative: poll ``ctx.cancelled`` or block on ``ctx.wait_cancelled(t)``.
  A cancelled job whose handler returns anyway still gets its answer written; the worker
  ignores it.
- A job submitted with an uploaded file has its path in ``ctx.input_path`` (a local file the
  worker downloaded, removed after the job; read or stream it as you like) and its JSON
  ``input`` as usual (``None`` when only a file was sent). ``ctx.input_path`` is ``None`` for a
  job without a file. A job line with an ``input_file`` but no ``input`` has the file read as
  JSON and passed as ``input``.
- Files for the caller go in ``ctx.output_dir``: ``ctx.output_file("mask.png")`` gives the
  path to write (sub-directories allowed, made for you). When the handler returns, the worker
  stores every file there in the payload bucket and the job's view lists them with download
  URLs (at most 100 files; no links). ``output_dir`` is ``None`` when the worker has no payload
  bucket, and ``output_file`` then raises.
- A result over the protocol's 1 MiB line limit is written to a file in ``ctx.output_dir`` and
  stored in the payload bucket whole (the job's view then has a ``result_file`` to download). A
  result ``json.dumps`` cannot encode (or NaN) fails the job for good with a message saying so,
  as does a result over the line limit with no ``output_dir``.
- When the worker closes stdin, the jobs already received are finished and :func:`run` returns.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

__all__ = ["Context", "JobError", "PermanentError", "RetryableError", "run"]
__version__ = "0.1.0"

PROTOCOL_VERSION = 1
#: Error messages longer than this are cut, with a marker saying how long they were.
MAX_ERROR_CHARS = 10_000
#: The worker keeps at most this many characters of a progress message.
MAX_PROGRESS_MESSAGE_CHARS = 200
#: The protocol's limit on one line from the process, newline included.
MAX_LINE_BYTES = 1_048_576
#: Where a result over the line limit is written, in the job's output directory.
RESULT_FILE_NAME = ".sluice-result.json"

Handler = Callable[[Any, "Context"], Any]


class JobError(Exception):
    """Fails the job with this exception's message; ``retryable`` says whether to try again."""

    retryable: bool = True


class PermanentError(JobError):
    """The job can never succeed (bad input, say): fail it without retrying."""

    retryable = False


class RetryableError(JobError):
    """The job may succeed on another attempt (a dependency was down, say)."""

    retryable = True


def _log(message: str) -> None:
    """One line to stderr, the worker's log."""
    try:
        sys.stderr.write(f"sluice_handler: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _clean_text(text: str) -> str:
    """``text`` without lone surrogates, which UTF-8 (and so the worker) cannot carry."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _truncate(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    if len(message) <= limit:
        return message
    marker = f" ... [truncated: {len(message)} characters in all]"
    return message[: limit - len(marker)] + marker


def _encode(message: dict[str, Any]) -> bytes:
    """One protocol line. Raises if ``message`` is not JSON-encodable."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


class _Channel:
    """The protocol's stdout: whole lines, one writer at a time, flushed after each line."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, line: bytes, job: Context | None = None, *, last: bool = False) -> bool:
        """Writes ``line``; for a job's line, only while the job is unanswered (``last``
        answers it). Returns whether the line was written."""
        with self._lock:
            if job is not None:
                if job._answered:
                    return False
                job._answered = last
            self._out.write(line)
            self._out.flush()
            return True


class Context:
    """What a handler knows about its job, and how it reports progress and sees a cancel."""

    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        max_attempts: int,
        timeout_seconds: float | None,
        input_path: str | None,
        channel: _Channel,
        cancel_event: threading.Event,
        output_dir: str | None = None,
    ) -> None:
        self.job_id = job_id
        #: 1 for the first attempt.
        self.attempt = attempt
        self.max_attempts = max_attempts
        #: The job's time limit; at that limit the worker kills the process.
        self.timeout_seconds = timeout_seconds
        #: The job's uploaded file (a local path), or None when it has none.
        self.input_path = input_path
        #: A directory for files the caller gets back (stored when the handler returns), or
        #: None when the worker has no payload bucket.
        self.output_dir = output_dir
        #: This process's slot, 0 to SLUICE_CONCURRENCY - 1 (a GPU index, say).
        self.slot = _slot()
        self._channel = channel
        self._cancel = cancel_event
        self._answered = False

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Reports how far the job is: ``fraction`` from 0 to 1 and/or a short ``message``
        (the worker keeps 200 characters). The latest report is stored at the next heartbeat,
        so a few calls a second are plenty. After the job was answered it does nothing."""
        if fraction is None and message is None:
            raise ValueError("progress() needs a fraction, a message or both")
        line: dict[str, Any] = {"type": "progress", "id": self.job_id}
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
                raise TypeError(f"fraction must be a number, not {type(fraction).__name__}")
            if not 0 <= fraction <= 1:
                raise ValueError(f"fraction must be from 0 to 1, not {fraction!r}")
            line["fraction"] = float(fraction)
        if message is not None:
            if not isinstance(message, str):
                raise TypeError(f"message must be a str, not {type(message).__name__}")
            line["message"] = _clean_text(message[:MAX_PROGRESS_MESSAGE_CHARS])
        if not self._channel.send(_encode(line), self):
            _log(f"job {self.job_id}: progress after the job was answered is dropped")

    def output_file(self, name: str) -> str:
        """The path to write the output file ``name`` to (a relative path, ``/``-separated;
        its directories are made). The caller finds it in the job's ``outputs`` under ``name``."""
        if self.output_dir is None:
            raise PermanentError(
                "output files need a payload bucket, and this worker has none "
                "(SLUICE_PAYLOAD_BUCKET is not set)"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"an output file needs a name, not {name!r}")
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in name:
            raise ValueError(
                f"the output file name {name!r} must be a relative path without empty, "
                "'.' or '..' parts"
            )
        if name == RESULT_FILE_NAME:
            raise ValueError(f"{RESULT_FILE_NAME!r} is where a large result goes; pick another name")
        path = os.path.join(self.output_dir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    @property
    def cancelled(self) -> bool:
        """Whether the worker cancelled this job (its caller cancelled it, or the worker lost
        it). Stop and raise; whatever the handler answers is ignored."""
        return self._cancel.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Blocks until the job is cancelled or ``timeout`` seconds pass (None: no limit);
        returns whether it was cancelled."""
        return self._cancel.wait(timeout)

    def __repr__(self) -> str:
        return (
            f"Context(job_id={self.job_id!r}, attempt={self.attempt}, "
            f"max_attempts={self.max_attempts}, slot={self.slot})"
        )


def _slot() -> int:
    try:
        return int(os.environ.get("SLUICE_SLOT", "0"))
    except ValueError:
        return 0


@dataclass
class _Job:
    id: str
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    message: dict[str, Any]
    cancel: threading.Event


# --- stdio ---------------------------------------------------------------------------------

_protocol_streams: tuple[BinaryIO, BinaryIO] | None = None


def _take_over_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Moves the real stdin and stdout to private descriptors for the protocol, and points
    descriptor 1 (and ``sys.stdout``) at stderr and descriptor 0 at /dev/null, so nothing else
    in the process, nor a child process it starts, can write or read a protocol line.
    Idempotent; returns the protocol's (input, output) binary streams."""
    global _protocol_streams
    if _protocol_streams is not None:
        return _protocol_streams
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        out_fd = os.dup(1)  # not inherited by child processes
        in_fd = os.dup(0)
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        streams = (os.fdopen(in_fd, "rb"), os.fdopen(out_fd, "wb"))
    except OSError:
        # No real descriptors (an embedded interpreter, say): keep the Python-level streams.
        streams = (sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # open for the process's life
    _protocol_streams = streams
    return streams


if os.environ.get("SLUICE_PROTOCOL", str(PROTOCOL_VERSION)) != str(PROTOCOL_VERSION):
    _log(f"the worker speaks protocol {os.environ['SLUICE_PROTOCOL']}; this helper speaks "
         f"{PROTOCOL_VERSION} (update sluice_handler)")
if os.environ.get("SLUICE_PROTOCOL"):
    # Started by the worker: take stdout over now, so prints while the model loads (after this
    # import, before run()) cannot come before the "ready" line.
    _take_over_stdio()


# --- the session ---------------------------------------------------------------------------


class _Session:
    def __init__(self, handle: Handler, inp: BinaryIO, out: BinaryIO) -> None:
        self._handle = handle
        self._inp = inp
        self._channel = _Channel(out)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._pending: dict[str, threading.Event] = {}  # received and not yet answered
        self._pending_lock = threading.Lock()

    def run(self) -> None:
        reader = threading.Thread(target=self._read, name="sluice-stdin", daemon=True)
        reader.start()
        self._channel.send(_encode({"type": "ready"}))
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            finally:
                with self._pending_lock:
                    self._pending.pop(job.id, None)

    # The reader thread: jobs go to the queue in order, a cancel sets its job's event.

    def _read(self) -> None:
        try:
            for raw in self._inp:
                self._dispatch(raw)
        except Exception:  # never die silently: the main thread would wait forever
            _log("reading stdin failed:\n" + traceback.format_exc())
        finally:
            self._jobs.put(None)

    def _dispatch(self, raw: bytes) -> None:
        if not raw.strip():
            return
        shown = raw[:200].decode("utf-8", "replace").rstrip("\n")
        try:
            message = json.loads(raw)
        except ValueError as e:
            _log(f"ignored a line from the worker that is not JSON ({e}): {shown}")
            return
        if not isinstance(message, dict):
            _log(f"ignored a line from the worker that is not a JSON object: {shown}")
            return
        kind, job_id = message.get("type"), message.get("id")
        if kind not in ("job", "cancel"):
            _log(f"ignored a line from the worker of an unknown type: {shown}")
        elif not isinstance(job_id, str) or not job_id:
            _log(f"ignored a {kind} line without an id: {shown}")
        elif kind == "job":
            try:
                job = _Job(
                    id=job_id,
                    attempt=int(message.get("attempt", 1)),
                    max_attempts=int(message.get("max_attempts", 1)),
                    timeout_seconds=_optional_float(message.get("timeout_seconds")),
                    message=message,
                    cancel=threading.Event(),
                )
            except (TypeError, ValueError) as e:
                _log(f"ignored a job line with a bad field ({e}): {shown}")
                return
            with self._pending_lock:
                self._pending[job_id] = job.cancel
            self._jobs.put(job)
        else:
            with self._pending_lock:
                event = self._pending.get(job_id)
            if event is None:
                _log(f"ignored a cancel for job {job_id}, which is not running (done already?)")
            else:
                _log(f"job {job_id}: cancelled")
                event.set()

    # The main thread: one job at a time.

    def _run(self, job: _Job) -> None:
        input_path = job.message.get("input_file")
        output_dir = job.message.get("output_dir")
        ctx = Context(
            job_id=job.id,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            timeout_seconds=job.timeout_seconds,
            input_path=input_path if isinstance(input_path, str) else None,
            channel=self._channel,
            cancel_event=job.cancel,
            output_dir=output_dir if isinstance(output_dir, str) else None,
        )
        if job.cancel.is_set():
            self._fail(ctx, "the job was cancelled before it started", retryable=False)
            return
        try:
            input = self._input(job.message)
        except JobError as e:
            self._fail(ctx, str(e), retryable=e.retryable)
            return
        try:
            result = self._handle(input, ctx)
        except JobError as e:
            message = str(e) or type(e).__name__
            _log(f"job {job.id} failed ({'retryable' if e.retryable else 'permanent'}): {message}")
            self._fail(ctx, message, retryable=e.retryable)
            return
        except Exception as e:  # any failure of user code fails the attempt
            _log(f"job {job.id} failed:\n{traceback.format_exc().rstrip()}")
            text = str(e)
            self._fail(ctx, f"{type(e).__name__}: {text}" if text else type(e).__name__)
            return
        try:
            line = _encode({"type": "result", "id": job.id, "result": result})
        except Exception as e:  # TypeError, ValueError, RecursionError, ...
            self._fail(
                ctx,
                f"the result cannot be encoded as JSON: {type(e).__name__}: {e}",
                retryable=False,
            )
            return
        if len(line) > MAX_LINE_BYTES and ctx.output_dir is not None:
            # Too large for a line: the worker stores the file as the result.
            path = os.path.join(ctx.output_dir, RESULT_FILE_NAME)
            try:
                with open(path, "wb") as f:
                    f.write(_encode(result)[:-1])
            except OSError as e:
                self._fail(ctx, f"the result could not be written to {path}: {e}")
                return
            line = _encode({"type": "result", "id": job.id, "result_file": path})
        if len(line) > MAX_LINE_BYTES:
            self._fail(
                ctx,
                f"the result is {len(line)} bytes as JSON, over the protocol's limit of "
                f"{MAX_LINE_BYTES} bytes a line",
                retryable=False,
            )
            return
        self._channel.send(line, ctx, last=True)

    @staticmethod
    def _input(message: dict[str, Any]) -> Any:
        if "input" in message:
            return message["input"]
        path = message.get("input_file")
        if path is None:
            raise PermanentError("the job has no input")
        if not isinstance(path, str):
            raise PermanentError(f"the job's input_file is not a path: {path!r}")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise RetryableError(f"cannot read the input file {path}: {e}") from e
        try:
            return json.loads(data)
        except ValueError as e:
            raise PermanentError(f"the input file {path} is not JSON: {e}") from e

    def _fail(self, ctx: Context, message: str, retryable: bool = True) -> None:
        line = {
            "type": "error",
            "id": ctx.job_id,
            "message": _clean_text(_truncate(message)),
            "retryable": retryable,
        }
        self._channel.send(_encode(line), ctx, last=True)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def run(handle: Handler) -> None:
    """Serves jobs with ``handle(input, ctx)`` until the worker closes stdin, then returns.

    Call it once the model is loaded: its first act is to tell the worker it is ready."""
    if not callable(handle):
        raise TypeError(f"run() needs a function handle(input, ctx), not {handle!r}")
    inp, out = _take_over_stdio()
    try:
        _Session(handle, inp, out).run()
    except BrokenPipeError:
        _log("stdout is closed: the worker is gone")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        _log("interrupted")
        raise SystemExit(130) from None
