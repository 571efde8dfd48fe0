"""Tier budgets that come from the device: what "small", "medium" and "large" mean on it.

A profile's budgets (``hw_profiles/*.yaml``) are for the profile's own input shape. Where the
students take that shape, they are used as written. Where they do not (8x8 digits, 16x16
Fashion-MNIST against a profile written for 3x32x32), a budget in milliseconds for another
input means nothing, so each tier's budget becomes a **latency on that device**: the latency
at the 25th, 50th and 90th percentiles (tiers s, m, l) of random students of the space, each
timed by the device's own latency model (measured here with ONNX Runtime, read from its table,
or estimated from its facts). Two devices that rank students differently (a CPU paying a fixed
cost per operator, an accelerator bound by FLOPs and bytes) thus get budgets, and picks, of
their own. FLOPs and parameter caps stay optional: a profile's ``mflops``/``params_m`` limits
are kept only where its input matches.

Example:
    >>> budgets, rule = device_budgets(space, profile, latency)            # doctest: +SKIP
    >>> budgets["s"].latency_ms, rule                                         # doctest: +SKIP
    (0.081, 'latency percentiles 25/50/90 of 100 random students (measured)')
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from gtn_nas.errors import ConfigError
from gtn_nas.hardware.profiles import TierBudget
from gtn_nas.space.supernet import SupernetSpace

PERCENTILES: dict[str, float] = {"s": 25.0, "m": 50.0, "l": 90.0}
"""Each tier's latency percentile among random students when the profile's input differs."""

RULES = ("auto", "profile", "latency")
"""``auto``: the profile's budgets where its input matches the students', else latency
percentiles; ``profile``: always the profile's (a mismatch is the user's choice); ``latency``:
always the percentiles."""


def input_matches(space: SupernetSpace, profile) -> bool:
    """Whether the profile's input shape is the students' (channels, height, width)."""
    return tuple(profile.input.shape) == (space.in_channels, space.input_size,
                                          space.input_size)


def random_latencies(space: SupernetSpace, latency: Callable[[Mapping[str, Any]], float],
                     students: int = 100, seed: int = 0) -> list[float]:
    """The latencies of ``students`` seeded random students of ``space`` under ``latency``."""
    return [float(latency(space.sample((seed * 100_003 + i) % (2 ** 32))))
            for i in range(students)]


def latency_budgets(latencies: list[float], percentiles: Mapping[str, float] = PERCENTILES
                    ) -> dict[str, TierBudget]:
    """Each tier's latency budget at its percentile of ``latencies`` (ms, 5 significant
    digits); tiers in the order of ``percentiles``.

    Example:
        >>> budgets = latency_budgets([1.0, 2.0, 3.0, 4.0, 5.0])
        >>> [budgets[t].latency_ms for t in ("s", "m", "l")]
        [2.0, 3.0, 4.6]
    """
    if not latencies:
        raise ConfigError("latency budgets need at least one measured student")
    return {tier: TierBudget(latency_ms=float(f"{np.percentile(latencies, q):.5g}"))
            for tier, q in percentiles.items()}


def device_budgets(space: SupernetSpace, profile, latency, *, rule: str = "auto",
                   students: int = 100, seed: int = 0) -> tuple[dict[str, TierBudget], str]:
    """The tiers' budgets for ``profile`` and a sentence saying how they were set.

    Args:
        space: The students' space (its input decides whether the profile's budgets apply).
        profile: The device profile.
        latency: The device's latency model (``sample -> ms`` with a ``source``), or None.
        rule: One of :data:`RULES`.
        students: Random students timed for the percentiles.
        seed: Seeds the random students.

    Raises:
        ConfigError: an unknown rule, or percentiles asked for without a latency model.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown budget rule '{rule}'; rules: {', '.join(RULES)}")
    matches = input_matches(space, profile)
    if rule == "profile" or (rule == "auto" and matches):
        where = "its input" if matches else \
            f"its input {tuple(profile.input.shape)}, not the students'"
        return dict(profile.budgets), f"the profile's own budgets (written for {where})"
    if latency is None:
        raise ConfigError(f"profile {profile.name}: latency budgets need a latency model "
                          f"(--latency-mode measure, table or estimate)")
    if students < 4:
        raise ConfigError(f"latency budgets need at least 4 random students, got {students}")
    values = random_latencies(space, latency, students, seed)
    budgets = latency_budgets(values)
    reason = ("the profile's input " f"{tuple(profile.input.shape)} is not the students' "
              f"{(space.in_channels, space.input_size, space.input_size)}: "
              if not matches else "")
    percentiles = "/".join(f"{q:g}" for q in PERCENTILES.values())
    return budgets, (f"{reason}latency percentiles {percentiles} of {students} random "
                     f"students on {profile.name} ({latency.source})")
