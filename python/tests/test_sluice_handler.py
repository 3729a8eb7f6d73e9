"""sluice_handler against real child processes, speaking worker/PROTOCOL.md to them.

Run from the repository root: python3 -m unittest discover -s python/tests -v
"""

import json
import os
import tempfile
import unittest
from pathlib import Path

from protocol_client import HandlerProcess

HERE = Path(__file__).resolve().parent
OPS = str(HERE / "ops_handler.py")


class HandlerTest(unittest.TestCase):
    def start(self, **kwargs):
        proc = HandlerProcess.python(OPS, **kwargs)
        self.addCleanup(proc.kill)
        self.assertEqual(proc.recv(), {"type": "ready"}, "ready must be the first line")
        return proc

    def test_ready_comes_first_and_import_time_prints_go_to_stderr(self):
        proc = self.start()
        self.assertEqual(proc.close(), 0)
        self.assertEqual(proc.rest_of_stdout(), [])
        self.assertIn("loading the model", proc.stderr())

    def test_result_carries_the_input_and_the_context(self):
        proc = self.start(slot=3)
        answer = proc.call("job-1", {"op": "echo", "text": "héllo ✓"}, attempt=2, max_attempts=5,
                           timeout_seconds=90)
        self.assertEqual(answer["type"], "result")
        self.assertEqual(answer["id"], "job-1")
        self.assertEqual(answer["result"], {
            "input": {"op": "echo", "text": "héllo ✓"},
            "job_id": "job-1",
            "attempt": 2,
            "max_attempts": 5,
            "timeout_seconds": 90.0,
            "slot": 3,
            "input_path": None,
            "cancelled": False,
        })

    def test_permanent_error(self):
        proc = self.start()
        answer = proc.call("j", {"op": "permanent", "message": "text is empty"})
        self.assertEqual(answer, {"type": "error", "id": "j", "message": "text is empty",
                                  "retryable": False})

    def test_retryable_error(self):
        proc = self.start()
        answer = proc.call("j", {"op": "retryable", "message": "try later"})
        self.assertEqual(answer, {"type": "error", "id": "j", "message": "try later",
                                  "retryable": True})

    def test_unexpected_exception_is_retryable_with_its_type_and_a_traceback_in_stderr(self):
        proc = self.start()
        answer = proc.call("j", {"op": "crash"})
        self.assertEqual(answer, {"type": "error", "id": "j",
                                  "message": "ZeroDivisionError: division by zero",
                                  "retryable": True})
        # The process lives on and serves the next job.
        self.assertEqual(proc.call("k", {"op": "sleep", "seconds": 0})["result"], "slept")
        self.assertEqual(proc.close(), 0)
        self.assertIn("Traceback (most recent call last)", proc.stderr())
        self.assertIn("return 1 / 0", proc.stderr())

    def test_long_error_messages_are_truncated(self):
        proc = self.start()
        message = proc.call("j", {"op": "long_error"})["message"]
        self.assertLessEqual(len(message), 10_000)
        self.assertTrue(message.startswith("ValueError: xxx"))
        self.assertTrue(message.endswith("[truncated: 20012 characters in all]"), message[-60:])

    def test_progress_lines(self):
        proc = self.start()
        proc.job("p", {"op": "progress"})
        self.assertEqual(proc.recv(), {"type": "progress", "id": "p", "fraction": 0.25})
        self.assertEqual(proc.recv(), {"type": "progress", "id": "p", "message": "halfway"})
        self.assertEqual(proc.recv(), {"type": "progress", "id": "p", "fraction": 1.0,
                                       "message": "m" * 200})
        answer = proc.recv()
        self.assertEqual(answer["type"], "result")
        self.assertEqual(len(answer["result"]["refused"]), 3, "1.5, -0.1 and NaN are refused")
        self.assertIn("from 0 to 1", answer["result"]["refused"][0])

    def test_progress_of_a_finished_job_is_dropped(self):
        proc = self.start()
        self.assertEqual(proc.call("old", {"op": "keep_ctx"})["result"], "kept")
        # The old job's context must not write a line for an id the worker is not running.
        proc.job("new", {"op": "use_old_ctx"})
        self.assertEqual(proc.recv(), {"type": "result", "id": "new", "result": "used"})
        self.assertEqual(proc.close(), 0)
        self.assertIn("progress after the job was answered is dropped", proc.stderr())

    def test_print_fd1_and_child_processes_write_to_stderr_and_cannot_read_stdin(self):
        proc = self.start()
        answer = proc.call("j", {"op": "prints"})
        self.assertEqual(answer, {"type": "result", "id": "j", "result": {"child_read": 0}})
        self.assertEqual(proc.close(), 0)
        self.assertEqual(proc.rest_of_stdout(), [])
        for text in ("hello from print", "hello from fd 1", "hello from a child process"):
            self.assertIn(text, proc.stderr())

    def test_cancel_while_running(self):
        proc = self.start()
        proc.job("c", {"op": "poll_cancel"})
        self.assertEqual(proc.recv()["message"], "running")
        proc.send({"type": "cancel", "id": "c"})
        self.assertEqual(proc.recv(), {"type": "error", "id": "c", "message": "cancelled",
                                       "retryable": True})

    def test_a_cancelled_handler_that_returns_anyway_is_still_answered(self):
        proc = self.start()
        proc.job("c", {"op": "wait_cancel_then_return"})
        self.assertEqual(proc.recv()["message"], "running")
        proc.send({"type": "cancel", "id": "c"})
        self.assertEqual(proc.recv(), {"type": "result", "id": "c",
                                       "result": {"cancelled": True}})

    def test_a_job_cancelled_while_queued_is_not_run(self):
        proc = self.start()
        proc.job("first", {"op": "sleep", "seconds": 0.1})
        proc.job("queued", {"op": "echo"})
        proc.send({"type": "cancel", "id": "queued"})
        self.assertEqual(proc.recv_answer()["id"], "first")
        self.assertEqual(proc.recv_answer(), {"type": "error", "id": "queued",
                                              "message": "the job was cancelled before it started",
                                              "retryable": False})

    def test_a_cancel_for_another_job_is_ignored(self):
        proc = self.start()
        proc.send({"type": "cancel", "id": "unknown"})
        self.assertEqual(proc.call("j", {"op": "echo"})["result"]["cancelled"], False)
        self.assertEqual(proc.close(), 0)
        self.assertIn("ignored a cancel for job unknown", proc.stderr())

    def test_input_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "input.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"op": "echo", "big": [1, 2, 3]}, f)
            proc = self.start()
            answer = proc.call("f", None, input_file=path)
            self.assertEqual(answer["result"]["input"], {"op": "echo", "big": [1, 2, 3]})
            self.assertEqual(answer["result"]["input_path"], path)

            with open(path, "w", encoding="utf-8") as f:
                f.write("{not json")
            answer = proc.call("bad", None, input_file=path)
            self.assertFalse(answer["retryable"])
            self.assertIn("is not JSON", answer["message"])

            answer = proc.call("gone", None, input_file=os.path.join(tmp, "missing.json"))
            self.assertTrue(answer["retryable"])
            self.assertIn("cannot read the input file", answer["message"])

    def test_output_files_and_a_result_too_large_for_a_line(self):
        with tempfile.TemporaryDirectory() as out:
            proc = self.start()
            answer = proc.call("o", {"op": "outputs"}, output_dir=out)
            self.assertEqual(answer["result"]["dir"], out)
            self.assertEqual(len(answer["result"]["refused"]), 5, answer)
            with open(os.path.join(out, "a.txt")) as f:
                self.assertEqual(f.read(), "hello")
            with open(os.path.join(out, "sub", "dir", "b.bin"), "rb") as f:
                self.assertEqual(f.read(), b"\x00\x01")

            # Over the line limit: the result goes to a file the worker stores whole.
            answer = proc.call("h", {"op": "huge"}, output_dir=out)
            self.assertEqual(answer["type"], "result")
            self.assertNotIn("result", answer)
            with open(answer["result_file"], encoding="utf-8") as f:
                self.assertEqual(json.load(f), "x" * 1_100_000)
            self.assertEqual(os.path.dirname(answer["result_file"]), out)

        proc = self.start()
        answer = proc.call("none", {"op": "outputs"})
        self.assertEqual(answer["type"], "error")
        self.assertFalse(answer["retryable"])
        self.assertIn("need a payload bucket", answer["message"])

    def test_a_job_without_input_fails_for_good(self):
        proc = self.start()
        answer = proc.call("n", None)
        self.assertEqual(answer, {"type": "error", "id": "n", "message": "the job has no input",
                                  "retryable": False})

    def test_an_unencodable_result_fails_for_good(self):
        proc = self.start()
        for op, expected in (("unencodable", "not JSON serializable"), ("nan", "Out of range"),
                             ("huge", "over the protocol's limit")):
            with self.subTest(op=op):
                answer = proc.call(op, {"op": op})
                self.assertEqual(answer["type"], "error")
                self.assertFalse(answer["retryable"])
                self.assertIn(expected, answer["message"])

    def test_malformed_lines_are_logged_and_skipped(self):
        proc = self.start()
        proc.send_raw(b"not json\n")
        proc.send_raw(b"[1, 2]\n")
        proc.send_raw(b"\n")
        proc.send_raw(b"\xff\xfe garbage\n")
        proc.send({"type": "bogus", "id": "x"})
        proc.send({"type": "job"})
        proc.send({"type": "job", "id": "bad", "attempt": "first", "input": {}})
        self.assertEqual(proc.call("ok", {"op": "sleep", "seconds": 0}),
                         {"type": "result", "id": "ok", "result": "slept"})
        self.assertEqual(proc.close(), 0)
        stderr = proc.stderr()
        self.assertIn("not JSON", stderr)
        self.assertIn("not a JSON object", stderr)
        self.assertIn("unknown type", stderr)
        self.assertIn("without an id", stderr)
        self.assertIn("bad field", stderr)

    def test_jobs_are_served_in_order(self):
        proc = self.start()
        for i in range(3):
            proc.job(f"j{i}", {"op": "sleep", "seconds": 0.02})
        self.assertEqual([proc.recv_answer()["id"] for _ in range(3)], ["j0", "j1", "j2"])

    def test_eof_finishes_the_running_job_then_exits_0(self):
        proc = self.start()
        proc.job("last", {"op": "sleep", "seconds": 0.2})
        self.assertEqual(proc.close(), 0)
        lines = [json.loads(line) for line in proc.rest_of_stdout()]
        self.assertEqual(lines, [{"type": "result", "id": "last", "result": "slept"}])


if __name__ == "__main__":
    unittest.main()
