"""The sentiment example as the worker runs it: a child process speaking worker/PROTOCOL.md.

    python3 -m unittest discover -s examples/sentiment -v    # with requirements.txt installed
"""

import importlib.util
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python" / "tests"))

from protocol_client import HandlerProcess  # noqa: E402 - after the path is set

HAVE_REQUIREMENTS = importlib.util.find_spec("vaderSentiment") is not None


@unittest.skipUnless(HAVE_REQUIREMENTS, "vaderSentiment is not installed: "
                     "pip install -r examples/sentiment/requirements.txt")
class SentimentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = HandlerProcess.python(str(HERE / "handler.py"))
        assert cls.proc.recv() == {"type": "ready"}

    @classmethod
    def tearDownClass(cls):
        code = cls.proc.close()
        cls.proc.kill()
        assert code == 0, f"exit code {code}; stderr:\n{cls.proc.stderr()}"

    def result(self, input):
        answer = self.proc.call("job", input)
        self.assertEqual(answer["type"], "result", answer)
        return answer["result"]

    def test_a_positive_sentence(self):
        scores = self.result({"text": "I love this, it is wonderful and works great!"})
        self.assertEqual(scores["label"], "positive")
        self.assertGreater(scores["compound"], 0.5)
        self.assertGreater(scores["pos"], scores["neg"])
        self.assertAlmostEqual(scores["neg"] + scores["neu"] + scores["pos"], 1.0, places=2)

    def test_a_negative_sentence(self):
        scores = self.result({"text": "This is terrible. I hate it and it broke after a day."})
        self.assertEqual(scores["label"], "negative")
        self.assertLess(scores["compound"], -0.5)

    def test_a_list_reports_progress_and_keeps_the_order(self):
        texts = ["What a great day", "Awful, just awful", "The box is brown"] * 10
        self.proc.job("many", {"texts": texts})
        progress = []
        while (line := self.proc.recv())["type"] == "progress":
            progress.append(line)
        self.assertEqual(line["type"], "result", line)
        labels = [r["label"] for r in line["result"]["results"]]
        self.assertEqual(labels, ["positive", "negative", "neutral"] * 10)
        self.assertGreater(len(progress), 1)
        self.assertEqual(progress[-1]["fraction"], 1.0)
        self.assertEqual(progress[-1]["message"], "30 of 30 texts")

    def test_bad_inputs_fail_for_good(self):
        for input, expected in (
            ({"text": ""}, "text is empty"),
            ({"text": "   "}, "text is empty"),
            ({"text": 42}, "text must be a string, not int"),
            ({}, 'no "text"'),
            ("just a string", "the input must be"),
            ({"texts": []}, "non-empty list"),
            ({"texts": ["fine", None]}, "texts[1] must be a string"),
        ):
            with self.subTest(input=input):
                answer = self.proc.call("bad", input)
                self.assertEqual(answer["type"], "error")
                self.assertFalse(answer["retryable"])
                self.assertIn(expected, answer["message"])


if __name__ == "__main__":
    unittest.main()
