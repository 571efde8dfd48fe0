"""gtn-nas: one Generic Teacher Network distilled into many hardware-specific NAS students.

The stages, each handing the next a file: search space (NNI ModelSpace, :mod:`gtn_nas.space.supernet`),
teacher training, hardware-aware search, distillation, export (:mod:`gtn_nas.space.export`).
"""

from __future__ import annotations

__version__ = "0.1.0"
