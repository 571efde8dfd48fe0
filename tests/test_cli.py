"""The gtn-nas command line, end to end in a temporary directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import EXAMPLE_PLUGIN
from gtn_nas import __version__
from gtn_nas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_through_the_installed_console_script():
    exe = shutil.which("gtn-nas")
    assert exe, "the console script is installed"
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"gtn-nas {__version__}"


def test_space_show_preset_prints_layers_params_and_flops(capsys):
    code, out, _ = run(capsys, "space", "show", "--preset", "s_nas_m")
    assert code == 0
    assert "layer3     ResBlock (x2)  64    128   5       2" in out
    assert "layer4     IdentityLayer  128   128" in out
    assert "total: 7,017,140 parameters, 698.31 MFLOPs" in out


def test_space_show_json_and_summary(capsys):
    code, out, _ = run(capsys, "space", "show", "--preset", "s_nas_s", "--json")
    data = json.loads(out)
    assert code == 0 and data["params"] == sum(layer["params"] for layer in data["layers"])
    assert data["flops"] == sum(layer["flops"] for layer in data["layers"])
    code, out, _ = run(capsys, "space", "show")
    assert code == 0 and "262,144 distinct students" in out and "layer6/depth" in out


def test_sample_then_show_the_sample_file(capsys, tmp_path):
    target = tmp_path / "student.yaml"
    code, out, _ = run(capsys, "space", "sample", "--seed", "3", "--width-mult", "0.25",
                       "--num-classes", "10", "--input-size", "8", "--out", str(target))
    assert code == 0 and target.is_file()
    assert yaml.safe_load(target.read_text())["seed"] == 3
    # the file's space and options are used unless the command line overrides them
    code, out, _ = run(capsys, "space", "show", "--sample", str(target))
    assert code == 0 and "(input (3, 8, 8), 10 classes)" in out
    code, out, _ = run(capsys, "space", "show", "--sample", str(target), "--num-classes", "7")
    assert code == 0 and "7 classes" in out
    mb = tmp_path / "mb.yaml"
    run(capsys, "space", "sample", "--space", "mbconv", "--seed", "1", "--out", str(mb))
    code, out, _ = run(capsys, "space", "show", "--sample", str(mb))
    assert code == 0 and "mbconv" in out
    code, out, _ = run(capsys, "space", "sample", "--seed", "3", "--width-mult", "0.25")
    assert yaml.safe_load(out)["sample"] == yaml.safe_load(target.read_text())["sample"]


def test_spaces_lists_built_ins(capsys):
    code, out, _ = run(capsys, "spaces")
    assert code == 0
    assert "resnet_supernet  262,144" in out and "mbconv" in out


def test_file_plugin_on_the_command_line(capsys):
    code, out, _ = run(capsys, "space", "show", "--space", EXAMPLE_PLUGIN, "--preset", "all_sep3")
    assert code == 0 and "SeparableConv" in out


@pytest.mark.parametrize("argv, message", [
    (["space", "show", "--space", "nope"], "unknown search space 'nope'"),
    (["space", "show", "--preset", "s_nas_xl"], "unknown preset 's_nas_xl'"),
    (["space", "show", "--width-mult", "-1"], "width_mult must be a number in [0.001, 16.0]"),
    (["space", "show", "--space", "mbconv", "--num-classes", "0"],
     "num_classes must be an integer in [1, 1000000]"),
    (["space", "show", "--input-size", "60000"], "input_size must be an integer in [1, 4096]"),
    (["space", "sample", "--seed", "-1"], "seed must be an integer in [0, 2**32)"),
    (["space", "sample", "--out", "{tmp}"], "cannot write"),
    (["space", "show", "--sample", "{tmp}"], "is a directory"),
    (["space", "show", "--space", "missing.py:factory"], "no such file"),
    (["run", "--data", "cifar100", "--data-root", "{tmp}", "--out", "{tmp}/d"],
     "cifar-100-python"),
    (["run", "--data", "digitz", "--out", "{tmp}/d"],
     "unknown dataset 'digitz' (did you mean: digits?)"),
    (["train-teacher", "--teacher-option", "norm=[bn", "--out", "{tmp}/t"],
     "--teacher-option norm: value '[bn' is not valid YAML"),
    (["train-teacher", "--data-option", "size={{", "--out", "{tmp}/t"],
     "--data-option size: value '{{' is not valid YAML"),
    (["train-teacher", "--lr", "inf", "--out", "{tmp}/t"], "lr must be a finite number"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("name, content, flag, message", [
    ("bad.yaml", "layer1/op: [\n", "--sample", "malformed YAML"),
    ("range.yaml", "layer1/op: resblock\nlayer1/kernel: 7\nlayer1/depth: 2\n", "--sample",
     "layer1/kernel: 7 is not allowed (allowed: 3, 5)"),
    ("empty.yaml", "", "--sample", "the file is empty"),
    ("dup.yaml", "layer6/op: zero\nlayer6/op: identity\n", "--sample",
     "duplicate key 'layer6/op'"),
    ("broken.py", "import not_a_module_anywhere\n", "--space",
     "failed to import: ModuleNotFoundError"),
    ("exits.py", "raise SystemExit(0)\n", "--space", "failed to import: SystemExit"),
])
def test_bad_sample_files_and_broken_plugins(capsys, tmp_path, name, content, flag, message):
    path = tmp_path / name
    path.write_text(content)
    value = f"{path}:factory" if flag == "--space" else str(path)
    code, _, err = run(capsys, "space", "show", flag, value)
    assert code == 2 and message in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_debug_shows_the_traceback(capsys):
    """--debug lets the error through (Python prints its traceback), where without it the
    same error is one line and exit 2; in-process, as a new process costs 15 s of imports."""
    from gtn_nas.errors import GtnNasError

    with pytest.raises(GtnNasError, match="nope"):
        main(["--debug", "space", "show", "--space", "nope"])
    assert main(["space", "show", "--space", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
