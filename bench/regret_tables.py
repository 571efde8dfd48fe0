"""The tables and figures of bench/search_regret.py: the reference pool, each method's picks
scored against it, the cost of picking, and halving settings replayed on the pool's curves.

A pick's accuracy is its test top-1 averaged over the pool's seeds (1 and 2); the pool's best
is the best such mean among every trained student within the tier's budget (the pool's random
students and every method's picks alike); regret is the best minus the pick, in points; a hit
is a pick among the best 10% of those students (at least one).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- regret:begin -->", "<!-- regret:end -->"
METHODS = ("trained", "trained-best", "flops", "naswot", "params")
LABELS = {"trained": "trained (successive halving; gtn-nas run's default)",
          "trained-best": "trained, best within budget (tiers may coincide)",
          "flops": "FLOPs (the old default)", "naswot": "NASWOT", "params": "parameters"}
TARGETS = {"mean_regret": 1.0, "worst_regret": 2.0, "hit_rate": 0.8, "min_acc": 70.0,
           "cost_ratio": 3.0}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_pool(out: Path) -> dict[str, dict[str, Any]]:
    """Student key -> {sample, latency_ms, test (per seed), val curves, seconds}."""
    pool = _read(out / "pool.json") or {"students": {}}
    latency = _read(out / "latency.json") or {}
    students: dict[str, dict[str, Any]] = {}
    for folder in sorted((out / "pool").glob("*")):
        for result_file in sorted(folder.glob("seed*/pool.json")):
            result = _read(result_file)
            if result is None:
                continue
            entry = students.setdefault(folder.name, {"test": {}, "val": {}, "loss": {},
                                                      "seconds": {},
                                                      "latency_ms": latency.get(folder.name)})
            entry["test"][result["seed"]] = result["test_acc"] * 100
            entry["val"][result["seed"]] = [None if v is None else v * 100
                                            for v in result["val"]]
            entry["loss"][result["seed"]] = result["train_loss"]
            entry["flops"] = result.get("mflops", 0.0)
            entry["seconds"][result["seed"]] = result["seconds"]
            entry["params"] = result.get("params")
    samples = {k: v["sample"] for k, v in pool["students"].items()}
    from gtn_nas.search.selection import sample_key

    for file in sorted((out / "searches").glob("*.json")):
        search = _read(file) or {}
        trials = [t for selection in (search.get("selection") or {}).values()
                  for t in selection["trials"]]  # every trained candidate, picks included
        for pick in [*search.get("picks", {}).values(), *trials]:
            samples.setdefault(sample_key(pick["sample"]), pick["sample"])
    for key, info in pool["students"].items():
        if key in students and students[key]["latency_ms"] is None:
            students[key]["latency_ms"] = info["latency_ms"]
    for key, entry in students.items():
        entry["sample"] = samples.get(key)
    return students


def encode(sample: dict[str, Any], entry: dict[str, Any]) -> list[float]:
    """An architecture as numbers: per layer the op (one-hot), kernel and depth of a
    resblock; then log parameters, log MFLOPs and latency."""
    import math

    row: list[float] = []
    for layer in range(1, 7):
        op = sample.get(f"layer{layer}/op")
        row += [float(op == "zero"), float(op == "identity"), float(op == "resblock"),
                float(sample.get(f"layer{layer}/kernel", 0)) if op == "resblock" else 0.0,
                float(sample.get(f"layer{layer}/depth", 0)) if op == "resblock" else 0.0]
    return row + [math.log(max(entry.get("params") or 1, 1)),
                  math.log(max(entry.get("flops") or 1e-3, 1e-3)), entry["latency_ms"] or 0.0]


def predicted_accuracy(students, members: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Per tier, an accuracy predictor's guesses for that tier's pool students, fitted on
    every other trained student (seed 1's final validation top-1; gradient boosting on
    :func:`encode`): what a search would know from the students trained before it."""
    import numpy as np
    from sklearn.ensemble import GradientBoostingRegressor

    usable = {k: e for k, e in students.items() if e.get("sample") and 1 in e["val"]}
    guesses = {}
    for tier, keys in members.items():
        train = [k for k in usable if k not in keys]
        if len(train) < 10:
            continue
        model = GradientBoostingRegressor(n_estimators=200, max_depth=3, random_state=0)
        model.fit(np.array([encode(usable[k]["sample"], usable[k]) for k in train]),
                  np.array([usable[k]["val"][1][-1] for k in train]))
        targets = [k for k in keys if k in usable]
        values = model.predict(np.array([encode(usable[k]["sample"], usable[k])
                                         for k in targets])) if targets else []
        guesses[tier] = dict(zip(targets, map(float, values)))
    return guesses


def mean_acc(entry: dict[str, Any]) -> float | None:
    values = list(entry["test"].values())
    return statistics.mean(values) if len(values) >= 2 else None


def within(students: dict[str, Any], limit: float) -> dict[str, float]:
    """Key -> mean test top-1 of every fully trained student within ``limit`` ms."""
    return {k: mean_acc(e) for k, e in students.items()
            if e["latency_ms"] is not None and e["latency_ms"] <= limit
            and mean_acc(e) is not None}


def score_pick(key: str, accs: dict[str, float]) -> dict[str, Any] | None:
    if key not in accs:
        return None
    ordered = sorted(accs.values(), reverse=True)
    best = ordered[0]
    top = max(1, round(0.1 * len(ordered)))
    rank = 1 + sum(1 for v in ordered if v > accs[key])
    return {"acc": accs[key], "best": best, "regret": best - accs[key], "rank": rank,
            "of": len(ordered), "hit": rank <= top}


def best_within_budget(search: dict[str, Any], budgets) -> dict[str, dict[str, Any]]:
    """A trained search's picks under the other rule: per tier the most accurate candidate
    (validation after the full recipe) among every candidate the search trained to the end
    within the tier's latency budget, whether or not it costs more than the tier below's
    pick (``gtn-nas`` requires it to; here the tiers may coincide). Read from the search's
    own trial records, so nothing is trained again."""
    trials: dict[str, dict[str, Any]] = {}
    for selection in (search.get("selection") or {}).values():
        full = max(selection["rungs"])
        for trial in selection["trials"]:
            if trial.get("trained_epochs", 0) >= full and trial.get("final") is not None:
                trials.setdefault(trial["key"], trial)
    picks = {}
    for tier, budget in budgets.items():
        fitting = [t for t in trials.values() if t.get("latency_ms") is not None
                   and t["latency_ms"] <= budget["latency_ms"]]
        if fitting:
            best = max(fitting, key=lambda t: (t["final"], -t["latency_ms"], t["key"]))
            picks[tier] = {"sample": best["sample"], "latency_ms": best["latency_ms"],
                           "params": best.get("params"), "val_acc": best["final"]}
    return picks


def searched_picks(out: Path, budgets) -> list[tuple[str, int, dict[str, dict[str, Any]]]]:
    """(method, seed, tier -> pick) of every saved search, and of every trained search's
    :func:`best_within_budget` as method ``trained-best``."""
    found = []
    for file in sorted((out / "searches").glob("*.json")):
        search = _read(file)
        if not search:
            continue
        found.append((search["method"], search["seed"], search["picks"]))
        if search["method"] == "trained" and search.get("selection"):
            found.append(("trained-best", search["seed"], best_within_budget(search, budgets)))
    return found


def method_rows(out: Path, students, budgets) -> list[dict[str, Any]]:
    from gtn_nas.search.selection import sample_key

    rows = []
    for method, seed, picks in searched_picks(out, budgets):
        search = {"method": method, "seed": seed}
        for tier, pick in picks.items():
            limit = budgets[tier]["latency_ms"]
            key = sample_key(pick["sample"])
            scored = score_pick(key, within(students, limit))
            rows.append({"method": search["method"], "seed": search["seed"], "tier": tier,
                         "key": key, "latency_ms": pick.get("latency_ms"), "limit": limit,
                         "params": pick.get("params"), "val_acc": pick.get("val_acc"),
                         **(scored or {"acc": None})})
    return rows


def search_cost(out: Path, students) -> list[dict[str, Any]]:
    """Per trained search: student-epochs and seconds its halving trained, against training
    its three picks once on the full recipe."""
    rows = []
    for file in sorted((out / "searches").glob("trained-seed*.json")):
        search = _read(file)
        epochs = seconds = 0.0
        picks_seconds = 0.0
        overhead = []
        for tier, selection in search["selection"].items():
            for trial in selection["trials"]:
                epochs += trial["trained_epochs"]
                seconds += trial["trained_seconds"]
                if trial["trained_seconds"] > 0:
                    overhead.append(trial["wall_seconds"] / trial["trained_seconds"] - 1)
        recipe_epochs = max(max(s["rungs"]) for s in search["selection"].values())
        folder = out / "halving" / f"seed{search['seed']}" / "trials"
        for tier, pick in search["picks"].items():
            from gtn_nas.search.selection import sample_key

            metrics = folder / sample_key(pick["sample"]) / f"seed{100 + search['seed']}" / \
                "metrics.jsonl"
            try:
                picks_seconds += sum(json.loads(line).get("seconds", 0.0)
                                     for line in metrics.read_text().splitlines() if line)
            except OSError:
                pass
        rows.append({"seed": search["seed"], "epochs": epochs,
                     "trainings": epochs / recipe_epochs, "seconds": seconds,
                     "wall": search.get("wall_seconds"), "picks_seconds": picks_seconds,
                     "ratio": seconds / picks_seconds if picks_seconds else None,
                     "overhead": statistics.median(overhead) if overhead else None})
    return rows


def asha(order: list[str], value, final, rungs: list[int], eta: int) -> tuple[str, int]:
    """Optuna's asynchronous successive halving replayed sequentially, in ``order``: at each
    rung a candidate goes on when its ``value(key, epoch)`` is among the best
    ``len(reached) // eta`` of every candidate that reached the rung so far (the best one while
    fewer than ``eta`` did). Returns the pick (the best ``final`` of those trained to the end)
    and the epochs trained."""
    reached: dict[int, list[float]] = {r: [] for r in rungs[:-1]}
    finished, cost = [], 0
    for key in order:
        epochs = rungs[-1]
        for rung in rungs[:-1]:
            current = value(key, rung)
            reached[rung].append(current)
            ranked = sorted(reached[rung], reverse=True)
            if current < ranked[max(len(ranked) // eta - 1, 0)]:
                epochs = rung
                break
        cost += epochs
        if epochs == rungs[-1]:
            finished.append(key)
    return max(finished, key=final), cost


def simulate(students, members: dict[str, list[str]], budgets, *, n: int, eta: int,
             first: int, order: str, metric: str = "val", repeats: int = 100,
             seed: int = 0, guesses: dict[str, dict[str, float]] | None = None
             ) -> dict[str, float]:
    """The trained selection replayed on the pool's curves: per tier ``n`` pool students
    (``order``: ``random`` draws, or the ``n`` with the most FLOPs / parameters, as a search
    ranking its proposals by that score would), asynchronous halving on seed 1's curves
    (``metric``: the validation top-1 at the rung, or ``loss``: minus the mean training loss
    so far, Ru et al.'s sum of training losses), the pick judged by its seed-2 test top-1
    against the pool's best by seed 2."""
    rng = random.Random(seed)
    regrets, hits, costs = [], [], []
    for tier, keys in members.items():
        limit = budgets[tier]["latency_ms"]
        usable = [k for k in keys if 1 in students[k]["val"] and 2 in students[k]["test"]
                  and students[k]["latency_ms"] <= limit]
        if len(usable) < n:
            continue
        epochs = len(students[usable[0]]["val"][1])
        rungs, rung = [], first
        while rung < epochs:
            rungs.append(rung)
            rung *= eta
        rungs.append(epochs)
        test2 = {k: students[k]["test"][2] for k in usable}
        ordered = sorted(test2.values(), reverse=True)
        top = max(1, round(0.1 * len(ordered)))

        def value(key: str, epoch: int) -> float:
            if metric == "val":
                return students[key]["val"][1][epoch - 1]
            losses = students[key]["loss"][1][:epoch]
            return -sum(losses) / len(losses)

        def final(key: str) -> float:
            return students[key]["val"][1][-1]

        for _ in range(repeats if order == "random" else 1):
            if order == "random":
                chosen = rng.sample(usable, n)
            elif order == "predicted":
                guess = (guesses or {}).get(tier, {})
                if not all(k in guess for k in usable):
                    break
                chosen = sorted(usable, key=lambda k: (-guess[k], k))[:n]
            else:
                chosen = sorted(usable, key=lambda k: (-students[k][order], k))[:n]
            pick, cost = asha(chosen, value, final, rungs, eta)
            regrets.append(ordered[0] - test2[pick])
            hits.append(1 + sum(1 for v in ordered if v > test2[pick]) <= top)
            costs.append(cost / epochs)
    if not regrets:
        return {}
    return {"mean_regret": statistics.mean(regrets), "worst_regret": max(regrets),
            "hit_rate": statistics.mean(hits), "trainings": statistics.mean(costs)}


def _fmt(value, spec=".2f", none="-") -> str:
    return none if value is None else format(value, spec)


def write_report(out: Path, scale, machine: str) -> Path:
    from gtn_nas.report import markdown_table

    budgets = (_read(out / "budgets.json") or {}).get("budgets", {})
    pool = _read(out / "pool.json") or {"tiers": {}}
    students = load_pool(out)
    rows = method_rows(out, students, budgets)
    lines = [f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `./dev python "
             f"bench/search_regret.py --out {out}` on {machine}.", ""]
    budget_info = _read(out / "budgets.json") or {}
    lines += [f"Scale: Fashion-MNIST at {scale.image_size}x{scale.image_size}, students of "
              f"resnet_supernet (width 0.25) trained without a teacher for {scale.epochs} "
              f"epochs on {scale.labelled} labelled images, validated on {scale.val_fraction:.0%}"
              f" of the official training set, tested on the official 10,000 test images; "
              f"the pool's seeds 1 and 2; search seeds {list(scale.search_seeds)} (the trained "
              f"search trains with seed 100 + search seed); evolution {scale.budget_evals} "
              f"candidates; halving: {scale.candidates} proposals per tier, eta "
              f"{scale.reduction_factor}.", "",
              "Budgets (host_cpu, this machine, ONNX Runtime at batch 1): "
              + ", ".join(f"{t} <= {b['latency_ms']:.4g} ms" for t, b in budgets.items())
              + f" ({budget_info.get('rule', '?')}; load average {budget_info.get('load', 0):.1f}"
                f" while timing).", ""]
    # ---- the pool
    table = []
    for tier, keys in pool["tiers"].items():
        accs = within(students, budgets[tier]["latency_ms"])
        own = [mean_acc(students[k]) for k in keys if k in students and mean_acc(students[k])]
        noise = [abs(e["test"][1] - e["test"][2]) for k, e in students.items()
                 if k in keys and len(e["test"]) == 2]
        if not accs:
            continue
        ordered = sorted(accs.values(), reverse=True)
        top = max(1, round(0.1 * len(ordered)))
        table.append([tier, f"{budgets[tier]['latency_ms']:.4g}", len(own), len(accs),
                      f"{min(ordered):.1f}", f"{statistics.median(ordered):.1f}",
                      f"{ordered[0]:.1f}", f"{ordered[top - 1]:.1f}",
                      _fmt(statistics.mean(noise) if noise else None)])
    lines += ["### The reference pool", "",
              "Per tier: random students between half the budget and the budget, plus every "
              "pick of every method within the budget (test top-1 %, mean of seeds 1 and 2).",
              "", markdown_table(["tier", "budget ms", "random in band", "all within budget",
                                  "min", "median", "best", "10% threshold",
                                  "seed noise (mean |s1 - s2|)"], table), ""]
    # ---- the methods
    summary, detail = [], []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method and r.get("acc") is not None]
        if not mine:
            continue
        for r in sorted(mine, key=lambda r: (r["tier"], r["seed"])):
            detail.append([method, r["tier"], r["seed"], r["key"], _fmt(r["latency_ms"], ".4f"),
                           _fmt(None if r["val_acc"] is None else r["val_acc"] * 100, ".1f"),
                           f"{r['acc']:.1f}", f"{r['rank']}/{r['of']}", f"{r['regret']:.2f}",
                           "yes" if r["hit"] else "no"])
        per_tier = {}
        for tier in budgets:
            values = [r["regret"] for r in mine if r["tier"] == tier]
            per_tier[tier] = statistics.mean(values) if values else None
        summary.append([LABELS[method], len(mine)]
                       + [_fmt(per_tier[t]) for t in budgets]
                       + [f"{max(r['regret'] for r in mine):.2f}",
                          f"{statistics.mean(r['hit'] for r in mine):.2f}",
                          f"{min(r['acc'] for r in mine):.1f}"])
    lines += ["### Regret of each way of picking", "",
              f"Targets: mean regret per tier <= {TARGETS['mean_regret']} point, worst <= "
              f"{TARGETS['worst_regret']}, best-10% hit rate >= {TARGETS['hit_rate']}, no pick "
              f"below {TARGETS['min_acc']:.0f}%.", "",
              markdown_table(["method", "picks"] + [f"mean regret {t}" for t in budgets]
                             + ["worst regret", "best-10% hit rate", "lowest pick %"],
                             summary), "",
              "<details><summary>Every pick</summary>", "",
              markdown_table(["method", "tier", "seed", "student", "latency ms",
                              "validation % (search)", "test % (pool seeds)", "rank",
                              "regret", "best 10%"], detail), "", "</details>", ""]
    # ---- cost
    costs = search_cost(out, students)
    if costs:
        lines += ["### What picking by training costs", "",
                  markdown_table(["search seed", "student-epochs", "trainings (/ recipe)",
                                  "training s", "wall s", "the 3 picks' training s",
                                  "cost vs the picks", "trial overhead (median)"],
                                 [[c["seed"], f"{c['epochs']:.0f}", f"{c['trainings']:.1f}",
                                   f"{c['seconds']:.0f}", _fmt(c["wall"], ".0f"),
                                   f"{c['picks_seconds']:.0f}", _fmt(c["ratio"], ".2f") + "x",
                                   _fmt(None if c["overhead"] is None else
                                        c["overhead"] * 100, ".1f") + "%"]
                                  for c in costs]), "",
                  "The proxy searches train nothing (their seconds are the evolution's, in "
                  "`searches/*.json`). The picks' own runs are reused as their `none` "
                  "baselines by `gtn-nas run`, so part of the cost is not extra.", ""]
    # ---- replayed settings
    sims = []
    guesses = predicted_accuracy(students, pool["tiers"])
    third = max(1, round(scale.epochs / 9))
    for n, eta, first in ((9, 3, third), (9, 3, 2 * third), (6, 3, third), (12, 3, third),
                          (9, 2, third), (27, 3, 1), (3, 3, scale.epochs),
                          (1, 3, scale.epochs)):
        for order in ("random", "flops", "params", "predicted"):
            for metric in ("val", "loss"):
                if first >= scale.epochs and metric == "loss":
                    continue
                result = simulate(students, pool["tiers"], budgets, n=n, eta=eta,
                                  first=first, order=order, metric=metric, guesses=guesses)
                if result:
                    sims.append([n, eta, first, order, metric,
                                 f"{result['mean_regret']:.2f}",
                                 f"{result['worst_regret']:.2f}",
                                 f"{result['hit_rate']:.2f}", f"{result['trainings']:.2f}"])
    if sims:
        lines += ["### Halving settings replayed on the pool's curves", "",
                  "Asynchronous successive halving (Optuna's rule) replayed on the pool's own "
                  "students: n of a tier's pool students enter in the order of a proposal "
                  "score (`flops`, `params`: the n highest, highest first; `predicted`: an "
                  "accuracy predictor, gradient boosting on the architecture and its costs, "
                  "fitted on every other tier's trained students) or at random "
                  "(`random`: 100 draws); each rung compares seed 1's validation top-1 "
                  "(`val`) or minus its mean training loss so far (`loss`); the pick (best "
                  "seed-1 validation after the last epoch among those trained to the end) is "
                  "judged by its seed-2 test top-1 against the pool's best by seed 2. "
                  "`trainings per tier`: epochs trained over the recipe's.", "",
                  markdown_table(["n", "eta", "first rung (epochs)", "order", "rung metric",
                                  "mean regret", "worst", "best-10% hit rate",
                                  "trainings per tier"], sims), ""]
    figure = plot_regret(out, rows, budgets)
    if figure:
        lines += [f"![regret]({figure.name})", ""]
    path = out / "REGRET.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_regret(out: Path, rows, budgets) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("acc") is not None]
    if not rows:
        return None
    tiers = list(budgets)
    fig, axes = plt.subplots(1, len(tiers), figsize=(4 * len(tiers), 3.6), sharey=True,
                             squeeze=False)
    for ax, tier in zip(axes[0], tiers):
        for i, method in enumerate(METHODS):
            values = [r["regret"] for r in rows if r["method"] == method and r["tier"] == tier]
            ax.scatter([i] * len(values), values, color=f"C{i}", s=30)
            if values:
                ax.hlines(statistics.mean(values), i - 0.3, i + 0.3, color=f"C{i}")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=20)
        ax.set_title(f"tier {tier} (budget {budgets[tier]['latency_ms']:.3g} ms)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("regret (points below the pool's best)")
    fig.tight_layout()
    path = out / "regret.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def splice_report(out: Path, docs: Path) -> None:
    """Puts REGRET.md between the markers of ``docs`` (figures copied to docs/regret/)."""
    import shutil

    text = docs.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"regret: {docs} has no {BEGIN} ... {END} markers")
    figures = docs.parent / "regret"
    figures.mkdir(exist_ok=True)
    report = (out / "REGRET.md").read_text()
    for png in out.glob("*.png"):
        shutil.copy(png, figures / png.name)
        report = report.replace(f"]({png.name})", f"](regret/{png.name})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    docs.write_text(f"{head}{BEGIN}\n{report}{END}{tail}")
