"""The training engine: sharding, metrics, checkpoints, resume and its refusals."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from gtn_nas.data import load_dataset
from gtn_nas.engine import ShardedBatchSampler, TrainConfig, fit
from gtn_nas.errors import ConfigError
from gtn_nas.methods.standard import StandardMethod
from gtn_nas.teachers import build_teacher


def test_shards_of_two_ranks_are_the_single_process_batches():
    single = ShardedBatchSampler(100, 16, seed=3)
    single.set_epoch(2)
    ranks = [ShardedBatchSampler(100, 16, rank=r, world=2, seed=3) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    for batch, shard0, shard1 in zip(single, *ranks):
        assert batch == shard0 + shard1
    assert len(single) == 100 // 16 == len(ranks[0])
    again = ShardedBatchSampler(100, 16, seed=3)
    again.set_epoch(2)
    assert list(again) == list(single)
    again.set_epoch(3)
    assert list(again) != list(single)
    assert len(ShardedBatchSampler(100, 16, max_batches=2)) == 2


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", seed=0, num_examples=256, size=8)


def _method(seed=0):
    torch.manual_seed(seed)
    return StandardMethod(build_teacher("tiny", num_classes=10))


def _config(**kw):
    base = dict(epochs=3, batch_size=32, lr=0.05, milestones=(2,), seed=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_learns_and_writes_metrics(data, tmp_path):
    result = fit(_method(), data.train, data.val, _config(epochs=6, milestones=(5,)), tmp_path)
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["train/loss"] < history[0]["train/loss"] - 0.2
    assert history[-1]["val/acc"] > 0.3, "well above chance (0.1): the loop really learns"
    assert [r["lr"] for r in history][3:] == [0.05, 0.05, pytest.approx(0.005)]  # x0.1 after 5
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "lr", "train/loss", "val/acc"} <= set(header)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "writes are atomic"


def test_same_seed_same_weights(data, tmp_path):
    a = fit(_method(), data.train, data.val, _config(epochs=2), tmp_path / "a")
    b = fit(_method(), data.train, data.val, _config(epochs=2), tmp_path / "b")
    sa = torch.load(a.checkpoint, weights_only=True)["method"]
    sb = torch.load(b.checkpoint, weights_only=True)["method"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


class _Killed(Exception):
    pass


def _kill_after(epoch):
    def hook(record):
        if record["epoch"] == epoch:
            raise _Killed
    return hook


def test_kill_and_resume_equals_uninterrupted(data, tmp_path):
    full = _method()
    fit(full, data.train, data.val, _config(), tmp_path / "full")
    with pytest.raises(_Killed):
        fit(_method(), data.train, data.val, _config(), tmp_path / "cut",
            on_epoch_end=_kill_after(2))
    resumed = _method(seed=123)  # a different init: everything must come from the checkpoint
    result = fit(resumed, data.train, data.val, _config(), tmp_path / "cut", resume=True)
    assert result.resumed_from_epoch == 2 and len(result.history) == 3
    expected, actual = full.state_dict(), resumed.state_dict()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_without_a_checkpoint_starts_from_scratch(data, tmp_path, caplog):
    fresh = fit(_method(), data.train, data.val, _config(), tmp_path / "fresh")
    resumed = fit(_method(), data.train, data.val, _config(), tmp_path / "none", resume=True)
    assert "starting from scratch" in caplog.text
    assert resumed.resumed_from_epoch == 0
    assert [r["val/acc"] for r in resumed.history] == [r["val/acc"] for r in fresh.history]


def test_resume_after_the_last_epoch_rewrites_the_metrics(data, tmp_path):
    run = tmp_path / "run"
    fit(_method(), data.train, data.val, _config(), run)
    complete = (run / "metrics.jsonl").read_text()
    # killed after the final last.pt, before the metrics were rewritten: one epoch short
    (run / "metrics.jsonl").write_text("".join(complete.splitlines(True)[:-1]))
    (run / "metrics.csv").unlink()
    stale = run / ".last.pt.999999999.0123abcd.tmp"  # a killed writer's temporary file
    stale.write_bytes(b"half")
    result = fit(_method(), data.train, data.val, _config(), run, resume=True)
    assert result.resumed_from_epoch == 3 and len(result.history) == 3
    assert (run / "metrics.jsonl").read_text() == complete
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    assert not stale.exists()


def test_resume_refusals_overwrite_nothing(data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        fit(_method(), data.train, data.val, _config(), run, on_epoch_end=_kill_after(1))
    checkpoint = run / "last.pt"
    before = _digest(checkpoint)
    with pytest.raises(ConfigError, match="already holds a training checkpoint"):
        fit(_method(), data.train, data.val, _config(), run)
    with pytest.raises(ConfigError, match=r"another configuration \(differs in: train.lr\)"):
        fit(_method(), data.train, data.val, _config(lr=0.1), run, resume=True)
    assert _digest(checkpoint) == before
    checkpoint.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="corrupt or unreadable training checkpoint"):
        fit(_method(), data.train, data.val, _config(), run, resume=True)


def test_bad_training_configs(data, tmp_path):
    with pytest.raises(ConfigError, match="divide evenly across 3 devices"):
        fit(_method(), data.train, data.val, _config(devices=3, batch_size=32), tmp_path)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        fit(_method(), data.train, data.val, _config(batch_size=4096), tmp_path)


def test_gtn_with_learned_sampler_resumes_exactly(data, tmp_path):
    """The distribution's logits, its Adam state and the path draws survive a resume."""
    from gtn_nas.methods.gtn import GTNMethod
    from gtn_nas.methods.path_sampler import PathSampler
    from gtn_nas.plugins import build_space

    def gtn():
        torch.manual_seed(0)
        space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=8)
        sampler = PathSampler(space, "learned", seed=0, arch_lr=0.05)
        return GTNMethod(build_teacher("tiny", num_classes=10), space, sampler, 8)

    config = _config(max_steps_per_epoch=2)
    full = gtn()
    fit(full, data.train, data.val, config, tmp_path / "full")
    with pytest.raises(_Killed):
        fit(gtn(), data.train, data.val, config, tmp_path / "cut", on_epoch_end=_kill_after(2))
    resumed = gtn()
    fit(resumed, data.train, data.val, config, tmp_path / "cut", resume=True)
    expected, actual = full.state_dict(), resumed.state_dict()
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in expected.items()
               if k.startswith("sampler.logits")), "the distribution moved"
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, actual[key]), key
    assert full.sampler.optimizer.state_dict()["state"].keys() == \
        resumed.sampler.optimizer.state_dict()["state"].keys()
