"""The examples run as a user would run them (quick settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gtn_nas.hardware.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_custom_space_plugin_end_to_end(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_space_end_to_end.py"),
                           "--quick", "--out", str(tmp_path / "run")], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "parity" in done.stdout and "on digits test images" in done.stdout
    assert (tmp_path / "run" / "s.onnx").is_file()
    assert (tmp_path / "run" / "distill" / "summary.md").is_file()


def test_quickstart_parses_and_custom_profile_loads():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--quick" in done.stdout
    profile = load_profile(ROOT / "examples" / "custom_profile.yaml")
    assert profile.name == "my_arm_board" and profile.tiers() == ["s", "m", "l"]
