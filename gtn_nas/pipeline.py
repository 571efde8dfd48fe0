"""The end-to-end job, stage by stage, each stage handing the next a file in the run directory.

Today it covers the stages that exist: data -> search space -> a sampled student -> export with
the ONNX Runtime parity check. Teacher training, the hardware-aware search and distillation join
it as they land (see the open issues).

Example:
    >>> result = run_demo("runs/demo", seed=0)   # doctest: +SKIP
    >>> result.parity < 1e-4                      # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gtn_nas.costs import LayerCost, count_flops, count_params, layer_costs
from gtn_nas.data import load_dataset, make_loaders
from gtn_nas.export import check_parity, export_onnx
from gtn_nas.plugins import DEFAULT_SPACE, build_space
from gtn_nas.students import save_sample_file, save_student

_log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What :func:`run_demo` did and where it wrote it."""

    dataset: str
    num_train: int
    num_val: int
    num_test: int
    space_spec: str
    space_size: int
    sample: dict[str, Any]
    sample_summary: str
    params: int
    flops: int
    input_shape: tuple[int, ...]
    layer_costs: list[LayerCost]
    logits_shape: tuple[int, ...]
    parity: float
    sample_path: Path
    student_path: Path
    onnx_path: Path


def run_demo(out_dir: str | os.PathLike = "runs/demo", seed: int = 0, dataset: str = "digits",
             data_root: str | None = None, space: str = DEFAULT_SPACE,
             width_mult: float = 0.25, download: bool = False) -> DemoResult:
    """Loads ``dataset``, builds the space for it, samples, freezes, saves and exports a student.

    Args:
        out_dir: Run directory (created); receives ``student.yaml``, ``student.pt``,
            ``student.onnx``.
        seed: Seeds the data split, the sampled architecture and the student's initialisation.
        dataset: A registered dataset name (default: the embedded ``digits``).
        data_root: Dataset folder, for datasets that need one.
        download: Let torchvision download a dataset that can be downloaded (cifar100).
        space: Search space name or ``file.py:factory``.
        width_mult: Channel width multiplier of the space (small inputs want narrow students).
    """
    out = Path(out_dir)
    splits = load_dataset(dataset, root=data_root, seed=seed, augment=False, download=download)
    _log.info("%s: %d/%d/%d images", dataset, len(splits.train), len(splits.val),
              len(splits.test))
    supernet = build_space(space, num_classes=splits.num_classes,
                           in_channels=splits.in_channels, input_size=splits.image_size,
                           width_mult=width_mult)
    sample = supernet.sample(seed)
    student = supernet.freeze(sample, seed=seed).eval()
    example = supernet.example_input()
    sample_path = save_sample_file(out / "student.yaml", sample, supernet, seed=seed)
    student_path = save_student(out / "student.pt", student, supernet, sample)
    _, _, test_loader = make_loaders(splits, batch_size=64, seed=seed)
    images, _ = next(iter(test_loader))
    with torch.no_grad():
        logits = student(images)
    onnx_path = export_onnx(student, out / "student.onnx", example)
    parity = check_parity(student, onnx_path, images)
    return DemoResult(
        dataset=dataset, num_train=len(splits.train), num_val=len(splits.val),
        num_test=len(splits.test), space_spec=supernet.spec, space_size=supernet.size(),
        sample=sample, sample_summary=supernet.describe_sample(sample), params=count_params(student), flops=count_flops(student, example),
        input_shape=tuple(example.shape), layer_costs=layer_costs(student, example),
        logits_shape=tuple(logits.shape), parity=parity, sample_path=sample_path,
        student_path=student_path, onnx_path=onnx_path)
