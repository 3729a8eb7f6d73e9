"""Writes the demo model: a small two-layer classifier in ONNX, with fixed weights.

    python3 make_model.py model.onnx        # needs requirements-model.txt

A stand-in for your own model, so that the image answers jobs as built: 4 features in, 3 class
scores out (softmax). Replace /app/model.onnx (or point SLUICE_MODEL_PATH elsewhere, e.g. an EFS
mount) with a real one; the handler reads the input and output names from the model itself.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, HIDDEN, CLASSES = 4, 16, 3


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(7)  # fixed weights: the same model at every build
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, HIDDEN)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(HIDDEN, dtype=np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (HIDDEN, CLASSES)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(CLASSES, dtype=np.float32), "b2")
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["activated"]),
        helper.make_node("Gemm", ["activated", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "sluice-demo-classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[w1, b1, w2, b2],
    )
    # Opset 17 and IR 8: what onnxruntime 1.20 reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_model.py OUTPUT.onnx")
    onnx.save(build(), sys.argv[1])
