"""Argument checks of the Python entry points and the fake kernels, and the
autograd registration every op shares.

The compiled kernels check their own arguments (csrc/common/checks.*); what
lives here is what Python must check before it can call them: ``None`` where
a tensor belongs, integer and scalar options, index tensors that are not
integers, devices in fake kernels (which run for ``meta`` tensors), and
autograd modes an op does not implement.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Callable, Dict, Optional

import torch

import torch.autograd.forward_ad as _forward_ad

# Keeps the kernels registered here alive.
_LIBRARY = torch.library.Library("momentum", "IMPL")


def tensor(value, name: str, where: str) -> torch.Tensor:
    """`value` itself, which must be a tensor (not None, not a list)."""
    if not isinstance(value, torch.Tensor):
        got = "None" if value is None else type(value).__name__
        raise ValueError(f"{where}: {name} must be a tensor, got {got}")
    return value


def index_tensor(value, name: str, where: str, device=None) -> torch.Tensor:
    """An int32/int64 tensor of indices (sequences of ints are converted);
    floating or bool values are refused rather than truncated."""
    if value is None:
        raise ValueError(f"{where}: {name} must be an integer tensor, got None")
    try:
        t = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{where}: {name} must be an integer tensor: {error}") from None
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{where}: {name} must hold integers (int32 or int64), got {t.dtype}")
    return t


def integer_option(value, name: str, where: str, minimum: int, maximum: int) -> int:
    """A Python integer in [minimum, maximum]; 2.9 is refused, not truncated."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise ValueError(f"{where}: {name} must be in [{minimum}, {maximum}], got {number}")
    return number


def finite_option(value, name: str, where: str, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite real number >= minimum (> minimum when `strict`)."""
    if torch.compiler.is_compiling():
        return value  # possibly symbolic; the op checks it again when it runs
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or (number <= minimum if strict else number < minimum):
        raise ValueError(f"{where}: {name} must be a finite number {'>' if strict else '>='} {minimum:g}, "
                         f"got {value!r}")
    return number


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without sysconf
        return 16 << 30


def memory_budget(size: int, what: str, where: str) -> None:
    """Refuses to allocate `size` bytes for `what` when that is more than half
    of this machine's memory: a small file that names huge counts (joints,
    morph targets, keyframes) must get a clear error, not the out-of-memory
    killer."""
    memory = _machine_memory()
    if size > memory // 2:
        raise ValueError(f"{where}: {what} would take {_size(size)}, more than half of this machine's "
                         f"{_size(memory)} of memory")


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def same_device(op: str, reference_name: str, reference: torch.Tensor, tensors: Dict[str, torch.Tensor],
                indices: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """For fake kernels, which also run for ``meta`` tensors outside fake mode:
    every tensor on the reference's device, index tensors there or on the CPU.
    Without this a ``meta`` argument beside CPU ones would return uninitialised
    CPU memory instead of an error."""
    for name, t in tensors.items():
        if t.device != reference.device:
            raise RuntimeError(f"{op}: {name} is on {t.device} but {reference_name} is on {reference.device}; "
                               "they must be on the same device")
    for name, t in (indices or {}).items():
        if t.device.type != "cpu" and t.device != reference.device:
            raise RuntimeError(f"{op}: {name} is on {t.device}; it must be on the CPU or on the device of "
                               f"{reference_name} ({reference.device})")


# ------------------------------------------------------------------ autograd
def _has_tangent(value) -> bool:
    if isinstance(value, torch.Tensor):
        return _forward_ad.unpack_dual(value).tangent is not None
    if isinstance(value, (list, tuple)):
        return any(_has_tangent(v) for v in value)
    return False


def _primal(value):
    if isinstance(value, torch.Tensor):
        return _forward_ad.unpack_dual(value).primal
    return value


def register_autograd(name: str, backward: Callable, setup_context: Callable,
                      forward_ad: Optional[Callable] = None) -> None:
    """torch.library.register_autograd for ``momentum::<name>``, plus
    forward-mode AD (torch.autograd.forward_ad, torch.func.jvp/jacfwd).

    torch's generated autograd kernel only acts when an input requires grad,
    so forward-mode tangents would silently vanish. Here a call whose inputs
    carry tangents goes to `forward_ad`: a pure-PyTorch form of the op that
    propagates them (the result's primal still comes from the compiled op);
    without one, such a call raises."""
    op = getattr(torch.ops.momentum, name).default
    try:
        from torch._library.autograd import Info, make_autograd_impl
    except ImportError:  # pragma: no cover - a torch without the helper: no forward-mode check
        torch.library.register_autograd(f"momentum::{name}", backward, setup_context=setup_context)
        return
    kernel = make_autograd_impl(op, Info(backward, setup_context))

    def autograd_kernel(keyset, *args, **kwargs):
        if _has_tangent(args):
            if forward_ad is None:
                raise RuntimeError(
                    f"momentum::{name} does not support forward-mode AD (torch.func.jvp, jacfwd, "
                    "torch.autograd.forward_ad); use reverse mode (backward, torch.func.vjp, jacrev)")
            primal_out = op(*[_primal(a) for a in args])
            tangent_out = forward_ad(*args)
            if isinstance(primal_out, tuple):
                return tuple(_dual(p, t) for p, t in zip(primal_out, tangent_out))
            return _dual(primal_out, tangent_out)
        return kernel(keyset, *args, **kwargs)

    _LIBRARY.impl(name, autograd_kernel, "Autograd", with_keyset=True)


def _dual(primal: torch.Tensor, reference_result) -> torch.Tensor:
    """The compiled op's primal with the tangent the pure-PyTorch form carried."""
    tangent = _forward_ad.unpack_dual(reference_result).tangent if reference_result is not None else None
    if tangent is None or not primal.is_floating_point():
        return primal
    return _forward_ad.make_dual(primal, tangent)


def unsupported_backward(what: str) -> Callable:
    """A backward that raises: for backward ops whose own derivative (a double
    backward) is not implemented, so create_graph=True cannot give silent zeros."""

    def backward(ctx, *grads):
        raise RuntimeError(f"{what} is not differentiable (a double backward through it is not implemented)")

    return backward


def no_context(ctx, inputs, output) -> None:
    return None
