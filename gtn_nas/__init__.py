"""gtn-nas: one Generic Teacher Network distilled into many hardware-specific NAS students.

The stages, each handing the next a file: search space (NNI ModelSpace, :mod:`gtn_nas.space.supernet`),
teacher training, hardware-aware search, distillation, export (:mod:`gtn_nas.space.export`).

The public functions and configurations are importable from here (docs/api.md). They load
lazily (PEP 562): ``import gtn_nas`` imports neither torch nor NNI; the first use of a name
imports the module that defines it.

Example:
    >>> import gtn_nas
    >>> gtn_nas.TrainConfig.__module__, gtn_nas.distill_students.__module__
    ('gtn_nas.train_config', 'gtn_nas.distill.jobs')
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data, search space, device profiles
    "DataConfig": "gtn_nas.config",
    "load_dataset": "gtn_nas.data",
    "build_space": "gtn_nas.space.plugins",
    "load_profile": "gtn_nas.hardware.profiles",
    # the training loop's settings
    "TrainConfig": "gtn_nas.train_config",
    # the stages
    "TeacherRunConfig": "gtn_nas.teacher.config",
    "train_teacher": "gtn_nas.teacher.train",
    "run_search": "gtn_nas.search.strategy",
    "search_devices": "gtn_nas.search.devices",
    "HalvingConfig": "gtn_nas.search.selection",
    "DistillRunConfig": "gtn_nas.distill.config",
    "distill_students": "gtn_nas.distill.jobs:distill",
    "export_student_checkpoint": "gtn_nas.space.export",
    # the whole job
    "RunConfig": "gtn_nas.run.config",
    "load_run_config": "gtn_nas.run.config",
    "run_pipeline": "gtn_nas.run.pipeline",
}
"""Public name -> the module that defines it (``module:attribute`` where the names differ).

The distillation stage's function :func:`gtn_nas.distill.jobs.distill` is exported as
``distill_students``: ``gtn_nas.distill`` is the distillation subpackage, and the import system
sets that attribute to the subpackage whenever any of its modules is imported, so a top-level
function of the same name could not be relied on."""

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
