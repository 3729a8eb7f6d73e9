"""The GPU example's input handling, without a GPU; its model too where onnxruntime is installed.

    python3 -m unittest discover -s examples/gpu-onnx -v
"""

import importlib.util
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "python"))

import handler  # noqa: E402 - after the path is set
import sluice_handler  # noqa: E402

HAVE_RUNTIME = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "numpy"))


class FeaturesTest(unittest.TestCase):
    def test_rows_become_floats(self):
        self.assertEqual(handler.parse_features({"features": [[1, 2.5, 0, -1]]}, 4), [[1.0, 2.5, 0.0, -1.0]])

    def test_a_bad_input_fails_for_good(self):
        for bad in [[], {"rows": []}, {"features": []}, {"features": [[1, "x"]]}, {"features": [[True]]},
                    {"features": [[1, 2], [1]]}, {"features": "1,2"}]:
            with self.subTest(bad=bad), self.assertRaises(sluice_handler.PermanentError):
                handler.parse_features(bad)

    def test_the_width_is_the_models(self):
        with self.assertRaisesRegex(sluice_handler.PermanentError, "has 3 values, the model takes 4"):
            handler.parse_features({"features": [[1, 2, 3]]}, 4)

    def test_too_many_rows_fail(self):
        with self.assertRaises(sluice_handler.PermanentError):
            handler.parse_features({"features": [[0.0]] * (handler.MAX_ROWS + 1)})

    def test_labels_are_the_largest_scores(self):
        self.assertEqual(handler.argmax([0.1, 0.7, 0.2]), 1)


@unittest.skipUnless(HAVE_RUNTIME, "onnxruntime, onnx and numpy are not installed: the image has them "
                     "(requirements-gpu.txt, requirements-model.txt)")
class ModelTest(unittest.TestCase):
    def test_the_demo_model_scores_a_batch(self):
        import tempfile

        import make_model
        import onnx

        with tempfile.TemporaryDirectory() as d:
            path = str(Path(d) / "model.onnx")
            onnx.save(make_model.build(), path)
            model = handler.Model(path)
        self.assertEqual(model.width, make_model.FEATURES)
        out = handler.make_handler(model)({"features": [[0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0]]}, _Ctx())
        self.assertEqual(len(out["scores"]), 2)
        for row in out["scores"]:
            self.assertAlmostEqual(sum(row), 1.0, places=5)
        self.assertIn(out["device"], ("cuda", "cpu"))


class _Ctx:
    def progress(self, fraction=None, message=None):
        pass


if __name__ == "__main__":
    unittest.main()
