"""Contract checks for plugins: test a third-party space, teacher, distiller, dataset or
hardware profile the way the bundled ones are tested.

Each ``check_*`` builds the plugin by its registered name (so it also checks that the entry
point resolves), runs the checks this project's own test suite runs on every built-in of that
kind, and raises :class:`PluginContractError` (an ``AssertionError``, as ``numpy.testing`` and
``torch.testing`` raise) naming the plugin and the first broken rule; it returns what it built.

=================== =======================================================================
check               what it runs
=================== =======================================================================
check_space         the contract of :func:`~gtn_nas.space.plugins.build_space`; seeded
                    sampling; forward/backward of frozen students (every parameter gets a
                    finite gradient); supernet path == weight-inheriting student; students
                    share no storage; seeded freezing leaves the global RNG alone; presets;
                    4 blocks; save/reload with ``weights_only=True``; ONNX export parity
check_teacher       4 blocks; logits == blocks run by hand == ``forward_with_features``; 3
                    cut features of the declared shapes (``(C, H, W)``, for grafting),
                    never finer than the input; backward reaches every parameter;
                    ``feature_shapes`` restores training flags; 1-channel input;
                    save/load round trip
check_distiller     the method contract: ``forward(x, y)`` -> finite scalar ``loss`` and the
                    student's ``logits``; in eval mode the student alone; the teacher gets no
                    gradient, no optimizer step and (eval mode) no BN update; keyword-only
                    options; a few SGD steps lower the loss
check_dataset       splits are deterministic per seed, non-empty, items ``(float [C, H, W],
                    int label)`` in range; ``channels``, ``image_size`` and ``limit`` honoured;
                    loaders batch it
check_profile       it loads by name and validates (tiers s/m/l, providers, budgets); the
                    default space builds at its input shape
=================== =======================================================================

Example (a plugin package's own test module):
    >>> from gtn_nas.testing import check_teacher
    >>> check_teacher("tiny").num_classes          # doctest: +SKIP
    10
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn


class PluginContractError(AssertionError):
    """A plugin breaks a rule every built-in of its kind follows."""


def _require(condition: Any, where: str, message: str) -> None:
    if not condition:
        raise PluginContractError(f"{where}: {message}")


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in module.state_dict().values() if t.numel()}


def _all_gradients(module: nn.Module, where: str, what: str) -> None:
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        _require(param.grad is not None, where, f"{what}: parameter {name} got no gradient")
        _require(torch.isfinite(param.grad).all(), where,
                 f"{what}: parameter {name} has a non-finite gradient")


# ------------------------------------------------------------------------------------ spaces

def check_space(spec: str, seeds: Iterable[int] = range(3), *, width_mult: float = 0.25,
                num_classes: int = 10, input_size: int = 16, **options: Any):
    """Checks the search space ``spec`` (a registered name or ``file.py:factory``).

    Args:
        spec: What ``--space`` would be given.
        seeds: Students sampled for the per-student checks.
        width_mult, num_classes, input_size: Small settings keep each check in milliseconds.
        **options: The factory's own options.

    Returns:
        The space built with those settings.
    """
    from nni.nas.nn.pytorch import ModelSpace

    from gtn_nas.space.export import check_parity, export_onnx
    from gtn_nas.space.plugins import build_space
    from gtn_nas.space.students import load_student, save_student

    where = f"search space {spec}"
    torch.manual_seed(0)
    space = build_space(spec, width_mult=width_mult, num_classes=num_classes,
                        input_size=input_size, **options)  # checks the contract itself
    _require(isinstance(space, ModelSpace), where, "is not an NNI ModelSpace")
    labels = list(space.simplify())
    _require(labels == list(space.choices()), where,
             "NNI's choices differ from the space's choices()")
    seeds = list(seeds)
    _require([space.sample(s) for s in seeds] == [space.sample(s) for s in seeds], where,
             "sample(seed) is not reproducible")
    x = torch.randn(4, space.in_channels, space.input_size, space.input_size)
    for seed in seeds:
        sample = space.sample(seed)
        _require(space.contains(sample) and space.validate(sample) == sample, where,
                 f"sample({seed}) is not a canonical member of the space")
        student = space.freeze(sample, seed=seed).train()
        logits = student(x)
        _require(tuple(logits.shape) == (4, space.num_classes), where,
                 f"student {seed}: logits of shape {tuple(logits.shape)}, expected "
                 f"{(4, space.num_classes)}")
        loss = nn.functional.cross_entropy(logits, torch.arange(4) % space.num_classes)
        loss.backward()
        _require(torch.isfinite(loss), where, f"student {seed}: non-finite loss")
        _all_gradients(student, where, f"student {seed}")
        space.eval()
        inheriting = space.freeze(sample, inherit_weights=True).eval()
        with torch.no_grad():
            gap = (inheriting(x[:3]) - space(x[:3], sample)).abs().max().item()
        _require(gap <= 1e-5, where, f"student {seed}: the supernet's path and the "
                                     f"weight-inheriting student differ by {gap:.2e}")
        _require(not _storages(inheriting) & _storages(space), where,
                 f"student {seed} shares parameter storage with the space")
    a, b = (space.freeze(space.sample(seeds[0]), inherit_weights=True) for _ in range(2))
    _require(not _storages(a) & _storages(b), where, "two frozen students share storage")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = space.freeze(space.sample(seeds[0]), seed=7)
    _require(torch.equal(before, torch.rand(1)), where,
             "freeze(sample, seed=...) consumed the global RNG")
    again = space.freeze(space.sample(seeds[0]), seed=7)
    _require(all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items()),
             where, "freeze(sample, seed=...) is not reproducible")
    for name in space.presets:
        _require(space.freeze(space.preset(name)) is not None, where,
                 f"preset {name} does not freeze")
    space.check_blocks()
    widths = space.block_channels(space.sample(seeds[0]))
    _require(len(widths) == 4 and widths[-1] == space.num_classes, where,
             f"block widths {widths}: expected 4 blocks ending in {space.num_classes} logits")
    student = space.freeze(space.sample(seeds[0]), seed=0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_student(Path(tmp) / "student.pt", student, space, space.sample(seeds[0]))
        torch.load(path, weights_only=True)  # no pickled modules inside
        loaded = load_student(path, space=space)
        with torch.no_grad():
            _require(torch.equal(loaded.model.eval()(x), student(x)), where,
                     "a saved and reloaded student computes something else")
        onnx_path = export_onnx(student, Path(tmp) / "student.onnx", space.example_input())
        gap = check_parity(student, onnx_path, torch.randn(5, *x.shape[1:]))
        _require(gap <= 1e-4, where, f"ONNX Runtime differs from PyTorch by {gap:.2e}")
    return space


# ---------------------------------------------------------------------------------- teachers

def check_teacher(name: str, *, num_classes: int = 10, input_size: int = 32,
                  **options: Any):
    """Checks the teacher ``name`` (a registered name) at ``input_size`` x ``input_size``.

    Returns:
        The teacher built for ``num_classes`` classes and 3 channels.
    """
    from gtn_nas.teacher.zoo import TeacherNet, build_teacher, load_teacher, save_teacher

    where = f"teacher {name}"
    torch.manual_seed(0)
    teacher = build_teacher(name, num_classes, **options)
    _require(isinstance(teacher, TeacherNet), where,
             f"the builder returned {type(teacher).__name__}, not a TeacherNet")
    _require(isinstance(teacher.blocks, nn.ModuleList) and len(teacher.blocks) == 4, where,
             "a teacher has exactly 4 blocks")
    _require((teacher.num_classes, teacher.in_channels) == (num_classes, 3), where,
             "num_classes/in_channels are not the ones asked for")
    x = torch.randn(2, 3, input_size, input_size)
    teacher.eval()
    with torch.no_grad():
        logits = teacher(x)
        logits2, features = teacher.forward_with_features(x)
        h, by_hand = x, []
        for block in teacher.blocks[:3]:
            h = block(h)
            by_hand.append(h.clone())
        logits3 = teacher.blocks[3](h)
    _require(tuple(logits.shape) == (2, num_classes), where,
             f"logits of shape {tuple(logits.shape)}, expected {(2, num_classes)}")
    _require(torch.equal(logits, logits2) and torch.equal(logits, logits3), where,
             "forward, forward_with_features and the blocks run one after another disagree")
    _require(len(features) == 3 and all(torch.equal(f, r) for f, r in zip(features, by_hand)),
             where, "forward_with_features must return the outputs of blocks 1, 2 and 3")
    shapes = teacher.feature_shapes(input_size)
    _require([tuple(f.shape[1:]) for f in features] == shapes, where,
             f"feature_shapes({input_size}) = {shapes} differs from the features' shapes")
    _require(all(len(s) == 3 for s in shapes), where,
             f"cut features {shapes} are not (C, H, W) maps: branches cannot be grafted")
    sizes = [input_size] + [s[1] for s in shapes]
    _require(all(b <= a for a, b in zip(sizes, sizes[1:])), where,
             f"resolutions {sizes} grow along the cuts")
    teacher.train()
    teacher.blocks[1].eval()
    modes = [m.training for m in teacher.modules()]
    teacher.feature_shapes(16)
    _require([m.training for m in teacher.modules()] == modes, where,
             "feature_shapes changed the training flags")
    teacher.train().zero_grad(set_to_none=True)
    logits, features = teacher.forward_with_features(torch.randn(2, 3, 16, 16))
    (logits.square().mean() + sum(f.mean() for f in features)).backward()
    _all_gradients(teacher, where, "backward")
    gray = build_teacher(name, 3, 1, **options).eval()
    with torch.no_grad():
        _require(tuple(gray(torch.randn(1, 1, input_size, input_size)).shape) == (1, 3),
                 where, "does not build for 1 input channel and 3 classes")
    with tempfile.TemporaryDirectory() as tmp:
        save_teacher(Path(tmp) / "teacher.pt", teacher)
        loaded, _ = load_teacher(Path(tmp) / "teacher.pt")
        teacher.eval()
        with torch.no_grad():
            _require(torch.equal(loaded.eval()(x), teacher(x)), where,
                     "a saved and reloaded teacher computes something else")
    return teacher


# -------------------------------------------------------------------------------- distillers

def check_distiller(name: str, *, with_teacher: bool | None = None, steps: int = 25,
                    **options: Any):
    """Checks the distillation method ``name`` on a small student and the ``tiny`` teacher.

    Args:
        name: A registered method name.
        with_teacher: Give it a teacher (default: unless the factory says
            ``needs_teacher = False``).
        steps: SGD steps that must lower the training loss (0 skips that check).
        **options: The method's keyword options.

    Returns:
        The distiller after the checks.
    """
    from gtn_nas.distill.distillers import DISTILLERS, build_distiller, method_options
    from gtn_nas.space.plugins import build_space
    from gtn_nas.teacher.zoo import build_teacher

    where = f"distillation method {name}"
    factory = DISTILLERS.get(name)
    if with_teacher is None:
        with_teacher = getattr(factory, "needs_teacher", True)
    allowed = method_options(name)
    torch.manual_seed(0)
    space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=8)
    student = space.freeze(space.preset("s_nas_s"), seed=0)
    teacher = build_teacher("tiny", num_classes=10) if with_teacher else None
    if name in ("fitnets", "at"):
        options.setdefault("input_size", 8)
    unknown = sorted(set(options) - set(allowed))
    _require(not unknown, where, f"options {unknown} are not keyword-only parameters")
    distiller = build_distiller(name, student, teacher, space.block_units, options=options)
    from gtn_nas.method import TrainingMethod

    _require(isinstance(distiller, TrainingMethod), where,
             f"the factory returned {type(distiller).__name__}, not a "
             f"gtn_nas.method.TrainingMethod (the engine's contract)")
    exported = distiller.export_student()
    _require(isinstance(exported, nn.Module), where, "export_student() is not an nn.Module")
    teacher_ids = {id(p) for p in teacher.parameters()} if teacher is not None else set()
    groups = distiller.param_groups()
    trained = [p for group in groups for p in group["params"]]
    _require(trained and not teacher_ids & {id(p) for p in trained}, where,
             "its parameter groups must hold the student's parameters and never the teacher's")
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()} if teacher else {}
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    distiller.on_epoch_start(0, 1)  # as the engine calls it (DKD's warm-up)
    distiller.train()
    losses = []
    for step in range(max(steps, 1)):
        out = distiller(x, y)
        _require(isinstance(out, dict) and "loss" in out and "logits" in out, where,
                 "forward(x, y) must return a dict with 'loss' and 'logits'")
        loss = out["loss"]
        _require(loss.dim() == 0 and torch.isfinite(loss), where,
                 f"loss must be a finite scalar, got {loss}")
        _require(tuple(out["logits"].shape) == (16, 10), where,
                 f"'logits' (the student's) of shape {tuple(out['logits'].shape)}")
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            graded = [p for p in trained if p.grad is not None]
            _require(graded, where, "none of its trained parameters got a gradient")
            _require(all(torch.isfinite(p.grad).all() for p in graded), where,
                     "a trained parameter got a non-finite gradient")
        optimizer.step()
        losses.append(loss.item())
    if teacher is not None:
        _require(all(p.grad is None for p in teacher.parameters()), where,
                 "the teacher received gradients")
        _require(all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items()),
                 where, "training changed the teacher (weights or batch-norm statistics)")
    if steps:
        _require(losses[-1] < losses[0], where,
                 f"{steps} SGD steps did not lower the loss ({losses[0]:.4f} -> "
                 f"{losses[-1]:.4f})")
    distiller.eval()
    with torch.no_grad():
        out = distiller(x, y)
        plain = distiller.export_student().eval()  # what is saved and exported
        _require(torch.allclose(out["logits"], plain(x), atol=1e-6), where,
                 "in eval mode 'logits' must be those of the exported student (validation "
                 "scores it)")
    return distiller


# ---------------------------------------------------------------------------------- datasets

def check_dataset(name: str, **kwargs: Any):
    """Checks the dataset ``name``; ``kwargs`` go to :func:`~gtn_nas.data.load_dataset`
    (``root=...``, dataset options).

    Returns:
        The splits at seed 0.
    """
    from gtn_nas.data import load_dataset, make_loaders

    where = f"dataset {name}"
    splits = load_dataset(name, seed=0, **kwargs)
    again = load_dataset(name, seed=0, **kwargs)
    for part in ("train", "val", "test"):
        data = getattr(splits, part)
        _require(len(data) > 0, where, f"the {part} split is empty")
        _require(len(data) == len(getattr(again, part)), where,
                 f"the {part} split differs between two loads at one seed")
        indices = getattr(data, "indices", None)
        if indices is not None:
            _require(torch.equal(torch.as_tensor(indices),
                                 torch.as_tensor(getattr(again, part).indices)), where,
                     f"the {part} split's items differ between two loads at one seed")
        for index in (0, len(data) - 1):
            image, label = data[index]
            _require(isinstance(image, torch.Tensor) and image.dtype == torch.float32, where,
                     f"{part}[{index}]: images must be float32 tensors")
            _require(tuple(image.shape) == (splits.in_channels, splits.image_size,
                                            splits.image_size), where,
                     f"{part}[{index}]: image of shape {tuple(image.shape)}, the splits "
                     f"declare {(splits.in_channels, splits.image_size, splits.image_size)}")
            _require(isinstance(label, int) and 0 <= label < splits.num_classes, where,
                     f"{part}[{index}]: label {label!r} is not an int in "
                     f"0..{splits.num_classes - 1}")
    _require(len(splits.class_names) == splits.num_classes, where,
             "class_names must name every class")
    gray = load_dataset(name, seed=0, channels=1, image_size=12, **kwargs)
    _require(tuple(gray.val[0][0].shape) == (1, 12, 12) and gray.in_channels == 1
             and gray.image_size == 12, where, "channels=1, image_size=12 are not honoured")
    limited = load_dataset(name, seed=0, limit=2, **kwargs)
    _require(len(limited.train) <= 2, where, f"limit=2 kept {len(limited.train)} examples")
    images, labels = next(iter(make_loaders(splits, 2)[1]))
    _require(images.shape[0] == labels.shape[0] == min(2, len(splits.val)), where,
             "the loaders do not batch the splits")
    return splits


# ---------------------------------------------------------------------------------- profiles

def check_profile(name: str, *, space: str | None = "resnet_supernet"):
    """Checks the hardware profile ``name`` (a bundled or installed name, or a YAML path):
    it loads and validates, and ``space`` (None: skip) builds at its input shape.

    Returns:
        The profile.
    """
    from gtn_nas.hardware.profiles import TIERS, load_profile

    where = f"hardware profile {name}"
    profile = load_profile(name)
    _require(profile.tiers() == list(TIERS), where, f"tiers {profile.tiers()}, expected "
                                                    f"{list(TIERS)}")
    _require(Path(profile.source).is_file(), where, "its source file is not a file")
    if space is not None:
        from gtn_nas.space.plugins import build_space

        channels, size, _ = profile.input.shape
        built = build_space(space, in_channels=channels, input_size=size, width_mult=0.25)
        _require((built.in_channels, built.input_size) == (channels, size), where,
                 f"space {space} does not build at its input shape {profile.input.shape}")
    return profile
