"""A handler for the tests: ``input["op"]`` says what it does (see OPS)."""

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sluice_handler  # noqa: E402 - after the path is set

# Like a library that prints while the model loads: must go to stderr, not before "ready".
print("loading the model")

_kept = None


def echo(input, ctx):
    return {
        "input": input,
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "max_attempts": ctx.max_attempts,
        "timeout_seconds": ctx.timeout_seconds,
        "slot": ctx.slot,
        "input_path": ctx.input_path,
        "cancelled": ctx.cancelled,
    }


def permanent(input, ctx):
    raise sluice_handler.PermanentError(input["message"])


def retryable(input, ctx):
    raise sluice_handler.RetryableError(input["message"])


def crash(input, ctx):
    return 1 / 0


def long_error(input, ctx):
    raise ValueError("x" * 20_000)


def progress(input, ctx):
    ctx.progress(0.25)
    ctx.progress(message="halfway")
    ctx.progress(1, "m" * 500)
    refused = []
    for bad in (1.5, -0.1, float("nan")):
        try:
            ctx.progress(bad)
        except ValueError as e:
            refused.append(str(e))
    return {"refused": refused}


def prints(input, ctx):
    print("hello from print")
    sys.stdout.flush()
    os.write(1, b"hello from fd 1\n")
    subprocess.run(["echo", "hello from a child process"], check=True)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; print(len(sys.stdin.read()))"],
        stdout=subprocess.PIPE,
        check=True,
    )
    return {"child_read": int(child.stdout)}


def poll_cancel(input, ctx):
    ctx.progress(message="running")
    deadline = time.monotonic() + 10
    while not ctx.cancelled:
        if time.monotonic() > deadline:
            return "never cancelled"
        time.sleep(0.01)
    raise sluice_handler.RetryableError("cancelled")


def wait_cancel_then_return(input, ctx):
    ctx.progress(message="running")
    return {"cancelled": ctx.wait_cancelled(10)}


def unencodable(input, ctx):
    return {"x": object()}


def nan(input, ctx):
    return {"x": float("nan")}


def huge(input, ctx):
    return "x" * 1_100_000


def outputs(input, ctx):
    with open(ctx.output_file("a.txt"), "w") as f:
        f.write("hello")
    with open(ctx.output_file("sub/dir/b.bin"), "wb") as f:
        f.write(b"\x00\x01")
    refused = []
    for bad in ("", "../up", "/abs", "a//b", ".sluice-result.json"):
        try:
            ctx.output_file(bad)
        except ValueError as e:
            refused.append(str(e))
    return {"dir": ctx.output_dir, "refused": refused}


def sleep(input, ctx):
    time.sleep(input["seconds"])
    return "slept"


def keep_ctx(input, ctx):
    global _kept
    _kept = ctx
    return "kept"


def use_old_ctx(input, ctx):
    _kept.progress(0.5, "from an old job")
    return "used"


OPS = {f.__name__: f for f in (
    echo, permanent, retryable, crash, long_error, progress, prints, poll_cancel,
    wait_cancel_then_return, unencodable, nan, huge, sleep, keep_ctx, use_old_ctx, outputs,
)}


def handle(input, ctx):
    return OPS[input["op"]](input, ctx)


if __name__ == "__main__":
    sluice_handler.run(handle)
