"""The command line's flags come from the configuration dataclasses (gtn_nas.cli.flags): a
field is declared once, its flag, type, choices, help and default follow, and the parsed
flags map back onto the configuration (issue 28, item 6)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import yaml

from gtn_nas.cli import build_parser, main
from gtn_nas.cli.flags import add_config_flags, given
from gtn_nas.config import NULL, DataConfig, load_config, option
from gtn_nas.distill.config import DistillRunConfig
from gtn_nas.errors import ConfigError
from gtn_nas.teacher.config import TeacherRunConfig

# every flag each command had before its flags were derived (none may go away)
BEFORE = {
    "train-teacher": [
        "--accelerator", "--alpha", "--arch-lr", "--batch-size", "--channels-last", "--compile",
        "--config", "--cost-target-mflops", "--data", "--data-option", "--data-root",
        "--devices", "--download", "--entropy-weight", "--epochs", "--eval-paths",
        "--eval-paths-every", "--eval-recalibration-batches", "--full-branch", "--image-size",
        "--inplace-distill", "--limit", "--lr", "--max-steps-per-epoch", "--method",
        "--milestones", "--no-full-branch", "--no-sandwich", "--num-workers", "--on-bad-image",
        "--out", "--path-prior", "--precision", "--pretrained", "--resume", "--sampler",
        "--sandwich", "--schedule", "--seed", "--space", "--strategy", "--student",
        "--sync-batchnorm", "--teacher", "--teacher-option", "--teacher-weights",
        "--val-every", "--warmup-epochs", "--width-mult"],
    "distill": [
        "--accelerator", "--baseline", "--batch-size", "--channels-last", "--compile",
        "--config", "--data", "--data-option", "--data-root", "--devices", "--download",
        "--epochs", "--grad-clip", "--image-size", "--labelled", "--limit", "--lr",
        "--max-steps-per-epoch", "--method", "--no-export", "--num-workers", "--on-bad-image",
        "--option", "--out", "--precision", "--schedule", "--seeds", "--shard", "--space",
        "--strategy", "--students", "--teacher", "--teacher-mode", "--val-every",
        "--width-mult"],
    "run": [
        "--budget-evals", "--config", "--data", "--data-root", "--download", "--hw",
        "--labelled", "--method", "--out", "--resume", "--sampler", "--seed", "--seeds",
        "--space", "--student-epochs", "--teacher-epochs"],
    "search": [
        "--budget-evals", "--budget-students", "--budgets", "--candidates", "--data",
        "--data-root", "--epochs", "--hw", "--image-size", "--in-channels", "--input-size",
        "--latency-mode", "--latency-table", "--limit", "--num-classes", "--out", "--score",
        "--seed", "--select", "--space", "--storage", "--strategy", "--teacher",
        "--width-mult", "--workers"],
}


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _leaves(obj: Any, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        keys |= _leaves(value, key + ".") if dataclasses.is_dataclass(value) else {key}
    return keys


@pytest.mark.parametrize("command", sorted(BEFORE))
def test_every_flag_a_command_had_is_still_there(command):
    options = {o for a in _command(command)._actions for o in a.option_strings}
    assert sorted(set(BEFORE[command]) - options) == []


@pytest.mark.parametrize("command, config, excluded", [
    ("train-teacher", TeacherRunConfig(), {"train.progress"}),
    ("distill", DistillRunConfig(), {"train.seed", "train.progress"})])
def test_every_field_of_the_config_is_a_flag_with_help(command, config, excluded):
    """Adding a field to TeacherRunConfig, DistillRunConfig, DataConfig or TrainConfig adds its
    flag: only the explicit exclude list is not one."""
    flags = _command(command).get_default("config_flags")
    assert {f.key for f in flags} == _leaves(config) - excluded
    actions = {a.dest: a for a in _command(command)._actions}
    for flag in flags:
        text = actions[flag.dest].help
        assert text and "{default}" not in text, flag.option


def test_help_shows_the_default_of_the_config_the_command_starts_from():
    def help_of(command: str, option: str) -> str:
        return next(a.help for a in _command(command)._actions if option in a.option_strings)

    assert help_of("distill", "--epochs").startswith(
        f"epochs per student (default: {DistillRunConfig().train.epochs},")
    assert f"(default: {TeacherRunConfig().train.epochs}," in help_of("train-teacher", "--epochs")
    assert help_of("train-teacher", "--entropy-weight").endswith(
        f"(default {TeacherRunConfig().entropy_weight:g})")
    assert help_of("run", "--seeds").endswith("(default: 0)")
    schedule = next(a for a in _command("train-teacher")._actions if a.dest == "schedule")
    assert schedule.metavar == "{step,cosine,constant}"  # a Literal's values


def test_flags_map_back_onto_the_config_over_a_config_file(tmp_path):
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "synthetic", "limit": 400},
                                    "train": {"epochs": 9, "lr": 0.1}, "sandwich": True}))
    args = build_parser().parse_args([
        "train-teacher", "--config", str(path), "--data-option", "num_classes=4",
        "--image-size", "12", "--epochs", "3", "--milestones", "1", "2", "--no-sandwich",
        "--teacher-option", "norm=none", "--channels-last"])
    overrides = given(args, args.config_flags)
    assert overrides == {"data": {"options": {"num_classes": 4}, "image_size": 12},
                         "sandwich": False, "teacher_options": {"norm": "none"},
                         "train": {"epochs": 3, "milestones": [1, 2], "channels_last": True}}
    config = load_config(TeacherRunConfig, path, overrides)
    assert config.data == DataConfig("synthetic", options={"num_classes": 4}, image_size=12,
                                     limit=400)
    assert (config.train.epochs, config.train.lr, config.train.milestones) == (3, 0.1, (1, 2))
    assert config.sandwich is False and config.train.channels_last is True


def test_distill_flags_parse_seeds_labelled_and_no_export():
    args = build_parser().parse_args(["distill", "--students", "s_nas_s", "s_nas_m", "--seeds",
                                      "0,2", "--labelled", "all", "--no-export",
                                      "--teacher-mode", "train", "--option", "temperature=2"])
    assert given(args, args.config_flags) == {
        "students": ["s_nas_s", "s_nas_m"], "seeds": [0, 2], "labelled": NULL,
        "export": False, "teacher_mode": "train", "method_options": {"temperature": 2}}
    args = build_parser().parse_args(["distill", "--seeds", "0,x"])
    with pytest.raises(ConfigError, match=r"^--seeds must be comma-separated integers"):
        given(args, args.config_flags)


@pytest.mark.parametrize("argv, message", [
    (["--method", "gtm"], "method: 'gtm' is not allowed (allowed: standard, sftn, gtn)"),
    (["--labelled", "some"], "--labelled must be a number or all, got 'some'")])
def test_bad_flag_values_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    command = "train-teacher" if argv[0] == "--method" else "distill"
    code = main([command, *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@dataclass
class _Inner:
    rate: float = option(0.5, help="a rate (default: {default})")
    mode: Literal["a", "b"] = option("a", help="a mode")


@dataclass
class _Toy:
    name: str = option("x", flag="--toy-name", help="a name (default: {default})")
    on: bool = option(True, help="turn it off")
    maybe: bool | None = option(None, help="perhaps")
    tags: tuple[str, ...] = option((), repeat=True, help="tags")
    extra: dict[str, Any] = option(factory=dict, help="extras")
    inner: _Inner = field(default_factory=_Inner)
    hidden: int = option(0, help="not a flag")


@dataclass
class _Undocumented:
    size: int = 3


def test_the_derivation_on_a_toy_config():
    parser = argparse.ArgumentParser()
    flags = add_config_flags(parser, _Toy(), exclude=("hidden",), names={"inner.rate": "--rate"})
    assert [f.option for f in flags] == ["--toy-name", "--no-on", "--maybe", "--tags", "--extra",
                                         "--rate", "--mode"]
    args = parser.parse_args(["--toy-name", "y", "--no-on", "--no-maybe", "--tags", "p",
                              "--tags", "q", "--extra", "k=1", "--rate", "2"])
    assert given(args, flags) == {"name": "y", "on": False, "maybe": False, "tags": ["p", "q"],
                                  "extra": {"k": 1}, "inner": {"rate": 2.0}}
    assert given(args, flags, dotted=True)["inner.rate"] == 2.0
    assert given(parser.parse_args([]), flags) == {}  # nothing given, nothing overridden
    rate = next(a for a in parser._actions if a.dest == "rate")
    assert rate.help == "a rate (default: 0.5)"
    mode = next(a for a in parser._actions if a.dest == "mode")
    assert mode.metavar == "{a,b}"
    with pytest.raises(TypeError, match="size has no help text"):
        add_config_flags(argparse.ArgumentParser(), _Undocumented())
