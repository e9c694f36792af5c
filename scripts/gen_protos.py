"""Regenerate gen/ from protos/: Python messages, gRPC stubs, typed .pyi stubs and
the descriptor set Envoy's gRPC-JSON transcoder reads.

    python scripts/gen_protos.py          # rewrite gen/
    python scripts/gen_protos.py --check  # exit 1 when gen/ is stale

Needs the pinned dev tools (grpcio-tools, mypy-protobuf): `pip install -e '.[dev]'`.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
GEN = ROOT / "gen"
DESCRIPTOR = Path("dtq/v1/descriptor.binpb")
# Envoy needs these in the descriptor set to render rich error details.
EXTRA_DESCRIPTOR_INPUTS = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def protoc(*args: str) -> None:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{well_known}",
        *args,
    ]
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"protoc failed:\n{done.stderr}")


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    protoc(
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    )
    protoc(
        f"--descriptor_set_out={out / DESCRIPTOR}",
        "--include_imports",
        *sources,
        *EXTRA_DESCRIPTOR_INPUTS,
    )
    # gen/dtq is a namespace-less overlay of the hand-written dtq package (see
    # pyproject: package-dir maps dtq.v1 to gen/dtq/v1), so only v1 is a package.
    (out / "dtq" / "v1" / "__init__.py").write_text(
        '"""Generated from protos/dtq/v1. Do not edit."""\n'
    )


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b)
    found = [f"only in {cmp.left}: {n}" for n in cmp.left_only]
    found += [f"only in {cmp.right}: {n}" for n in cmp.right_only]
    found += [f"differs: {Path(cmp.left, n)}" for n in cmp.diff_files]
    for name in cmp.common_dirs:
        found += differences(a / name, b / name)
    return [f for f in found if "__pycache__" not in f]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when gen/ is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        (fresh / "dtq" / "v1").mkdir(parents=True)
        generate(fresh)
        if args.check:
            stale = differences(GEN, fresh) if GEN.exists() else ["gen/ is missing"]
            for line in stale:
                print(line, file=sys.stderr)
            if stale:
                print("gen/ is stale: run `python scripts/gen_protos.py`", file=sys.stderr)
                return 1
            print("gen/ is up to date")
            return 0
        shutil.rmtree(GEN, ignore_errors=True)
        shutil.copytree(fresh, GEN)
    print(f"regenerated {GEN.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
