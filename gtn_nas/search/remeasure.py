"""Re-measuring a search's picks on this machine, robust to a busy machine.

The picks are timed in alternating rounds with a reference model
(:func:`gtn_nas.hardware.latency.measure_interleaved`). The reference's rounds give the machine's own
noise now (the spread of repeated measurements of one model), and, when the latency table
recorded the reference's latency at build time, how much slower the machine runs now (the
load factor); a pick's latency relative to its neighbouring reference rounds, times the
reference's build-time latency, is its load-normalised latency.

Re-measurement is trusted only when the noise is small and the machine is not much slower
than at build time. Trusted, a pick clearly over its latency budget (beyond the noise) is
replaced by the next best candidate that measures within it; untrusted, the latency model's
picks are kept and the notes say why. Nothing here raises because the machine is busy.

Example:
    >>> picks, notes, check = remeasure_picks(space, profile, picks, ranked, budgets,
    ...                                       latency)                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import statistics
from typing import Any, Mapping

from gtn_nas.errors import GtnNasError
from gtn_nas.space.supernet import SupernetSpace

_log = logging.getLogger(__name__)

MAX_NOISE = 0.05
MAX_LOAD = 1.3
MIN_MARGIN = 0.02


def noise_margin(noise: float | None) -> float:
    """How far over its budget a re-measured pick may be and still count as within it: the
    machine's own spread (the reference's), at least 2%."""
    return 1.0 + max(noise or 0.0, MIN_MARGIN)


def _reference(space: SupernetSpace, latency) -> tuple[dict, float | None]:
    """The reference sample and its latency at table build time (None when unknown)."""
    noise = getattr(getattr(latency, "table", None), "noise", None) or {}
    if noise.get("reference") and noise.get("median_ms"):
        try:
            return space.validate(noise["reference"]), float(noise["median_ms"])
        except GtnNasError:
            pass
    return space.reference_sample, None


def _measure(space: SupernetSpace, profile, samples: Mapping[str, dict], reference: dict,
             rounds: int) -> dict[str, Any]:
    from gtn_nas.hardware.latency import measure_interleaved, student_input_shape

    modules = {name: space.freeze(sample, seed=0).eval() for name, sample in samples.items()}
    return measure_interleaved(modules, space.freeze(reference, seed=0).eval(),
                               student_input_shape(space, profile), profile, rounds=rounds)


def remeasure_picks(space: SupernetSpace, profile, picks: dict, ranked: dict,
                    budgets: Mapping[str, Mapping[str, float]], latency, *, rounds: int = 4,
                    max_noise: float = MAX_NOISE, max_load: float = MAX_LOAD, tries: int = 3
                    ) -> tuple[dict, list[str], dict[str, Any]]:
    """Re-measures ``picks`` (tier -> Candidate) and returns (picks, notes, check).

    Args:
        space: The space.
        profile: This machine's profile.
        picks: Tier -> the latency model's pick.
        ranked: Tier -> feasible candidates, best first (``ranked[t][0] is picks[t]``).
        budgets: Tier -> limits.
        latency: The search's latency model (its table gives the reference's build-time
            latency), or None.
        rounds: Interleaved rounds per model.
        max_noise: Trust re-measurement only when the reference's spread is at most this.
        max_load: ... and the reference runs at most this many times slower than at build.
        tries: Candidates after the pick measured when a trusted pick misses its budget.

    Returns:
        The picks (the latency model's unless a trusted re-measurement replaced one), notes
        for the summary, and ``check``: the reference, its rounds, the noise, the load factor
        and whether the re-measurement was trusted.
    """
    reference, baseline = _reference(space, latency)
    try:
        result = _measure(space, profile, {t: c.sample for t, c in picks.items()}, reference,
                          rounds)
    except (GtnNasError, OSError, RuntimeError) as exc:
        note = f"re-measurement failed ({exc}); keeping the picks of the latency model"
        _log.warning(note)
        return picks, [note], {"trusted": False, "error": str(exc)}
    noise = result["noise"]
    reference_ms = statistics.median(result["reference"])
    load = reference_ms / baseline if baseline else None
    trusted = noise <= max_noise and (load is None or load <= max_load)
    check = {"reference_ms": round(reference_ms, 5), "reference_rounds":
             [round(v, 5) for v in result["reference"]], "noise": round(noise, 4),
             "baseline_ms": baseline, "load": None if load is None else round(load, 3),
             "trusted": trusted, "rounds": rounds}

    def record(candidate, name: str, measured: dict[str, Any]) -> float:
        raw = statistics.median(measured["rounds"][name])
        normalized = measured["ratio"][name] * baseline if baseline else raw
        candidate.measured = {"median_ms": round(raw, 5), "normalized_ms": round(normalized, 5),
                              "noise": round(measured["noise"], 4),
                              "load": check["load"], "trusted": trusted}
        return normalized

    values = {tier: record(pick, tier, result) for tier, pick in picks.items()}
    notes = []
    if not trusted:
        why = [f"the reference model's repeated measurements spread {noise * 100:.1f}%"]
        if load is not None:
            why.append(f"it ran {load:.2f}x its build-time latency")
        notes.append(f"re-measurement not trusted ({', '.join(why)}; limits "
                     f"{max_noise * 100:.0f}% and {max_load:g}x): the machine is busy, so the "
                     f"latency model's picks are kept")
        return picks, notes, check
    picks = dict(picks)
    for tier, pick in list(picks.items()):
        limit = budgets[tier].get("latency_ms")
        margin = noise_margin(noise)
        if limit is None or values[tier] <= limit * margin:
            continue
        others = {f"{tier}#{i}": c for i, c in enumerate(ranked[tier][1:1 + tries], start=1)}
        replaced = None
        if others:
            try:
                more = _measure(space, profile, {k: c.sample for k, c in others.items()},
                                reference, rounds)
            except (GtnNasError, OSError, RuntimeError) as exc:
                more = None
                _log.warning("re-measuring alternatives failed: %s", exc)
            if more is not None and more["noise"] <= max_noise:
                for key, candidate in others.items():
                    if record(candidate, key, more) <= limit * margin:
                        replaced = candidate
                        break
        if replaced is not None:
            picks[tier] = replaced
            notes.append(f"tier {tier}: the best pick measured {values[tier]:.3f} ms (load-"
                         f"normalised), over {limit:g} ms; replaced by the next best that "
                         f"measured within it")
        else:
            why = ("the latency table may be stale: rebuild it with gtn-nas profile"
                   if getattr(latency, "source", None) == "table" else
                   "the search measured each student once, and a second measurement of so "
                   "short a run differs by more than the reference's spread")
            notes.append(f"tier {tier}: the pick measured {values[tier]:.3f} ms (load-"
                         f"normalised), over {limit:g} ms, and no alternative fitted; kept it "
                         f"({why})")
    return picks, notes, check
