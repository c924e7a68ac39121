#!/usr/bin/env python3
"""Fuzzes the glTF loaders with mutated copies of the test assets.

Each case is a mutated copy of an asset (its JSON edited structurally, its
bytes flipped or truncated, or a URI pointed somewhere it must not go) in a
fresh folder beside a secret file, a FIFO and symbolic links that lead out.
A worker process loads it with ``load_gltf``, ``gltf_animations``,
``load_gltf_motion``, ``load_gltf_blend_weights`` and ``load_gltf_model_motion`` under a memory limit and a time limit per case. A case
fails the run when the worker crashes, hangs, runs out of memory, opens a
file outside the case's folder (seen by an audit hook), or raises anything
but ``GltfError``. Failing cases are kept under --out for a test to replay.

Python's own random mutation (no atheris): reproducible from --seed.

    python tools/fuzz_gltf.py --seconds 60 [--seed 0] [--out fuzz_failures]
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "test", "assets", "gltf")
CASE_TIMEOUT = 20.0  # seconds per case: a hang
MEMORY_LIMIT = 3 << 30  # bytes of address space beyond what the worker has after its imports

INTERESTING_INTS = [-1, 0, 1, 2, 3, 4, 7, 255, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 4, 2 ** 53, 10 ** 20, -2 ** 63]
INTERESTING_VALUES = INTERESTING_INTS + [0.5, -0.0, 1e308, "x", "", None, [], {}, True, False, [0, 1, 2],
                                         {"a": 1}, "../secret.bin"]
ESCAPES = ["../secret.bin", "%2e%2e/secret.bin", "..%2Fsecret.bin", "%2E%2E%2Fsecret.bin", "sub/../../secret.bin",
           "/etc/passwd", "file:///etc/passwd", "http://example.invalid/x.bin", "link_out.bin", "fifo.bin",
           "/dev/zero", "zero_link.bin", "folder", "C:/x.bin", "\\\\server\\share\\x.bin", "a%00b.bin",
           "data:application/octet-stream,AAAA", "data:application/octet-stream;base64,@@@@",
           "data:application/octet-stream;base64,AAAA", "%ff%fe.bin", "missing.bin"]


# ------------------------------------------------------------------ worker
def worker() -> None:
    """Loads the case paths read from stdin, one per line; answers one JSON line each."""
    import resource
    import traceback
    import warnings

    warnings.simplefilter("ignore")  # warnings about what a file leaves out are expected, not findings

    import torch  # noqa: F401  (imported before the memory limit)

    import momentum_ops
    from momentum_ops.io import GltfError

    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    used = pages * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + MEMORY_LIMIT, used + MEMORY_LIMIT))
    state = {"folder": None, "escapes": []}

    def audit(event, args):
        if event == "open" and state["folder"] is not None and args and isinstance(args[0], (str, bytes)):
            path = os.fsdecode(args[0])
            real = os.path.realpath(path)
            if os.path.commonpath([state["folder"], real]) != state["folder"] and not real.endswith(".py") \
                    and "__pycache__" not in real and not real.startswith(sys.prefix):
                state["escapes"].append(path)

    sys.addaudithook(audit)
    for line in sys.stdin:
        path = line.strip()
        state["folder"], state["escapes"] = os.path.realpath(os.path.dirname(path)), []
        outcome = {"ok": True}
        try:
            try:
                character = momentum_ops.io.load_gltf(path)  # float32: what overflows it must be caught too
                names = momentum_ops.io.gltf_animations(path)
                momentum_ops.io.load_gltf_motion(path, character, animation=None)
                momentum_ops.io.load_gltf_blend_weights(path, character, animation=None)
                for index in range(min(len(names), 2)):
                    momentum_ops.io.load_gltf_motion(path, character, animation=index)
                    momentum_ops.io.load_gltf_blend_weights(path, character, animation=index)
                if b"FB_momentum" in open(path, "rb").read():
                    momentum_ops.io.load_gltf_model_motion(path, character)
            except GltfError:
                pass
        except MemoryError:
            outcome = {"ok": False, "why": "out of memory", "trace": traceback.format_exc()}
        except BaseException as error:  # noqa: BLE001 - everything else is a finding
            outcome = {"ok": False, "why": f"{type(error).__name__}: {error}"[:500], "trace": traceback.format_exc()}
        if state["escapes"]:
            outcome = {"ok": False, "why": f"opened files outside the folder: {state['escapes'][:3]}"}
        state["folder"] = None
        sys.stdout.write(json.dumps(outcome) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------------ mutation
def split_glb(data: bytes):
    """(json dict, bin bytes or None) of a GLB."""
    json_length = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + json_length])
    rest = data[20 + json_length:]
    binary = rest[8:8 + struct.unpack_from("<I", rest, 0)[0]] if len(rest) >= 8 else None
    return doc, binary


def join_glb(doc: dict, binary) -> bytes:
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if binary is not None:
        binary = binary + b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def paths_of(value, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths_of(item, prefix + (i,))


def set_at(doc, path, value):
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def objects(doc: dict, kind: str) -> list:
    """The objects of doc[kind], when it is still an array (mutations may have changed it)."""
    value = doc.get(kind)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def mutate_json(doc: dict, rng: random.Random) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice([1, 1, 2, 3])):
        entries = [(p, v) for p, v in paths_of(doc) if p]
        path, value = rng.choice(entries)
        action = rng.random()
        if action < 0.45:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                new = rng.choice(INTERESTING_VALUES)
            else:
                new = rng.choice(INTERESTING_INTS + [value + 1, value - 1, value * 2, -value])
            set_at(doc, path, new)
        elif action < 0.6:
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        elif action < 0.7 and isinstance(value, list) and value:
            value.append(copy.deepcopy(rng.choice(value)))
        elif action < 0.8 and objects(doc, "nodes"):
            # A child link that may make a cycle or a second parent.
            nodes = objects(doc, "nodes")
            a, b = rng.randrange(len(nodes)), rng.randrange(len(nodes))
            children = nodes[a].setdefault("children", [])
            if isinstance(children, list):
                children.append(b)
        elif action < 0.9 and objects(doc, "buffers"):
            rng.choice(objects(doc, "buffers"))["uri"] = rng.choice(ESCAPES)
        else:
            kind = rng.choice(["accessors", "bufferViews", "animations", "skins", "meshes"])
            if objects(doc, kind):
                item = rng.choice(objects(doc, kind))
                if isinstance(item, dict) and item:
                    key = rng.choice(list(item))
                    item[key] = rng.choice(INTERESTING_VALUES)
    return doc


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    action = rng.random()
    if action < 0.3:
        return bytes(data[: rng.randrange(len(data))])
    if action < 0.6:
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    position = rng.choice([4, 8, 12, 16] + [rng.randrange(0, max(1, len(data) - 4))])
    struct.pack_into("<I", data, min(position, len(data) - 4), rng.choice(INTERESTING_INTS) & 0xFFFFFFFF)
    return bytes(data)


def make_case(source: str, folder: str, rng: random.Random) -> str:
    """Writes a mutated copy of `source` (and its external buffers) into folder/model/."""
    model = os.path.join(folder, "model")
    os.makedirs(model)
    with open(os.path.join(folder, "secret.bin"), "wb") as f:
        f.write(b"\x00" * 4096)
    os.makedirs(os.path.join(model, "folder"))
    os.symlink(os.path.join(folder, "secret.bin"), os.path.join(model, "link_out.bin"))
    os.symlink("/dev/zero", os.path.join(model, "zero_link.bin"))
    os.mkfifo(os.path.join(model, "fifo.bin"))
    source_folder = os.path.dirname(source)
    for name in os.listdir(source_folder):
        if name.endswith(".bin"):
            shutil.copy(os.path.join(source_folder, name), os.path.join(model, name))
    data = open(source, "rb").read()
    glb = data[:4] == b"glTF"
    target = os.path.join(model, "case.glb" if glb else "case.gltf")
    if rng.random() < 0.65:
        doc, binary = split_glb(data) if glb else (json.loads(data), None)
        doc = mutate_json(doc, rng)
        data = join_glb(doc, binary) if glb else json.dumps(doc).encode()
    else:
        data = mutate_bytes(data, rng)
    with open(target, "wb") as f:
        f.write(data)
    return target


# ------------------------------------------------------------------ driver
class Worker:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT)

    def run(self, path: str):
        """(outcome dict, seconds); a crash or hang ends the worker."""
        start = time.monotonic()
        try:
            self.process.stdin.write(path + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return {"ok": False, "why": f"worker died (exit {self.process.poll()})"}, 0.0
        ready, _, _ = select.select([self.process.stdout], [], [], CASE_TIMEOUT + 30)
        if not ready:
            self.process.kill()
            return {"ok": False, "why": f"hang: no answer in {CASE_TIMEOUT + 30:.0f} s"}, time.monotonic() - start
        line = self.process.stdout.readline()
        seconds = time.monotonic() - start
        if not line:
            code = self.process.wait()
            return {"ok": False, "why": f"crash: the worker died with exit code {code}"}, seconds
        outcome = json.loads(line)
        if outcome.get("ok") and seconds > CASE_TIMEOUT:
            outcome = {"ok": False, "why": f"slow: {seconds:.1f} s for one file"}
        return outcome, seconds

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self):
        if self.alive():
            self.process.stdin.close()
            self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", default="fuzz_failures")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return 0
    sources = sorted(f for folder in (ASSETS, ASSETS + "_morph")
                     for f in glob.glob(os.path.join(folder, "**", "*.gl[bt]*"), recursive=True)
                     if os.path.getsize(f) < 2_000_000)
    rng = random.Random(args.seed)
    print(f"fuzz_gltf: seed {args.seed}, {len(sources)} seed files, {args.seconds:.0f} s", flush=True)
    work = Worker()
    cases = failures = 0
    slowest = 0.0
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as scratch:
        while time.monotonic() < deadline:
            source = rng.choice(sources)
            folder = os.path.join(scratch, f"case{cases}")
            path = make_case(source, folder, rng)
            outcome, seconds = work.run(path)
            slowest = max(slowest, seconds)
            cases += 1
            if not outcome["ok"]:
                failures += 1
                keep = os.path.join(args.out, f"failure{failures}")
                shutil.copytree(os.path.join(folder, "model"), keep, symlinks=True,
                                ignore=lambda d, names: [n for n in names if n == "fifo.bin"])
                with open(os.path.join(keep, "why.txt"), "w") as f:
                    f.write(f"source: {os.path.relpath(source, ROOT)}\n{outcome['why']}\n{outcome.get('trace', '')}")
                print(f"FAIL case {cases} from {os.path.relpath(source, ASSETS)}: {outcome['why']} -> {keep}",
                      flush=True)
            if not work.alive():
                work = Worker()
            shutil.rmtree(folder, ignore_errors=True)
    work.close()
    print(f"fuzz_gltf: {cases} cases, {failures} failures, slowest case {slowest:.2f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
