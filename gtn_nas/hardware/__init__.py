"""Stage 3, the hardware: device profiles and what a student costs on them.

Holds device profiles (``profile_schema``: the dataclasses; ``profiles``: loading and
validation), the machine's facts (``machine``), ONNX Runtime latency (``latency``: measuring
and the lookup table; ``latency_kernels``: per-kernel timing; ``latency_build``: building a
table on the device; ``latency_predictor``: the fitted predictor).

May import: ``gtn_nas.teacher``, ``gtn_nas.space``, the common floor and this package; never
``gtn_nas.distill`` (a stage of the same level).
"""
