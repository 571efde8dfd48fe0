"""Inverse reparameterisation of a whole student into GPD's dynamic teacher, and back.

:func:`build_dynamic_teacher` walks a plain student's module tree and replaces every
convolution, linear layer and batch norm with its widened, parameter-sharing counterpart
(:mod:`gtn_nas.distill.gpd.layers`; 3x3 stride-1 convolutions become multi-branch,
:mod:`gtn_nas.distill.gpd.cbr`). Containers (``nn.Sequential``, residual blocks, heads) are kept
as they are: their forwards only compose children, add residuals, pool and flatten, which all
commute with "``r`` copies divided by ``r``". The first weight layer reads the unwidened input
and the last one writes the unwidened logits. :func:`verify_widening` runs the student and the
DT side by side and names the first module whose DT output is not the student's repeated;
:func:`student_state` reads the student's tensors back from the DT (for
``torch.func.functional_call`` on a copy of the student, and for export).

Example:
    >>> dt = build_dynamic_teacher(student, ratio=2)                       # doctest: +SKIP
    >>> verify_widening(student, dt, 2, torch.randn(2, 3, 16, 16))         # doctest: +SKIP
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from gtn_nas.errors import ConfigError
from gtn_nas.distill.gpd.cbr import BRANCHES, CBRConv2d, is_cbr_candidate
from gtn_nas.distill.gpd.layers import SharedLayer, WideBatchNorm2d, WideConv2d, WideLinear

CHANNELWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.AdaptiveAvgPool2d, nn.AvgPool2d,
               nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout, nn.Dropout2d)
"""Parameter-free layers that commute with widening (channel-wise and positively homogeneous:
``f(x / r) = f(x) / r``). Others (ReLU6, SiLU, sigmoid, ...) do not, and are refused."""


def _refuse(path: str, module: nn.Module, why: str) -> ConfigError:
    return ConfigError(f"gpd cannot widen module '{path or '<root>'}' "
                       f"({type(module).__name__}): {why}")


def build_dynamic_teacher(student: nn.Module, ratio: int, branches: Sequence[str] = BRANCHES,
                          init: str = "scratch", noise: float = 0.0, seed: int = 0) -> nn.Module:
    """The dynamic teacher of ``student``: widened ``ratio`` times, sharing its leading slice.

    Args:
        student: A plain student (left untouched).
        ratio: Integer widening ratio ``r >= 2`` (checked by the caller).
        branches: CBR branches for 3x3 stride-1 convolutions; empty for plain widened convs.
        init: ``scratch`` or ``student``: the CBR branches' initial scales.
        noise: Standard deviation of Gaussian noise added to the DT's extra copies (0: off, the
            DT then computes exactly the student's function).
        seed: Seeds the extra branches' weights and the noise.

    Raises:
        ConfigError: naming the path and type of a module that cannot be widened.
    """
    device = next((t.device for t in student.state_dict().values()), torch.device("cpu"))
    dt = copy.deepcopy(student).cpu()
    modules = list(dt.named_modules())
    weight_layers = [path for path, m in modules if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not weight_layers:
        raise _refuse("", dt, "it has no convolution or linear layer")
    if not weight_layers[0]:
        raise _refuse("", dt, "the student is a single layer")
    last = weight_layers[-1]
    generator = torch.Generator().manual_seed(seed)
    widened = False  # whether the features at this point of the walk are widened
    for path, module in modules:
        if isinstance(module, nn.Conv2d):
            in_widened, out_widened = widened, path != last
            if type(module) is not nn.Conv2d or module.padding_mode != "zeros":
                raise _refuse(path, module, "only plain nn.Conv2d with zero padding")
            if module.groups > 1 and not (in_widened and out_widened):
                raise _refuse(path, module, "a grouped convolution must read and write "
                                            "hidden features, not the input or the logits")
            if branches and is_cbr_candidate(module):
                new: nn.Module = CBRConv2d(module, ratio, in_widened, out_widened, branches,
                                           init, generator)
            else:
                new = WideConv2d(module, ratio, in_widened, out_widened)
            widened = out_widened
        elif isinstance(module, nn.Linear):
            if type(module) is not nn.Linear:
                raise _refuse(path, module, "only plain nn.Linear")
            new, widened = WideLinear(module, ratio, widened, path != last), path != last
        elif isinstance(module, nn.BatchNorm2d):
            if type(module) is not nn.BatchNorm2d or not module.affine \
                    or not module.track_running_stats:
                raise _refuse(path, module, "only nn.BatchNorm2d with affine parameters and "
                                            "running statistics")
            if not widened:
                raise _refuse(path, module, "batch norm of the input or of the logits")
            new = WideBatchNorm2d(module, ratio)
        else:
            has_own = any(True for _ in module.parameters(recurse=False)) or any(
                True for _ in module.buffers(recurse=False))
            if has_own:
                raise _refuse(path, module, "it holds its own parameters or buffers")
            if not any(True for _ in module.children()) and not isinstance(module, CHANNELWISE):
                raise _refuse(path, module, "not known to commute with widening (allowed "
                                            "parameter-free layers: "
                                            + ", ".join(c.__name__ for c in CHANNELWISE) + ")")
            continue
        parent, _, name = path.rpartition(".")
        setattr(dt.get_submodule(parent), name, new)
    if noise > 0:
        for module in dt.modules():
            if isinstance(module, SharedLayer):
                module.add_noise(noise, generator)
    return dt.to(device)


def student_state(dt: nn.Module) -> dict[str, torch.Tensor]:
    """The student's state_dict entries (parameters and buffers) read from the DT.

    Parameters are differentiable functions of the DT's (sliced, scaled, folded); buffers are
    the student's own running statistics.
    """
    state: dict[str, torch.Tensor] = {}
    for path, module in dt.named_modules():
        if isinstance(module, SharedLayer):
            for name, tensor in module.student_tensors().items():
                state[f"{path}.{name}" if path else name] = tensor
    return state


@torch.no_grad()
def verify_widening(student: nn.Module, dt: nn.Module, ratio: int, x: torch.Tensor,
                    rtol: float = 1e-4) -> float:
    """Checks, module by module in eval mode, that the DT computes the student's features
    repeated ``ratio`` times and divided by ``ratio`` (the logits: equal).

    Returns:
        The largest difference of the logits.

    Raises:
        ConfigError: naming the first module (in execution order) whose output differs.
    """
    outputs: dict[str, list[torch.Tensor]] = {"student": [], "dt": []}
    order: list[tuple[str, nn.Module]] = []

    def hook(kind: str, path: str, module: nn.Module):
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                outputs[kind].append(output.detach().clone())
                if kind == "dt":
                    order.append((path, module))
        return record

    running: list[tuple[str, nn.Module]] = []

    def enter(path: str, module: nn.Module):
        def push(_module: nn.Module, _inputs: object) -> None:
            running.append((path, module))
        return push

    handles = [m.register_forward_hook(hook("student", p, m)) for p, m in student.named_modules()]
    handles += [m.register_forward_hook(hook("dt", p, m)) for p, m in dt.named_modules()]
    handles += [m.register_forward_pre_hook(enter(p, m)) for p, m in dt.named_modules()]
    modes = student.training, dt.training
    student.eval()
    dt.eval()
    try:
        student(x)
        try:
            dt(x)
        except RuntimeError as error:
            done = {id(m) for _, m in order}
            path, module = next(((p, m) for p, m in reversed(running) if id(m) not in done),
                                ("", dt))
            raise _refuse(path, module, f"its widened forward fails "
                                        f"({str(error).splitlines()[0]})") from error
    finally:
        for handle in handles:
            handle.remove()
        student.train(modes[0])
        dt.train(modes[1])
    if len(outputs["student"]) != len(outputs["dt"]):
        raise _refuse("", dt, "the widened network runs a different sequence of modules")
    diff = 0.0
    for (path, module), s, d in zip(order, outputs["student"], outputs["dt"]):
        if d.shape == s.shape:
            expected = s
        elif d.dim() >= 2 and d.shape[0] == s.shape[0] and d.shape[1] == s.shape[1] * ratio \
                and d.shape[2:] == s.shape[2:]:
            expected = torch.cat([s / ratio] * ratio, 1)
        else:
            raise _refuse(path, module, f"its widened output has shape {tuple(d.shape)}, "
                                        f"expected {ratio} x the student's {tuple(s.shape)}")
        diff = float((d - expected).abs().max()) if d.numel() else 0.0
        if not diff <= rtol * max(1.0, float(expected.abs().max()) if d.numel() else 1.0):
            raise _refuse(path, module, f"its widened output differs from the student's "
                                        f"repeated {ratio} times by {diff:.3g} (its forward "
                                        f"must act on channels independently)")
    return diff
