"""A URDF robot arm: forward kinematics and the Jacobian, momentum_ops against
pytorch-kinematics (PyPI), side by side on the same inputs.

    python benchmarks/urdf.py [--device cpu cuda] [--batch 1 16 256 1024 4096 65536]
                              [--urdf test/assets/urdf/pytorch_kinematics/kuka_iiwa.urdf]

FK: joint angles [B, DOF] -> every link frame (momentum_ops: the parameter
transform, then the FK op; pytorch-kinematics: its serial chain, end link
only, its default). Jacobian: momentum_ops' position Jacobian of three points
on the end link (9 rows, which span the 6-DOF twist) from
``position_residuals_and_jacobian``; pytorch-kinematics' 6 x DOF geometric
Jacobian of the end link. Both float32. Goal (issue 8): at least 30x faster on
the GPU and 10x on the CPU at every batch size, for FK and for the Jacobian.
On the GPU the "of copy bw" column is the bytes momentum_ops must move (angles
in, frames or Jacobian out) over the measured copy rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import copy_bandwidth, device_name, measure, print_table  # noqa: E402

import momentum_ops  # noqa: E402
from momentum_ops.io import load_urdf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUKA = os.path.join(ROOT, "test", "assets", "urdf", "pytorch_kinematics", "kuka_iiwa.urdf")
GOAL = {"cpu": 10.0, "cuda": 30.0}


def run(device, batches, path, max_seconds):
    import pytorch_kinematics as pk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        character = load_urdf(path).to(device)
    end_link = character.joint_names[-1]
    chain = pk.build_serial_chain_from_urdf(open(path, "rb").read(), end_link).to(dtype=torch.float32, device=device)
    dof = character.num_parameters
    end = torch.tensor([character.num_joints - 1] * 3)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]], device=device)
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    rows = []
    for batch in batches:
        theta = (torch.rand(batch, dof, device=device) - 0.5) * 2
        targets = torch.zeros(batch, 3, 3, device=device)

        def ours_fk():
            joint_parameters = character.model_parameters_to_joint_parameters(theta)
            return character.joint_parameters_to_skeleton_state(joint_parameters)

        def theirs_fk():
            return chain.forward_kinematics(theta).get_matrix()

        def ours_jacobian():
            return momentum_ops.position_residuals_and_jacobian(character, theta, end, points, targets)[1]

        def theirs_jacobian():
            return chain.jacobian(theta)

        # Same end frame before timing.
        state = ours_fk()[:, -1]
        matrix = theirs_fk()
        torch.testing.assert_close(state[:, :3], matrix[:, :3, 3], atol=1e-4, rtol=1e-4)
        for what, ours, theirs, out_floats in (("FK", ours_fk, theirs_fk, character.num_joints * 8),
                                               ("Jacobian", ours_jacobian, theirs_jacobian, 9 * dof + 9)):
            t_ours = measure(ours, device, max_seconds)
            t_theirs = measure(theirs, device, max_seconds)
            speedup = t_theirs / t_ours
            row = [device, batch, what, t_ours, t_theirs, speedup, f"{GOAL[device]:.0f}x",
                   "met" if speedup >= GOAL[device] else "NOT met"]
            if bandwidth:
                row.append(batch * (dof + out_floats) * 4 / (t_ours * 1e-3) / bandwidth)
            rows.append(row)
            print("  ", row, flush=True)
    columns = ["device", "batch", "op", "momentum_ops ms", "pytorch-kinematics ms", "speedup", "goal", "goal met"]
    if bandwidth:
        columns.append("of copy bw")
    title = f"{os.path.basename(path)} ({dof} DOF, {character.num_joints} links), float32, {device_name(device)}"
    if bandwidth:
        title += f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s"
    print_table(title, columns, rows)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16, 256, 1024, 4096, 65536])
    parser.add_argument("--urdf", default=KUKA)
    parser.add_argument("--max-seconds", type=float, default=1.0, help="time budget per measurement")
    args = parser.parse_args()
    for device in args.device:
        run(device, args.batch, args.urdf, args.max_seconds)


if __name__ == "__main__":
    main()
