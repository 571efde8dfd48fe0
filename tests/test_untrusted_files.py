"""Data files never run code: a sample, config or students file that names a plugin *file* is
refused unless the user names that plugin with ``--space`` (issue: security)."""

from __future__ import annotations

import yaml

from conftest import EXAMPLE_PLUGIN
from gtn_nas.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _hostile_plugin(tmp_path):
    """A plugin file whose import leaves a marker behind: proof that it ran."""
    marker = tmp_path / "PLUGIN_RAN"
    plugin = tmp_path / "evil.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                      "def factory(**kw):\n    raise SystemExit('should never get here')\n")
    return plugin, marker


def test_sample_file_naming_a_plugin_file_is_refused_and_never_imported(capsys, tmp_path):
    plugin, marker = _hostile_plugin(tmp_path)
    sample = tmp_path / "student.yaml"
    sample.write_text(yaml.safe_dump({"space": f"{plugin}:factory", "sample": {}}))
    code, _, err = run(capsys, "space", "show", "--sample", str(sample))
    assert code == 2 and not marker.exists()
    assert f"--space {plugin}:factory" in err and "to trust it" in err
    assert len(err.strip().splitlines()) == 1


def test_naming_the_plugin_with_space_trusts_it(capsys, tmp_path):
    sample = tmp_path / "tiny.yaml"
    code, _, err = run(capsys, "space", "sample", "--space", EXAMPLE_PLUGIN, "--seed", "2",
                       "--out", str(sample))
    assert code == 0, err
    code, _, err = run(capsys, "space", "show", "--sample", str(sample))
    assert code == 2 and "to trust it" in err
    code, out, err = run(capsys, "space", "show", "--sample", str(sample), "--space",
                         EXAMPLE_PLUGIN)
    assert code == 0, err
    assert "total:" in out


def test_teacher_config_naming_a_plugin_file_is_refused(capsys, tmp_path):
    plugin, marker = _hostile_plugin(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"method": "gtn", "space": f"{plugin}:factory"}))
    code, _, err = run(capsys, "train-teacher", "--config", str(config), "--out",
                       str(tmp_path / "run"))
    assert code == 2 and not marker.exists() and "--space" in err
    assert not (tmp_path / "run").exists()
