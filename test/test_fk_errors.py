"""Bad input to forward kinematics gets an error that names the argument."""

import pytest
import torch

import momentum_ops
from conftest import HAS_CUDA
from reference import random_joint_parameters, random_skeleton

fk_op = torch.ops.momentum.joint_parameters_to_skeleton_state
fk_backward_op = torch.ops.momentum.joint_parameters_to_skeleton_state_backward


@pytest.fixture
def skeleton(generator):
    parents, offsets, pre = random_skeleton(6, generator, roots=2)
    jp = random_joint_parameters((3,), 6, generator)
    return jp, parents, offsets, pre


def call(jp, parents, offsets, pre):
    return fk_op(jp, parents, offsets, pre)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda jp, p, o, q: (jp[..., :6], p, o, q), r"joint_parameters must have shape \[\.\.\., J, 7\], got \[3, 6, 6\]"),
        (lambda jp, p, o, q: (jp[0, 0], p, o, q), r"joint_parameters must have shape \[\.\.\., J, 7\], got \[7\]"),
        (lambda jp, p, o, q: (jp.to(torch.int64), p, o, q), "joint_parameters must be float32 or float64, got int64"),
        (lambda jp, p, o, q: (jp.half(), p, o, q), "joint_parameters must be float32 or float64, got float16"),
        (lambda jp, p, o, q: (jp, p[:5], o, q), r"parents must have shape \[J\] with J = 6"),
        (lambda jp, p, o, q: (jp, p[None], o, q), r"parents must have shape \[J\]"),
        (lambda jp, p, o, q: (jp, p.double(), o, q), "parents must be int32 or int64, got float64"),
        (lambda jp, p, o, q: (jp, p, o[:, :2], q), r"offsets must have shape \[J, 3\], got \[6, 2\]"),
        (lambda jp, p, o, q: (jp, p, o[:5], q), r"offsets must have shape \[J, 3\], got \[5, 3\]"),
        (lambda jp, p, o, q: (jp, p, o.float(), q), "offsets is float32 but joint_parameters is float64"),
        (lambda jp, p, o, q: (jp, p, o, q[:, :3]), r"pre_rotations must have shape \[J, 4\]"),
        (lambda jp, p, o, q: (jp, p, o, q.float()), "pre_rotations is float32 but joint_parameters is float64"),
        (lambda jp, p, o, q: (jp.float(), p, o.float(), q), "pre_rotations is float64 but joint_parameters is float32"),
        (lambda jp, p, o, q: (jp[:, :5], p[:5], o, q), r"offsets must have shape \[J, 3\], got \[6, 3\]"),
    ],
    ids=[
        "jp_last_dim", "jp_rank", "jp_int", "jp_half", "parents_len", "parents_rank", "parents_float",
        "offsets_width", "offsets_len", "offsets_dtype", "pre_width", "pre_dtype", "mixed_float", "mismatched_J",
    ],
)
def test_bad_shapes_and_dtypes(skeleton, change, match):
    with pytest.raises(RuntimeError, match=match):
        call(*change(*skeleton))


@pytest.mark.parametrize(
    "parents,match",
    [
        ([-1, 0, 1, 9, 2, -1], r"parents\[3\] = 9 is out of range"),
        ([-1, 0, 1, -2, 2, -1], r"parents\[3\] = -2 is out of range"),
        ([-1, 0, 4, 1, 2, -1], r"parents\[2\] = 4 does not come before joint 2"),
        ([-1, 1, 0, 1, 2, -1], r"parents\[1\] = 1 does not come before joint 1"),
    ],
    ids=["too_large", "below_minus_one", "child_first", "self_parent"],
)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_bad_parents(skeleton, parents, match, dtype):
    jp, _, offsets, pre = skeleton
    with pytest.raises(RuntimeError, match=match):
        call(jp, torch.tensor(parents, dtype=dtype), offsets, pre)


def test_python_api_checks_layout(skeleton):
    jp, parents, offsets, pre = skeleton
    with pytest.raises(ValueError, match=r"joint_parameters must have shape \[\.\.\., J, 7\] or \[\.\.\., J\*7\] with J = 6"):
        momentum_ops.joint_parameters_to_skeleton_state(jp[..., :5, :], parents, offsets, pre)


def test_backward_op_checks_its_arguments(skeleton):
    jp, parents, offsets, pre = skeleton
    state = fk_op(jp, parents, offsets, pre)
    with pytest.raises(RuntimeError, match=r"grad_skeleton_state must have shape \[\.\.\., J, 8\] matching joint_parameters \[3, 6, 7\]"):
        fk_backward_op(state[:2], jp, parents, offsets, pre, state)
    with pytest.raises(RuntimeError, match=r"skeleton_state must have shape"):
        fk_backward_op(state, jp, parents, offsets, pre, state[..., :7])
    with pytest.raises(RuntimeError, match=r"grad_skeleton_state is float32 but joint_parameters is float64"):
        fk_backward_op(state.float(), jp, parents, offsets, pre, state)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
def test_wrong_devices(skeleton):
    jp, parents, offsets, pre = skeleton
    with pytest.raises(RuntimeError, match=r"offsets is on cpu but joint_parameters is on cuda:0"):
        call(jp.cuda(), parents, offsets, pre.cuda())
    with pytest.raises(RuntimeError, match=r"pre_rotations is on cpu but joint_parameters is on cuda:0"):
        call(jp.cuda(), parents, offsets.cuda(), pre)
    with pytest.raises(RuntimeError, match=r"offsets is on cuda:0 but joint_parameters is on cpu"):
        call(jp, parents, offsets.cuda(), pre)
    with pytest.raises(RuntimeError, match=r"parents is on cuda:0; it must be on the CPU or on the device of joint_parameters \(cpu\)"):
        call(jp, parents.cuda(), offsets, pre)
    # A bad parent on the GPU is found before any kernel runs.
    with pytest.raises(RuntimeError, match=r"parents\[2\] = 4 does not come before joint 2"):
        call(jp.cuda(), torch.tensor([-1, 0, 4, 1, 2, -1]).cuda(), offsets.cuda(), pre.cuda())
