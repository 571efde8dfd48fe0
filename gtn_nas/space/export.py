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
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class ExportReport:
    """What :func:`export_and_check` did: the file, the parity and this machine's timings."""

    path: Path
    max_abs_diff: float
    parity_inputs: str
    ort_ms: float | None = None
    torch_ms: float | None = None
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"onnx": str(self.path), "max_abs_diff": self.max_abs_diff,
                "parity_inputs": self.parity_inputs, "opset": self.opset,
                "dynamic_batch": self.dynamic_batch,
                "ort_ms_batch1": None if self.ort_ms is None else round(self.ort_ms, 5),
                "torch_ms_batch1": None if self.torch_ms is None else round(self.torch_ms, 5)}


def _median_ms(run: Any, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def eager_vs_ort_ms(model: nn.Module, path: str | os.PathLike, example: torch.Tensor,
                    warmup: int = 5, repeats: int = 30) -> tuple[float, float]:
    """Median latency (ms) of ONNX Runtime and of PyTorch eager on ``example``, this machine."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    feed = {name: example.numpy()}
    ort_ms = _median_ms(lambda: session.run(None, feed), warmup, repeats)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch_ms = _median_ms(lambda: model(example), warmup, repeats)
    finally:
        model.train(was_training)
    return ort_ms, torch_ms


def export_and_check(model: nn.Module, path: str | os.PathLike, inputs: torch.Tensor, *,
                     opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                     atol: float = PARITY_ATOL, parity_inputs: str = "given batch",
                     time_it: bool = True) -> ExportReport:
    """Exports ``model``, checks the file with the ONNX checker and ONNX Runtime parity on
    ``inputs`` (a real batch where there is one), and times ORT vs PyTorch eager at batch 1.

    A file that fails the checker or parity is removed: nothing half-right is left for a later
    run to trust.

    Raises:
        ParityError: the ONNX checker rejects the file, or the logits differ beyond ``atol``.
    """
    import onnx

    example = inputs[:1] if dynamic_batch else inputs
    path = export_onnx(model, path, example, opset=opset, dynamic_batch=dynamic_batch)
    try:
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # onnx raises its own ValidationError kinds
            first = str(exc).strip().splitlines()
            raise ParityError(f"{path}: the ONNX checker rejects the export: "
                              f"{first[0] if first else type(exc).__name__}") from exc
        diff = check_parity(model, path, inputs if dynamic_batch else example, atol=atol)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    report = ExportReport(Path(path), diff, parity_inputs, opset=opset,
                          dynamic_batch=dynamic_batch)
    if time_it:
        report.ort_ms, report.torch_ms = eager_vs_ort_ms(model, path, inputs[:1])
    return report


def export_student_checkpoint(student_path: str | os.PathLike, out_path: str | os.PathLike, *,
                              opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                              space: str | None = None, data: str | None = None,
                              data_root: str | None = None) -> ExportReport:
    """``gtn-nas export``: a student checkpoint to ONNX, checked and timed.

    The parity batch is real: the first test images of the data the student was distilled on
    (recorded in the checkpoint), or of ``data``; random normal inputs only when that data
    cannot be loaded here (said in the report).

    Args:
        student_path: ``student_last.pt`` / ``student_best.pt`` (``gtn-nas distill``).
        out_path: The ``.onnx`` file.
        opset: ONNX opset version.
        dynamic_batch: Export a dynamic batch dimension (else batch 1).
        space: The plugin file the student was made with (plugin files run only when named).
        data, data_root: Dataset for the parity batch, instead of the recorded one.

    Raises:
        ConfigError: unreadable or foreign checkpoint, an output path that is a directory.
        ParityError: the ONNX checker fails or ORT differs from PyTorch beyond tolerance.
    """
    from gtn_nas.errors import ConfigError, DataError
    from gtn_nas.space.students import load_student

    out_path = Path(out_path)
    if out_path.is_dir():
        raise ConfigError(f"--out {out_path} is a directory; give a .onnx file name")
    space_obj = None
    if space is not None:
        from gtn_nas.fileio import load_checkpoint
        from gtn_nas.space.plugins import build_space, resolve_spec
        from gtn_nas.space.students import CHECKPOINT_FORMAT

        payload = load_checkpoint(student_path, CHECKPOINT_FORMAT, "student checkpoint")
        if resolve_spec(space) != resolve_spec(str(payload.get("space"))):
            raise ConfigError(f"--space {space} is not the student's space "
                              f"{payload.get('space')}")
        space_obj = build_space(space, **dict(payload.get("options") or {}))
    loaded = load_student(student_path, space_obj)
    model = loaded.model.eval()
    recorded = loaded.extra.get("data") if isinstance(loaded.extra.get("data"), dict) else {}
    name = data or recorded.get("name")
    inputs, source = None, "random normal inputs (no dataset recorded)"
    if name:
        from gtn_nas.data import load_dataset

        try:
            splits = load_dataset(name, root=data_root or recorded.get("root"),
                                  image_size=loaded.space.input_size,
                                  seed=int(recorded.get("seed", 0) or 0), augment=False,
                                  **((recorded.get("options") or {}) if not data else {}))
            inputs = torch.stack([splits.test[i][0] for i in range(min(16, len(splits.test)))])
            source = f"{name} test images"
        except (DataError, ConfigError) as exc:
            source = f"random normal inputs ({name} unavailable here: {exc})"
    if inputs is None:
        inputs = torch.randn(16, loaded.space.in_channels, loaded.space.input_size,
                             loaded.space.input_size, generator=torch.Generator().manual_seed(0))
    if tuple(inputs.shape[1:]) != tuple(loaded.space.example_input().shape[1:]):
        raise ConfigError(f"the parity data's images are {tuple(inputs.shape[1:])}, the "
                          f"student takes {tuple(loaded.space.example_input().shape[1:])}")
    if not dynamic_batch:
        inputs = inputs[:1]
    return export_and_check(model, out_path, inputs, opset=opset, dynamic_batch=dynamic_batch,
                            parity_inputs=source)
