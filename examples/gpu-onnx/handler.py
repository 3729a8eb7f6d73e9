"""An ONNX model on an NVIDIA GPU with onnxruntime-gpu (CUDA execution provider).

Input ``{"features": [[f1, f2, ...], ...]}``: a batch of rows, each as wide as the model's input.
Output ``{"scores": [[...], ...], "labels": [i, ...], "device": "cuda"}``: the model's output
rows, the index of each row's largest score, and where it ran (``cpu`` when no GPU is visible:
the same image runs on a laptop, slowly).

The model is ``SLUICE_MODEL_PATH`` (default ``/app/model.onnx``, the demo classifier written by
make_model.py at build time). It loads once per process, before the worker hands it a job; run
one process per GPU (``SLUICE_CONCURRENCY=1`` with one GPU per task).
"""

import os
import sys
from pathlib import Path

try:
    import sluice_handler
except ImportError:  # run from the repository without `pip install ./python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import sluice_handler

MODEL_PATH = os.environ.get("SLUICE_MODEL_PATH", "/app/model.onnx")
MAX_ROWS = 4096


class Model:
    """An onnxruntime session on the GPU when there is one, with its input's name and width."""

    def __init__(self, path):
        import onnxruntime  # the GPU build: onnxruntime-gpu

        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = onnxruntime.InferenceSession(path, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        width = meta.shape[-1]
        self.width = width if isinstance(width, int) else None

    def run(self, rows):
        import numpy

        batch = numpy.asarray(rows, dtype=numpy.float32)
        (scores,) = self.session.run(None, {self.input_name: batch})[:1]
        return scores.tolist()


def parse_features(input, width=None):
    """The input's rows as lists of floats; a bad input is a PermanentError (it would never run)."""
    if not isinstance(input, dict) or "features" not in input:
        raise sluice_handler.PermanentError('the input must be {"features": [[number, ...], ...]}')
    rows = input["features"]
    if not isinstance(rows, list) or not rows:
        raise sluice_handler.PermanentError("features must be a non-empty list of rows")
    if len(rows) > MAX_ROWS:
        raise sluice_handler.PermanentError(f"features has {len(rows)} rows, at most {MAX_ROWS} per job")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row):
            raise sluice_handler.PermanentError(f"features[{i}] must be a list of numbers")
        if width is not None and len(row) != width:
            raise sluice_handler.PermanentError(f"features[{i}] has {len(row)} values, the model takes {width}")
        out.append([float(x) for x in row])
    if width is None and len({len(r) for r in out}) > 1:
        raise sluice_handler.PermanentError("every row of features must have the same length")
    return out


def argmax(row):
    return max(range(len(row)), key=row.__getitem__)


def make_handler(model):
    def handle(input, ctx):
        rows = parse_features(input, model.width)
        ctx.progress(0.1, f"{len(rows)} rows on {model.device}")
        scores = model.run(rows)
        return {"scores": scores, "labels": [argmax(s) for s in scores], "device": model.device}

    return handle


if __name__ == "__main__":
    model = Model(MODEL_PATH)  # once per process, before run() says "ready"
    print(f"model {MODEL_PATH} loaded on {model.device}", file=sys.stderr)
    sluice_handler.run(make_handler(model))
