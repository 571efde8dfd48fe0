"""ONNX export: files, dynamic batch, and a parity check that can fail."""

from __future__ import annotations

import onnx
import pytest
import torch

from gtn_nas.space.export import ParityError, check_parity, export_onnx


def test_export_writes_a_valid_model_and_parity_detects_drift(small_space, tmp_path):
    student = small_space.freeze(small_space.preset(next(iter(small_space.presets)))).eval()
    path = export_onnx(student, tmp_path / "sub" / "s.onnx", small_space.example_input())
    onnx.checker.check_model(onnx.load(str(path)))
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["s.onnx"], "no temp files"
    x = torch.randn(2, small_space.in_channels, small_space.input_size, small_space.input_size)
    assert check_parity(student, path, x) <= 1e-4
    with torch.no_grad():  # the PyTorch model changes after export: parity must fail
        student[-1].fc.bias.add_(0.5)
    with pytest.raises(ParityError, match="differ by"):
        check_parity(student, path, x)
    assert student.training is False
