"""GPD: a student trained together with its dynamic teacher (the method ``gpd`` of distill).

The dynamic teacher (DT) is the student widened ``r`` times by inverse reparameterisation, with
multi-branch 3x3 convolutions (:mod:`gtn_nas.distill.gpd.widen`); at initialisation it computes
exactly the student's function. The student is not a separate network: it is the leading
``1/r`` slice of the DT's tensors (hard parameter sharing), run through a parameter-free copy
of the student's modules with ``torch.func.functional_call``, so one backward pass trains both
and their gradients add on the shared slice. The student keeps its own batch-norm running
statistics. Loss per step (docs/methods.md section 6, with a static teacher T):

- ``L_DT = CE(z_DT, y) + DKD(z_DT, z_T)``
- ``L_S  = CE(z_S, y) + DKD(z_S, z_T) + w * softCE(z_S, softmax(z_DT).detach())`` (label
  smoothing 0.1, no temperature, ``w = 3``); without a teacher the DKD terms drop.

As in the official code, DKD uses its ImageNet settings (alpha 1, beta 1, T 1) without
warm-up, and the gradient-norm clip is 5 (:attr:`GPDDistiller.grad_clip`). [our reading] Both
cross-entropies are plain (no label smoothing), and the DT is checked against the student
module by module on random images when it is built (:func:`verify_widening`).

Example:
    >>> from gtn_nas.space.plugins import build_space
    >>> space = build_space("resnet_supernet", width_mult=0.25, num_classes=10, input_size=16)
    >>> gpd = GPDDistiller(space.freeze(space.preset("s_nas_s"), seed=0), None, ratio=2)
    >>> out = gpd(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    >>> sorted(out)
    ['ce_dt', 'ce_s', 'dt_logits', 'logits', 'loss', 'loss_dt', 'loss_s', 'soft_ce']
    >>> type(gpd.export_student()).__name__
    'Sequential'
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gtn_nas.method import TrainingMethod
from gtn_nas.errors import ConfigError
from gtn_nas.distill.losses import dkd_loss, soft_cross_entropy
from gtn_nas.distill.gpd.cbr import BRANCHES, CBRConv2d
from gtn_nas.distill.gpd.layers import SharedLayer
from gtn_nas.distill.gpd.widen import build_dynamic_teacher, student_state, verify_widening

_log = logging.getLogger(__name__)

PROBE_SIZE = 16
"""Side of the random images on which the widening is checked at construction."""


def check_ratio(ratio: Any) -> int:
    """``ratio`` as an int, or a one-line ConfigError (integer ratios >= 2 only)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
            or not float(ratio).is_integer() or ratio < 2:
        raise ConfigError(f"gpd ratio must be an integer >= 2 (the dynamic teacher repeats "
                          f"every channel r times), got {ratio!r}")
    return int(ratio)


def check_branches(branches: Sequence[str]) -> tuple[str, ...]:
    """A validated branch set: empty (no CBR) or names from BRANCHES including ``origin``."""
    if isinstance(branches, str):
        branches = [b for b in branches.replace(",", " ").split() if b]
    branches = tuple(branches)
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown or len(set(branches)) != len(branches):
        raise ConfigError(f"gpd branches: {', '.join(unknown) or 'duplicates'} not allowed "
                          f"(choose distinct names from: {', '.join(BRANCHES)})")
    if branches and "origin" not in branches:
        raise ConfigError(f"gpd branches must include 'origin' (the student's own kernel), "
                          f"got {', '.join(branches)}")
    return tuple(b for b in BRANCHES if b in branches)


class GPDDistiller(TrainingMethod):
    """A student and its dynamic teacher trained together, with an optional static teacher.

    Args:
        student: A plain student (``space.freeze(sample)``); copied, not modified.
        teacher: A frozen teacher (``teacher(x)`` -> logits), run in eval mode without
            gradient, or None (training from scratch: no DKD terms).
        ratio: Integer widening ratio ``r >= 2``.
        branches: CBR branches of the DT's 3x3 stride-1 convs (``()``: plain widened convs).
        dt_weight: ``w``, the weight of the student's soft cross-entropy towards the DT.
        label_smoothing: Of that soft cross-entropy.
        dkd_alpha: DKD's TCKD weight.
        dkd_beta: DKD's NCKD weight.
        dkd_temperature: DKD's temperature.
        noise: Std of symmetry-breaking noise on the DT's extra copies (0: exact DT at init).
        init: ``scratch`` (branch scales .25/.25/0/.5/.05/.5) or ``student`` (1/0/0/0/0/0).
        seed: Seeds the extra branches' initial weights and the noise.

    Raises:
        ConfigError: a bad option, or a student module that cannot be widened.
    """

    grad_clip: float = 5.0
    has_unused_parameters = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None, *, ratio: int = 2,
                 branches: Sequence[str] = BRANCHES, dt_weight: float = 3.0,
                 label_smoothing: float = 0.1, dkd_alpha: float = 1.0, dkd_beta: float = 1.0,
                 dkd_temperature: float = 1.0, noise: float = 0.0, init: str = "scratch",
                 seed: int = 0) -> None:
        super().__init__()
        self.ratio = check_ratio(ratio)
        self.branches = check_branches(branches)
        if init not in ("scratch", "student"):
            raise ConfigError(f"gpd init must be scratch or student, got {init!r}")
        for name, value, ok in (("dt_weight", dt_weight, dt_weight >= 0),
                                ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1),
                                ("dkd_temperature", dkd_temperature, dkd_temperature > 0),
                                ("noise", noise, noise >= 0)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
                raise ConfigError(f"gpd {name} out of range: {value!r}")
        self.dt_weight, self.label_smoothing = float(dt_weight), float(label_smoothing)
        self.dkd_alpha, self.dkd_beta = float(dkd_alpha), float(dkd_beta)
        self.dkd_temperature = float(dkd_temperature)
        self.dt = build_dynamic_teacher(student, self.ratio, self.branches, init, 0.0, seed)
        # The student's modules without tensors: functional_call supplies them from the DT.
        self.__dict__["_template"] = copy.deepcopy(student).to("meta")
        expected = set(self._template.state_dict())
        got = set(student_state(self.dt))
        if expected != got:
            raise ConfigError(f"gpd: the student's tensors {sorted(expected ^ got)[:3]} have no "
                              f"counterpart in the dynamic teacher")
        self._probe(student)
        if noise > 0:
            generator = torch.Generator().manual_seed(seed + 1)
            for module in self.dt.modules():
                if isinstance(module, SharedLayer):
                    module.add_noise(noise, generator)
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()

    def _probe(self, student: nn.Module) -> None:
        """Checks the DT against ``student`` on random images (names a module that fails)."""
        first = next(m for m in student.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        if not isinstance(first, nn.Conv2d):
            return
        param = next(student.parameters())
        x = torch.randn(2, first.in_channels, PROBE_SIZE, PROBE_SIZE,
                        generator=torch.Generator().manual_seed(0)).to(param)
        was_training = student.training
        try:
            with torch.no_grad():
                student.eval()(x)
        except RuntimeError:  # e.g. a fixed input size: the check is skipped
            _log.info("gpd: widening not checked (the student does not take %s)", tuple(x.shape))
            return
        finally:
            student.train(was_training)
        verify_widening(student, self.dt, self.ratio, x)

    def train(self, mode: bool = True) -> "GPDDistiller":
        super().train(mode)
        self._template.train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def student_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits: its modules run on the DT's shared slice."""
        self._template.train(self.training)
        return functional_call(self._template, student_state(self.dt), (x,), strict=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        dt_logits = self.dt(x)
        logits = self.student_forward(x)
        ce_dt = F.cross_entropy(dt_logits, y)
        ce_s = F.cross_entropy(logits, y)
        soft = soft_cross_entropy(logits, F.softmax(dt_logits.detach(), dim=1),
                                  self.label_smoothing)
        out = {"ce_dt": ce_dt, "ce_s": ce_s, "soft_ce": soft}
        loss_dt, loss_s = ce_dt, ce_s + self.dt_weight * soft
        if self.teacher is not None and self.training:  # validation: no static teacher
            with torch.no_grad():
                t_logits = self.teacher(x)
            dkd = dict(alpha=self.dkd_alpha, beta=self.dkd_beta,
                       temperature=self.dkd_temperature, ce_weight=0.0)
            dkd_dt = dkd_loss(dt_logits, t_logits, y, **dkd)["loss"]
            dkd_s = dkd_loss(logits, t_logits, y, **dkd)["loss"]
            loss_dt, loss_s = loss_dt + dkd_dt, loss_s + dkd_s
            out.update(dkd_dt=dkd_dt, dkd_s=dkd_s, teacher_logits=t_logits)
        out.update(loss=loss_dt + loss_s, loss_dt=loss_dt, loss_s=loss_s, logits=logits,
                   dt_logits=dt_logits)
        return out

    def param_groups(self) -> list[dict[str, Any]]:
        """The DT's parameters (which hold the student's) and, apart, the CBR branch scales."""
        scales = [m.scales for m in self.dt.modules() if isinstance(m, CBRConv2d)]
        ids = {id(p) for p in scales}
        weights = [p for p in self.dt.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": weights, "name": "dynamic_teacher"}]
        if scales:
            groups.append({"params": scales, "name": "cbr_scales"})
        return groups

    @torch.no_grad()
    def export_student(self) -> nn.Module:
        """A plain student (the class and state_dict keys of the one passed in): the folded
        shared slice of the DT and the student's own running statistics."""
        state = {k: v.detach().clone() for k, v in student_state(self.dt).items()}
        reference = next(v for v in state.values() if v.is_floating_point())
        plain = copy.deepcopy(self._template).to_empty(device=reference.device)
        plain.to(reference.dtype)
        plain.load_state_dict(state, strict=True)
        return plain.train(self.training)
