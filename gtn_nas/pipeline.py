"""The end-to-end job, stage by stage, each stage handing the next a file in the run directory.

``run_demo`` chains what exists on the embedded default data (digits):

1. ``teacher/``: a GTN teacher (resnet32, grafted supernet branches) trained for a few epochs;
2. ``host_cpu.latency.json``: this machine's latency table for the teacher's space;
3. ``search/``: the s/m/l students for this machine, scored through the teacher's branch, with
   latency from the table and re-measured picks;
4. ``export/{s,m,l}.onnx``: each pick exported to ONNX and checked against PyTorch.

Distillation of the picks joins when it lands. The demo's tier budgets are MFLOPs at the 25th,
50th and 90th percentiles of random students of the (small, 8x8) space, since the bundled
host_cpu budgets are for 32x32 inputs at width 1.

Example:
    >>> result = run_demo("runs/demo", seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gtn_nas.costs import UnitCosts
from gtn_nas.engine import TrainConfig
from gtn_nas.export import check_parity, export_onnx
from gtn_nas.latency import build_latency_table
from gtn_nas.profiles import MeasurementSpec, TierBudget, load_profile
from gtn_nas.scoring import load_branch_scorer
from gtn_nas.report import save_search
from gtn_nas.search import run_search
from gtn_nas.train_teacher import TeacherRunConfig, train_teacher

_log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What :func:`run_demo` did and where it wrote it."""

    run_dir: Path
    teacher_history: list[dict[str, Any]]
    table_entries: int
    table_validation: dict[str, Any]
    picks: dict[str, Any]
    parity: dict[str, float]
    files: dict[str, Any] = field(default_factory=dict)


def run_demo(out_dir: str | os.PathLike = "runs/demo", seed: int = 0, dataset: str = "digits",
             data_root: str | None = None, epochs: int = 3, budget_evals: int = 300,
             hw: str = "host_cpu", download: bool = False,
             on_stage: Callable[[str], None] | None = None) -> DemoResult:
    """Runs teacher training, latency profiling, search and export into ``out_dir``.

    Args:
        out_dir: Run directory (must not hold a previous demo's teacher checkpoint).
        seed: Seeds training, search and students.
        dataset: Dataset name (default: the embedded ``digits``).
        data_root: Dataset folder, for datasets that need one.
        epochs: Teacher epochs.
        budget_evals: Candidates the search evaluates.
        hw: The profile of this machine (must have ``runs_here``).
        download: Let torchvision download the dataset.
        on_stage: Called with a one-line description as each stage starts.
    """
    say = on_stage or (lambda text: _log.info(text))
    out = Path(out_dir)
    if budget_evals < 6 or epochs < 1:
        from gtn_nas.errors import ConfigError
        raise ConfigError(f"the demo needs --epochs >= 1 and --budget-evals >= 6 (3 tiers), got "
                          f"{epochs} and {budget_evals}")
    profile = load_profile(hw)
    if not profile.device.runs_here:
        from gtn_nas.errors import ConfigError
        raise ConfigError(f"the demo measures latency here: --hw must be a profile with "
                          f"runs_here (e.g. host_cpu), not {profile.name}")

    say(f"1/4 training a GTN teacher (resnet32, {dataset}, {epochs} epochs)")
    config = TeacherRunConfig(method="gtn", teacher="resnet32", data=dataset,
                              data_root=data_root, download=download,
                              train=TrainConfig(epochs=epochs, seed=seed, progress=False))
    teacher_run = train_teacher(config, out / "teacher")

    space, scorer = load_branch_scorer(teacher_run.teacher_path)
    unit_costs = UnitCosts(space)
    mflops = sorted(unit_costs.flops(space.sample(seed * 1000 + i)) / 1e6 for i in range(200))
    budgets = {tier: TierBudget(mflops=round(float(np.percentile(mflops, q)), 4))
               for tier, q in (("s", 25), ("m", 50), ("l", 90))}
    table_path = out / f"{profile.name}.latency.json"
    profile = dataclasses.replace(
        profile, budgets=budgets, latency_table=str(table_path.resolve()),
        measurement=MeasurementSpec(warmup=5, repeats=20, statistic="median"))

    say(f"2/4 measuring this machine's latency table for the teacher's space ({space.spec})")
    table = build_latency_table(space, profile, seed=seed, overhead_students=4,
                                validation_students=8)
    table.save(table_path)

    say(f"3/4 searching s/m/l students ({budget_evals} candidates, scored through the "
        f"teacher's branch)")
    result = run_search(space, profile, budget_evals=budget_evals, seed=seed, scorer=scorer,
                        scored_by="GTN branch-1 validation accuracy")
    files = save_search(result, out / "search", space, profile)

    say("4/4 exporting the picks to ONNX (parity checked against PyTorch)")
    parity = {}
    files["onnx"] = {}
    for tier, pick in result.picks.items():
        student = space.freeze(pick.sample, seed=seed).eval()
        path = export_onnx(student, out / "export" / f"{tier}.onnx", space.example_input())
        inputs = torch.randn(4, space.in_channels, space.input_size, space.input_size,
                             generator=torch.Generator().manual_seed(seed))
        parity[tier] = check_parity(student, path, inputs)
        files["onnx"][tier] = path
    files["table"] = table_path
    files["teacher"] = teacher_run.teacher_path
    return DemoResult(out, teacher_run.fit.history, len(table.entries), table.validation,
                      result.picks, parity, files)
