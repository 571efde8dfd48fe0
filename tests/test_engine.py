"""The training engine: sharding, metrics, checkpoints, resume and its refusals."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from gtn_nas.data import load_dataset
from gtn_nas.engine import ShardedBatchSampler, TrainConfig, fit
from gtn_nas.errors import ConfigError
from gtn_nas.teacher.methods.standard import StandardMethod
from gtn_nas.teacher.zoo import build_teacher


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
    a = fit(_method(), data.train, data.val, _config(epochs=2, milestones=(1,)), tmp_path / "a")
    b = fit(_method(), data.train, data.val, _config(epochs=2, milestones=(1,)), tmp_path / "b")
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


def test_val_every_validates_every_kth_epoch_and_the_last(data, tmp_path):
    every = fit(_method(), data.train, data.val, _config(epochs=5, milestones=(4,)),
                tmp_path / "every")
    sparse = fit(_method(), data.train, data.val,
                 _config(epochs=5, milestones=(4,), val_every=2), tmp_path / "sparse")
    validated = [r["epoch"] for r in sparse.history if "val/acc" in r]
    assert validated == [2, 4, 5]
    for a, b in zip(every.history, sparse.history):  # validation never changes training
        assert a["train/loss"] == b["train/loss"]
        if "val/acc" in b:
            assert a["val/acc"] == b["val/acc"]
    sa = torch.load(every.checkpoint, weights_only=True)["method"]
    sb = torch.load(sparse.checkpoint, weights_only=True)["method"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ConfigError, match="val_every must be an integer >= 1"):
        fit(_method(), data.train, data.val, _config(val_every=0), tmp_path / "bad")


def test_meter_means_equal_a_float_sum_and_skip_unlabelled_batches():
    """Tensor sums (no host copy per step) give exactly what the float arithmetic gave."""
    from gtn_nas.metrics import RunningMeans

    generator = torch.Generator().manual_seed(0)
    meter, sums, counts = RunningMeans(), {}, {}
    for size in (64, 64, 37, 5):
        logits = torch.randn(size, 10, generator=generator)
        targets = torch.randint(0, 10, (size,), generator=generator)
        targets[: size // 3] = -100  # unlabelled items score no accuracy
        loss = torch.rand((), generator=generator)
        meter.update({"loss": loss, "logits": logits}, targets)
        scored = int((targets >= 0).sum())
        hits = int(((logits.argmax(1) == targets) & (targets >= 0)).sum())
        for key, value, count in (("loss", float(loss), size), ("acc", hits / scored, scored)):
            sums[key] = sums.get(key, 0.0) + value * count
            counts[key] = counts.get(key, 0) + count
    meter.update({"loss": torch.tensor(0.5), "logits": torch.randn(4, 10)},
                 torch.full((4,), -100))  # a batch without labels: loss counted, no accuracy
    sums["loss"] += 0.5 * 4
    counts["loss"] += 4
    assert meter.means() == {key: sums[key] / counts[key] for key in sums}


def test_bad_training_configs(data, tmp_path):
    with pytest.raises(ConfigError, match="divide evenly across 3 devices"):
        fit(_method(), data.train, data.val, _config(devices=3, batch_size=32), tmp_path)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        fit(_method(), data.train, data.val, _config(batch_size=4096), tmp_path)


@pytest.mark.slow
def test_gtn_with_learned_sampler_resumes_exactly(data, tmp_path):
    """The distribution's logits, its Adam state and the path draws survive a resume."""
    from gtn_nas.teacher.methods.gtn import GTNMethod
    from gtn_nas.teacher.methods.path_sampler import PathSampler
    from gtn_nas.space.plugins import build_space

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


@pytest.mark.parametrize("option", [
    "channels_last",
    pytest.param("compile", marks=[pytest.mark.slow, pytest.mark.skipif(
        not (shutil.which("g++") or shutil.which("c++")),
        reason="torch.compile on CPU needs a C++ compiler")])])
def test_cpu_speed_options_train_and_keep_the_checkpoint_format(data, tmp_path, option):
    """Opt-in speed-ups: the run learns like the default one (not bit for bit: other kernels)
    and its checkpoint loads into a plain (NCHW, eager) method."""
    config = _config(epochs=2, milestones=(1,), max_steps_per_epoch=4, **{option: True})
    result = fit(_method(), data.train, data.val, config, tmp_path / option)
    default = fit(_method(), data.train, data.val,
                  _config(epochs=2, milestones=(1,), max_steps_per_epoch=4),
                  tmp_path / "default")
    assert result.history[-1]["train/loss"] == pytest.approx(
        default.history[-1]["train/loss"], rel=1e-3)
    plain = _method()
    plain.load_state_dict(torch.load(result.checkpoint, weights_only=True)["method"])


def test_the_engine_trains_training_methods_only_and_calls_every_hook(data, tmp_path):
    """The contract is a base class, not hasattr probing: a plain module is refused in one
    line, and a method's hooks are called in order on every epoch."""
    from gtn_nas.method import TrainingMethod

    with pytest.raises(ConfigError, match="is not a training method: subclass "
                                          "gtn_nas.method.TrainingMethod"):
        fit(torch.nn.Linear(2, 2), data.train, data.val, _config(), tmp_path / "x")

    calls = []

    class Recorded(TrainingMethod):
        def __init__(self):
            super().__init__()
            self.inner = _method()

        def forward(self, x, y):
            return self.inner(x, y)

        def on_epoch_start(self, epoch, epochs):
            calls.append(("start", epoch, epochs))

        def after_optimizer_step(self, x, y, outputs):
            calls.append("step")
            return {"steps": 1.0}

        def epoch_summary(self):
            return {"summary": len(calls)}

        def after_validation(self, record):
            calls.append(("validated", record["epoch"], "val/acc" in record))

    result = fit(Recorded(), data.train, data.val,
                 _config(epochs=2, milestones=(1,), max_steps_per_epoch=2), tmp_path / "run")
    assert calls == [("start", 0, 2), "step", "step", ("validated", 1, True),
                     ("start", 1, 2), "step", "step", ("validated", 2, True)]
    assert [r["train/steps"] for r in result.history] == [1.0, 1.0]
    assert [r["summary"] for r in result.history] == [3, 7]
