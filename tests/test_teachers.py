"""Tests of the teacher zoo: the 4-block contract, literature sizes, and safe weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import efficientnet_b0 as tv_efficientnet_b0

from gtn_nas.errors import ConfigError
from gtn_nas.teacher.efficientnet import efficientnet_b0_weights_file
from gtn_nas.teacher.net import TEACHERS, TeacherNet
from gtn_nas.teacher.zoo import build_teacher, teacher_names

SIZE = 32
NUM_CLASSES = 10
CHEAP = ["resnet32", "resnet8x4", "wrn16_2", "tiny"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def built() -> dict[str, TeacherNet]:
    """Each teacher built once (10 classes) and shared by the tests of this module."""
    return {}


@pytest.fixture(params=teacher_names())
def teacher(request, built) -> TeacherNet:
    name = request.param
    if name not in built:
        torch.manual_seed(0)
        built[name] = build_teacher(name, NUM_CLASSES)
    model = built[name]
    model.zero_grad(set_to_none=True)
    model.train()
    return model


def test_registry_holds_the_zoo():
    assert set(teacher_names()) >= {"resnet32", "resnet32x4", "resnet8x4", "wrn40_2", "wrn16_2",
                                    "efficientnet_b0", "tiny"}
    assert teacher_names() == TEACHERS.names()


def test_forward_features_and_blocks_agree(teacher):
    torch.manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE)
    teacher.eval()
    with torch.no_grad():
        logits = teacher(x)
        logits2, features = teacher.forward_with_features(x)
        # The 4 blocks run by hand, features cloned so later in-place ops would show.
        h, by_hand = x, []
        for block in teacher.blocks[:3]:
            h = block(h)
            by_hand.append(h.clone())
        logits3 = teacher.blocks[3](h)
    assert isinstance(teacher.blocks, nn.ModuleList) and len(teacher.blocks) == 4
    assert logits.shape == (2, NUM_CLASSES)
    assert teacher.num_classes == NUM_CLASSES and teacher.in_channels == 3
    assert torch.equal(logits, logits2)
    assert torch.equal(logits, logits3)
    assert len(features) == 3
    for feature, reference in zip(features, by_hand):
        assert torch.equal(feature, reference)
    shapes = teacher.feature_shapes(SIZE)
    assert [tuple(f.shape[1:]) for f in features] == shapes
    resolutions = [SIZE] + [h for _, h, _ in shapes]
    assert all(b <= a for a, b in zip(resolutions, resolutions[1:])), resolutions
    assert resolutions[-1] < SIZE  # the cuts really are at downsampling stages


def test_backward_reaches_every_parameter(teacher):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)  # 16x16 keeps the big teachers' backward pass cheap
    logits, features = teacher.forward_with_features(x)
    (logits.square().mean() + sum(f.mean() for f in features)).backward()
    missing = [name for name, p in teacher.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in teacher.parameters())
    assert sum(bool(p.grad.abs().sum() > 0) for p in teacher.parameters()) \
        > 0.9 * len(list(teacher.parameters()))


def test_feature_shapes_restores_each_training_flag(teacher):
    teacher.train()
    teacher.blocks[1].eval()  # a mixed state must survive the dry run
    before = [m.training for m in teacher.modules()]
    teacher.feature_shapes(16)
    assert [m.training for m in teacher.modules()] == before
    assert teacher.training and not teacher.blocks[1].training
    teacher.train()


# Exact counts for 100 classes (CIFAR-100). Published approximations: resnet32 0.46 M
# (CRD/RepDistiller; 0.47 M in SFTN), resnet32x4 7.43 M, wrn40_2 2.25 M, resnet8x4 1.23 M,
# wrn16_2 0.70 M.
@pytest.mark.parametrize("name, expected", [
    ("resnet32", 472_756),
    ("resnet32x4", 7_433_860),
    ("wrn40_2", 2_255_156),
    ("resnet8x4", 1_233_540),
    ("wrn16_2", 703_284),
])
def test_parameter_counts_match_the_literature(name, expected):
    assert n_params(build_teacher(name, 100)) == expected


def test_efficientnet_b0_is_torchvision_split_in_four(tmp_path):
    """Same parameters and, with torchvision's weights, the same logits as torchvision's model."""
    torch.manual_seed(3)
    reference = tv_efficientnet_b0(weights=None, num_classes=NUM_CLASSES).eval()
    path = tmp_path / "tv.pt"
    torch.save(reference.state_dict(), path)
    teacher = build_teacher("efficientnet_b0", NUM_CLASSES, weights_path=path).eval()
    assert n_params(teacher) == n_params(reference)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(teacher(x), reference(x), atol=1e-6)
    # Cuts after stages 2, 3 and 5 (strides 4, 8, 16); at 224x224: 56, 28 and 14 pixels.
    assert teacher.feature_shapes(64) == [(24, 16, 16), (40, 8, 8), (112, 4, 4)]


@pytest.mark.parametrize("name", CHEAP)
def test_in_channels_and_num_classes(name):
    model = build_teacher(name, num_classes=7, in_channels=1)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 7)
    assert model.feature_shapes(16)[0][1] <= 16
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(name="tiny", num_classes=0), "num_classes"),
    (dict(name="tiny", num_classes=10, in_channels=0), "in_channels"),
    (dict(name="tiny", num_classes=2.5), "num_classes"),
    (dict(name="resnet32", num_classes=10, width=2), "no option 'width' (allowed: none)"),
    (dict(name="tiny", num_classes=10, depth=3), "(allowed: norm)"),
    (dict(name="tiny", num_classes=10, norm="gn"), "allowed: bn, none"),
    (dict(name="resnet23", num_classes=10), "did you mean"),
])
def test_bad_requests_are_one_line_config_errors(kwargs, needle):
    with pytest.raises(ConfigError) as excinfo:
        build_teacher(**kwargs)
    assert needle in one_line_error(excinfo)


def test_pretrained_only_for_efficientnet():
    with pytest.raises(ConfigError) as excinfo:
        build_teacher("resnet32", 10, pretrained=True)
    message = one_line_error(excinfo)
    assert "resnet32" in message and "only efficientnet_b0" in message


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub directory, and no way to download anything."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "hub"


def test_pretrained_efficientnet_without_file_names_the_path(hub_dir):
    expected = hub_dir / "checkpoints" / "efficientnet_b0_rwightman-7f5810bc.pth"
    assert efficientnet_b0_weights_file() == expected
    with pytest.raises(ConfigError) as excinfo:
        build_teacher("efficientnet_b0", 10, pretrained=True)
    message = one_line_error(excinfo)
    assert str(expected) in message and "--teacher-weights" in message
    with pytest.raises(ConfigError, match="not found"):
        build_teacher("efficientnet_b0", 10, pretrained=True, weights_path=hub_dir / "nope.pth")


def test_pretrained_efficientnet_loads_the_local_file(hub_dir):
    torch.manual_seed(4)
    imagenet = tv_efficientnet_b0(weights=None).state_dict()  # 1000 classes, as the real file
    path = efficientnet_b0_weights_file()
    path.parent.mkdir(parents=True)
    torch.save(imagenet, path)

    teacher = build_teacher("efficientnet_b0", 10, pretrained=True)
    state = teacher.state_dict()
    renamed = teacher.adapt_state_dict(imagenet)
    compared = 0
    for key, value in renamed.items():
        if key.startswith("blocks.3.classifier."):
            continue
        assert torch.equal(state[key], value), key
        compared += 1
    assert compared == len(state) - 2  # everything but the classifier's weight and bias
    assert state["blocks.3.classifier.1.weight"].shape == (10, 1280)

    # One input channel: the RGB kernels of the first convolution are summed.
    gray = build_teacher("efficientnet_b0", 10, in_channels=1, pretrained=True)
    first = gray.state_dict()["blocks.0.0.0.weight"]
    assert torch.allclose(first, imagenet["features.0.0.weight"].sum(1, keepdim=True))
    assert gray(torch.randn(2, 1, SIZE, SIZE)).shape == (2, 10)

    # A file that lacks a non-classifier key is refused, naming the key.
    del imagenet["features.8.1.bias"]
    torch.save(imagenet, path)
    with pytest.raises(ConfigError) as excinfo:
        build_teacher("efficientnet_b0", 10, pretrained=True)
    assert "missing blocks.3.features.2.1.bias" in one_line_error(excinfo)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "ddp"])
def test_weights_path_round_trip(tmp_path, wrap):
    torch.manual_seed(5)
    source = build_teacher("tiny", NUM_CLASSES).eval()
    with torch.no_grad():  # make the BN running statistics non-trivial
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
    state = source.state_dict()
    obj = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3},
           "model": {"model": state}, "ddp": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / "teacher.pt"
    torch.save(obj, path)
    torch.manual_seed(6)
    loaded = build_teacher("tiny", NUM_CLASSES, weights_path=path).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    fresh = build_teacher("tiny", NUM_CLASSES).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(x), source(x))


def test_mismatched_weights_are_refused(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save(build_teacher("tiny", 5).state_dict(), path)
    with pytest.raises(ConfigError) as excinfo:
        build_teacher("tiny", NUM_CLASSES, weights_path=path)
    message = one_line_error(excinfo)
    assert "blocks.3.fc.weight (5, 32) in file vs (10, 32) in model" in message

    torch.save(build_teacher("tiny", 5, norm="none").state_dict(), path)
    with pytest.raises(ConfigError, match="missing .*running_mean"):
        build_teacher("tiny", 5, weights_path=path)

    with pytest.raises(ConfigError, match="not found"):
        build_teacher("tiny", 5, weights_path=tmp_path / "absent.pt")
    torch.save({"lr": 0.1}, path)
    with pytest.raises(ConfigError, match="no state_dict"):
        build_teacher("tiny", 5, weights_path=path)
    torch.save(nn.Linear(2, 2), path)  # a pickled module: refused by weights_only=True
    with pytest.raises(ConfigError) as excinfo:
        build_teacher("tiny", 5, weights_path=path)
    message = one_line_error(excinfo)
    assert "holds pickled Python objects" in message and "weights_only=False" not in message


def test_tiny_norm_option():
    plain = build_teacher("tiny", NUM_CLASSES, norm="none")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules())
    assert all(conv.bias is not None for conv in plain.modules() if isinstance(conv, nn.Conv2d))
    with_bn = build_teacher("tiny", NUM_CLASSES)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 3
    assert plain.feature_shapes(SIZE) == with_bn.feature_shapes(SIZE)
