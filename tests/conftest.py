"""Shared fixtures: every registered space (plus the example file plugin), built small."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gtn_nas.space.plugins import SPACES, build_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = f"{ROOT / 'examples' / 'custom_space_plugin.py'}:build_tiny_space"


def image_tree(root: Path, parts: dict[str, int], classes=("cat", "dog", "fox")) -> None:
    """Writes an ImageFolder-style tree: ``root/<part>/<class>/<i>.png``, small RGB images."""
    from PIL import Image

    for part, per_class in parts.items():
        for c, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                colour = (80 * c, 10 * i, 200 - 60 * c)
                Image.new("RGB", (12, 10), colour).save(folder / f"{i}.png")
# Slow tests of modules that do not import pytest, so they take no decorator: marked here.
SLOW_IN_MODULES_WITHOUT_PYTEST = {
    "test_many_writers.py::test_a_second_trainer_on_the_same_folder_is_refused_naming_the_first",
    "test_many_writers.py::test_copies_of_one_distill_command_share_its_jobs",
    "test_examples.py::test_custom_space_plugin_end_to_end",
    "test_examples.py::test_quickstart_parses_and_custom_profile_loads",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if name in SLOW_IN_MODULES_WITHOUT_PYTEST:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """A user cache of the session's own (``XDG_CACHE_HOME``, inherited by the commands tests
    start): latency tables built by tests stay out of the user's, and a table the user built
    never changes what a test sees."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("xdg-cache")
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


# Small but real: narrow channels and 16x16 inputs keep each forward pass in milliseconds.
SMALL = dict(width_mult=0.25, num_classes=10, input_size=16)
SPACE_SPECS = SPACES.names() + [EXAMPLE_PLUGIN]


@pytest.fixture(params=SPACE_SPECS, ids=lambda spec: spec.rsplit(":", 1)[-1])
def small_space(request):
    """Each registered space and the example plugin, at width 0.25, 10 classes, 16x16."""
    torch.manual_seed(0)
    return build_space(request.param, **SMALL)


@pytest.fixture(scope="session")
def paper_space():
    """The paper's space at the supplement's settings (width 1, 100 classes, 32x32)."""
    return build_space("resnet_supernet")
