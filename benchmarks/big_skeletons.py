"""Big skeletons: load, pose (FK and skinning) and IK over a subset of the
parameters, with the peak memory and the time of each step.

    python benchmarks/big_skeletons.py [--joints 5000 20000] [--no-recursive] [--device cpu]

Each case runs in a fresh process, so its peak resident memory (``ru_maxrss``,
Python and torch included) is its own. Cases: the RecursiveSkeletons sample
(840 joints), and generated humanoid trees (``synthetic.humanoid_character``,
saved to glTF first, in another process) of the given joint counts. The
parameter transform is the identity (P = 7J), stored sparsely. Goals (issue 8):
under 1.5 GB peak for 5,000 joints, well under 20 s for the whole case; memory
linear in J. There is no peer: pymomentum builds a dense [7J, P] transform
as well (its Eigen sparse matrix) but only runs on the CPU, so the table
shows each step instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECURSIVE = os.path.join(ROOT, "test", "assets", "gltf", "RecursiveSkeletons", "RecursiveSkeletons.glb")
GOAL_BYTES = 1.5e9
GOAL_SECONDS = 20.0


def child(path: str, device: str, batch: int, constraints: int, iterations: int) -> dict:
    """Loads, poses and solves in this process; returns the figures (JSON)."""
    import resource

    import torch

    import momentum_ops
    from momentum_ops.io import load_gltf

    torch.manual_seed(0)
    start = time.perf_counter()
    character = load_gltf(path, dtype=torch.float64).to(device)
    loaded = time.perf_counter()
    J, P = character.num_joints, character.num_parameters
    # Rotations of every joint on the chains of `constraints` joints spread over the tree.
    parents = character.parents.tolist()
    picked = sorted({int(round(i * (J - 1) / max(constraints - 1, 1))) for i in range(constraints)})
    on_chain = set()
    for j in picked:
        while j >= 0 and j not in on_chain:
            on_chain.add(j)
            j = parents[j]
    active = torch.zeros(P, dtype=torch.bool)
    for j in on_chain:
        active[7 * j + 3: 7 * j + 6] = True
    truth = torch.zeros(batch, P, dtype=torch.float64)
    truth[:, active] = 0.1 * torch.randn(batch, int(active.sum()), dtype=torch.float64)
    truth = truth.to(device)
    state = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(truth))
    vertices = character.skin(state)
    if device == "cuda":
        torch.cuda.synchronize()
    posed = time.perf_counter()
    joints = torch.tensor(picked)
    targets = state[:, joints, :3]
    rest_state = character.joint_parameters_to_skeleton_state(
        character.model_parameters_to_joint_parameters(torch.zeros_like(truth)))
    result = momentum_ops.solve_ik(character, torch.zeros_like(truth), position_joints=joints,
                                   position_targets=targets, active_parameters=active,
                                   max_iterations=iterations)
    if device == "cuda":
        torch.cuda.synchronize()
    solved = time.perf_counter()
    reached = character.joint_parameters_to_skeleton_state(
        character.model_parameters_to_joint_parameters(result.model_parameters))[:, joints, :3]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(joints=J, parameters=P, entries=int(character.transform_values.numel()),
                vertices=character.num_vertices, batch=batch, active=int(active.sum()), constraints=len(picked),
                iterations=int(result.iterations.max()), load_s=loaded - start, pose_s=posed - loaded,
                ik_s=solved - posed, total_s=solved - start, peak_bytes=peak,
                initial_error=float((targets - rest_state[:, joints, :3]).norm(dim=-1).max()),
                max_miss=float((reached - targets).norm(dim=-1).max()),
                vertices_finite=bool(torch.isfinite(vertices).all()))


def generate(joints: int, path: str) -> None:
    """A humanoid tree of `joints` joints with a tube mesh, saved to glTF."""
    import torch

    from momentum_ops import synthetic
    from momentum_ops.io import save_gltf

    character = synthetic.humanoid_character(joints, rings=2, segments=6, dtype=torch.float64)
    save_gltf(path, character, motion=torch.zeros(1, joints, 7, dtype=torch.float64))


def run_case(path: str, device: str, batch: int, constraints: int, iterations: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, "--device", device,
                          "--batch", str(batch), "--constraints", str(constraints), "--iterations",
                          str(iterations)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joints", type=int, nargs="*", default=[5000])
    parser.add_argument("--no-recursive", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--constraints", type=int, default=24)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--generate-joints", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.device, args.batch, args.constraints, args.iterations)))
        return
    if args.generate:
        generate(args.generate_joints, args.generate)
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import print_table

    cases = [] if args.no_recursive else [("RecursiveSkeletons", RECURSIVE)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for joints in args.joints:
            path = os.path.join(folder, f"humanoid_{joints}.glb")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--generate", path, "--generate-joints",
                            str(joints)], check=True)
            cases.append((f"humanoid {joints}", path))
        for name, path in cases:
            r = run_case(path, args.device, args.batch, args.constraints, args.iterations)
            met = r["total_s"] < GOAL_SECONDS and (r["joints"] > 5000 or r["peak_bytes"] < GOAL_BYTES)
            rows.append([name, r["joints"], r["parameters"], r["entries"], r["vertices"],
                         f"{r['active']} / {r['constraints']} / {r['iterations']}", r["load_s"], r["pose_s"],
                         r["ik_s"], r["total_s"], r["peak_bytes"] / 2**20,
                         f"{r['initial_error']:.2g} -> {r['max_miss']:.1e}",
                         "yes" if met else "NO"])
    print_table(
        f"Big skeletons ({args.device}, float64, batch {args.batch}; peak = the case's process, torch included)",
        ["case", "J", "P", "transform entries", "V", "IK active / constraints / iterations", "load s", "pose s",
         "IK s", "total s", "peak MiB", "IK max miss (start -> end)", f"goal <{GOAL_BYTES / 1e9:.1f} GB (5k) and <20 s"],
        rows)


if __name__ == "__main__":
    main()
