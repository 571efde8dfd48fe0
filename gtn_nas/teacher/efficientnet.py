"""torchvision's EfficientNet-B0 as a 4-block teacher, registered in
:data:`gtn_nas.teacher.net.TEACHERS`; its ImageNet weights are read from torch hub's cache,
never downloaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.teacher.net import TEACHERS, TeacherNet, _load_checked, read_state_dict

_log = logging.getLogger(__name__)


def efficientnet_b0_weights_file() -> Path:
    """Where torch hub caches torchvision's ``EfficientNet_B0_Weights.IMAGENET1K_V1``.

    Example:
        >>> efficientnet_b0_weights_file().name
        'efficientnet_b0_rwightman-7f5810bc.pth'
    """
    from torchvision.models import EfficientNet_B0_Weights

    url = EfficientNet_B0_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)



# --------------------------------------------------------------------------------------------
# EfficientNet-B0 (torchvision)
# --------------------------------------------------------------------------------------------

_EFFNET_SPLIT = ((0, 3), (3, 4), (4, 6), (6, 9))
"""torchvision ``features`` index ranges of the 4 blocks. At 224x224 the cuts are 24x56x56
(stem + stages 1-2), 40x28x28 (stage 3) and 112x14x14 (stages 4-5); block 4 holds stages 6-7,
the 1x1 conv to 1280 channels, the average pool and the classifier."""

_EFFNET_CLASSIFIER = "blocks.3.classifier."


class _EfficientNetHead(nn.Module):
    """EfficientNet's last feature stages, average pool, flatten and classifier."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class EfficientNetB0Teacher(TeacherNet):
    """torchvision's EfficientNet-B0 cut into 4 blocks (see ``_EFFNET_SPLIT``).

    Reads torchvision-format state_dicts (``features.*``, ``classifier.*`` keys) as well as its
    own, so a plain torchvision checkpoint can be passed as ``weights_path``.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        from torchvision.models import efficientnet_b0

        net = efficientnet_b0(weights=None, num_classes=num_classes)  # torchvision's own init
        if in_channels != 3:
            old = net.features[0][0]
            conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                             old.padding, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            net.features[0][0] = conv
        parts = [nn.Sequential(*net.features[start:stop]) for start, stop in _EFFNET_SPLIT]
        blocks = parts[:3] + [_EfficientNetHead(parts[3], net.avgpool, net.classifier)]
        super().__init__("efficientnet_b0", blocks, num_classes, in_channels)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Maps torchvision keys (``features.4.0...``) to this teacher's (``blocks.2.0.0...``)."""
        if not any(key.startswith("features.") for key in state):
            return state
        prefixes: dict[str, str] = {}
        for block, (start, stop) in enumerate(_EFFNET_SPLIT):
            inner = "features." if block == 3 else ""
            for index in range(start, stop):
                prefixes[str(index)] = f"blocks.{block}.{inner}{index - start}"
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            parts = key.split(".", 2)
            if parts[0] == "features" and len(parts) == 3 and parts[1] in prefixes:
                key = f"{prefixes[parts[1]]}.{parts[2]}"
            elif parts[0] == "classifier":
                key = "blocks.3." + key
            renamed[key] = value
        return renamed

    def load_pretrained(self, weights_path: str | os.PathLike | None = None) -> None:
        """Loads ImageNet weights from ``weights_path`` or torch hub's cache; never downloads.

        The 1000-class classifier is dropped (this teacher keeps its fresh one); every other
        key must match. With ``in_channels != 3`` the first convolution is adapted: summed over
        RGB for 1 channel, else RGB repeated cyclically and scaled by ``3 / in_channels``.
        """
        if weights_path is not None:
            path = Path(weights_path)
            if not path.is_file():
                raise ConfigError(f"efficientnet_b0 ImageNet weights file not found: {path}")
        else:
            path = efficientnet_b0_weights_file()
            if not path.is_file():
                from torchvision.models import EfficientNet_B0_Weights

                raise ConfigError(
                    f"efficientnet_b0 ImageNet weights not found at {path}; no download is "
                    f"attempted: download {EfficientNet_B0_Weights.IMAGENET1K_V1.url} elsewhere "
                    f"and place it there, or pass its path with --teacher-weights"
                )
        state = self.adapt_state_dict(read_state_dict(path))
        state = {k: v for k, v in state.items() if not k.startswith(_EFFNET_CLASSIFIER)}
        first_conv = "blocks.0.0.0.weight"
        weight = state.get(first_conv)
        if weight is not None and weight.dim() == 4 and weight.shape[1] == 3 \
                and self.in_channels != 3:
            if self.in_channels == 1:
                weight = weight.sum(dim=1, keepdim=True)
            else:
                repeats = [weight[:, i % 3] for i in range(self.in_channels)]
                weight = torch.stack(repeats, dim=1) * (3 / self.in_channels)
            state[first_conv] = weight
        _load_checked(self, state, path, optional_prefixes=(_EFFNET_CLASSIFIER,))
        _log.info("teacher efficientnet_b0: loaded ImageNet weights from %s (classifier kept "
                  "fresh for %d classes)", path, self.num_classes)


@TEACHERS.register("efficientnet_b0")
def efficientnet_b0(num_classes: int, in_channels: int = 3) -> TeacherNet:
    """torchvision EfficientNet-B0 with a ``num_classes`` classifier, cut into 4 blocks."""
    return EfficientNetB0Teacher(num_classes, in_channels)
