"""Tests of gtn_nas.config's data section: one ``DataConfig`` shared by the three run
configurations, files from before it still loading, overrides merged into it, and run
identities unchanged by it (issue 28, item 6)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from gtn_nas.config import (NULL, DataConfig, flat_data_keys, load_config, merge_overrides,
                            to_plain)
from gtn_nas.distill.jobs import DistillRunConfig
from gtn_nas.engine import config_digest
from gtn_nas.errors import ConfigError
from gtn_nas.run.config import RunConfig, load_run_config
from gtn_nas.teacher.train import TeacherRunConfig

OLD_KEYS = {"data": "synthetic", "data_root": "/tmp/nowhere", "download": True,
            "data_options": {"num_classes": 4}, "image_size": 12, "limit": 400}
NEW = DataConfig("synthetic", root="/tmp/nowhere", options={"num_classes": 4}, download=True,
                 image_size=12, limit=400)


def test_load_gives_the_splits_load_dataset_gives():
    from gtn_nas.data import load_dataset

    data = DataConfig("synthetic", options={"num_classes": 4, "num_examples": 96}, image_size=8,
                      limit=30)
    ours = data.load(seed=3, augment=False)
    theirs = load_dataset("synthetic", num_classes=4, num_examples=96, image_size=8, limit=30,
                          seed=3, augment=False)
    assert len(ours.train) == 30 and ours.image_size == 8 and ours.num_classes == 4
    assert torch.equal(ours.train.images, theirs.train.images)
    assert torch.equal(ours.test.labels, theirs.test.labels)
    with pytest.raises(ConfigError, match="unknown option"):
        DataConfig("digits", options={"bogus": 1}).load()


@pytest.mark.parametrize("cls", [RunConfig, TeacherRunConfig, DistillRunConfig])
def test_every_run_config_reads_files_from_before_the_data_section(cls, tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(OLD_KEYS))
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump({"data": to_plain(NEW)}))
    loaded = (load_run_config(old, None) if cls is RunConfig else load_config(cls, old)).data
    assert loaded == NEW
    assert (load_run_config(new, None) if cls is RunConfig else load_config(cls, new)).data == NEW
    # ``data: NAME`` alone is the short form of the section
    short = tmp_path / "short.yaml"
    short.write_text("data: fashion-mnist\n")
    assert load_config(cls, short).data == DataConfig("fashion-mnist")


def test_a_flat_key_beside_its_section_key_is_refused_in_one_line(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump({"limit": 300, "data": {"name": "digits", "limit": 200}}))
    with pytest.raises(ConfigError) as info:
        load_config(TeacherRunConfig, path)
    assert str(info.value) == (f"{path}: limit and data.limit are the same option; give "
                               f"data.limit only")
    path.write_text(yaml.safe_dump({"image_size": 8, "data": ["digits"]}))
    with pytest.raises(ConfigError, match="data: expected a dataset name or a mapping"):
        load_config(DistillRunConfig, path)


def test_overrides_change_one_data_key_and_keep_the_files_others(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "synthetic", "limit": 400,
                                             "options": {"num_classes": 4}}}))
    config = load_config(TeacherRunConfig, path, {"data": {"image_size": 12, "limit": None},
                                                  "train": {"epochs": 3}})
    assert config.data == DataConfig("synthetic", options={"num_classes": 4}, image_size=12,
                                     limit=400)
    assert config.train.epochs == 3 and config.train.lr == TeacherRunConfig().train.lr
    run = load_run_config(path, {"data.root": "/data", "data.limit": NULL})
    assert (run.data.name, run.data.root, run.data.limit) == ("synthetic", "/data", None)
    # the dotted keys of callers written before the section still mean the same
    assert load_run_config(None, {"limit": 600, "data": "digits"}).data == \
        DataConfig("digits", limit=600)
    assert merge_overrides(RunConfig, {"data": "digits"}, {"seed": 2}) == \
        {"data": {"name": "digits"}, "seed": 2}


def test_null_sets_labelled_to_every_label_where_none_means_not_given():
    """``gtn-nas run --labelled all`` used to be an override of None, which means "not given":
    the run kept 250 labels and a DKD run was refused."""
    assert load_run_config(None, {"distill.labelled": None}).distill.labelled == 250
    config = load_run_config(None, {"distill.labelled": NULL, "distill.method": "dkd"})
    assert config.distill.labelled is None


def test_gtn_nas_run_labelled_all_reaches_the_pipeline(monkeypatch, capsys, tmp_path):
    import gtn_nas.run.pipeline as pipeline
    from gtn_nas.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake(config, path, **_):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(pipeline, "run_pipeline", fake)
    with pytest.raises(Stop):
        main(["--debug", "run", "--labelled", "all", "--method", "dkd", "--data-root",
              str(tmp_path), "--out", str(tmp_path / "r")])
    config = seen["config"]
    assert config.distill.labelled is None and config.distill.method == "dkd"
    assert config.data == DataConfig("digits", root=str(tmp_path))


@pytest.mark.parametrize("cls, extra", [(TeacherRunConfig, {}), (RunConfig, {}),
                                        (DistillRunConfig, {"students": ["s"]})])
def test_run_identities_are_digested_as_before_the_data_section(cls, extra):
    """A checkpoint, run record or search study written before the section stored its
    configuration with flat data keys: the digest a resume compares is unchanged."""
    config = load_config(cls, None, {**extra, "data": to_plain(NEW)})
    plain = to_plain(config)
    before = {k: v for k, v in plain.items() if k != "data"}
    before.update({"data": "synthetic", "data_root": "/tmp/nowhere", "download": True,
                   "data_options": {"num_classes": 4}, "image_size": 12, "limit": 400})
    assert config_digest({"run": plain}) == config_digest({"run": before})
    assert flat_data_keys({"recipe": plain}) == {"recipe": before}
    other = dataclasses.replace(config, data=dataclasses.replace(NEW, limit=401))
    assert config_digest({"run": to_plain(other)}) != config_digest({"run": plain})


def test_the_report_names_the_data_of_new_and_old_run_records():
    from gtn_nas.run.report import _data_name

    assert _data_name({"data": to_plain(DataConfig("fashion-mnist"))}) == "fashion-mnist"
    assert _data_name({"data": "digits"}) == "digits"
