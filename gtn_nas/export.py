"""ONNX export of a frozen student and the ONNX Runtime parity check.

Export uses torch's TorchScript-based exporter (``dynamo=False``): the dynamo exporter of torch
2.x needs ``onnxscript`` and writes external data files, neither of which a small CNN needs. The
file is written atomically (temporary file + rename) with a dynamic batch dimension.

Example:
    >>> path = export_onnx(student, "student.onnx", space.example_input())   # doctest: +SKIP
    >>> check_parity(student, path, torch.randn(4, 3, 32, 32))               # doctest: +SKIP
    3.1e-07
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gtn_nas.errors import GtnNasError
from gtn_nas.fileio import atomic_write_bytes

DEFAULT_OPSET = 17
PARITY_ATOL = 1e-4


class ParityError(GtnNasError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = True) -> Path:
    """Exports ``model`` (in eval mode) to ``path`` and returns the path.

    Args:
        model: A plain module (a frozen student).
        path: Destination ``.onnx`` file; its folder is created.
        example_input: An input of the right shape (batch size free when ``dynamic_batch``).
        opset: ONNX opset version.
        dynamic_batch: Export the batch dimension as dynamic.
    """
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example_input,), buffer, dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}
                if dynamic_batch else None,
            )
    finally:
        model.train(was_training)
    return atomic_write_bytes(path, buffer.getvalue())


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None):
    """An ONNX Runtime inference session (CPU provider unless ``providers`` say otherwise)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options,
                                providers=providers or ["CPUExecutionProvider"])


def check_parity(model: nn.Module, path: str | os.PathLike, inputs: torch.Tensor,
                 atol: float = PARITY_ATOL) -> float:
    """Runs ``inputs`` through PyTorch (eval mode) and ONNX Runtime; returns the max abs diff.

    Raises:
        ParityError: the difference exceeds ``atol``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(inputs).numpy()
    finally:
        model.train(was_training)
    session = onnx_session(path)
    actual = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    diff = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if not diff <= atol:
        raise ParityError(f"{path}: ONNX Runtime and PyTorch logits differ by {diff:.3g} "
                          f"(tolerance {atol:g})")
    return diff
