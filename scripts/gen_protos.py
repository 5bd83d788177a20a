"""Generate the Python code for protos/rectune/v1 into rectune/v1 (committed).

Usage:
    python scripts/gen_protos.py           # regenerate in place
    python scripts/gen_protos.py --check   # fail if the committed code is stale

The generated modules import each other as ``rectune.v1.<name>_pb2``, which matches
the directory layout, so no sys.path or sed hacks are needed.
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
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("rectune") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}: run `make install`")
    return str(path)


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stderr}")
    for init in (out_dir / "rectune" / "__init__.py", out_dir / PACKAGE_DIR / "__init__.py"):
        init.write_text('"""Generated protobuf and gRPC code for rectune.v1 (see scripts/gen_protos.py)."""\n')


def generated_files(package_dir: Path) -> set[str]:
    if not package_dir.exists():
        return set()
    return {p.name for p in package_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES) or p.name == "__init__.py"}


def stale_files(committed_root: Path, fresh_root: Path) -> list[str]:
    """Names that differ between the committed and freshly generated packages."""
    committed = generated_files(committed_root / PACKAGE_DIR)
    fresh = generated_files(fresh_root / PACKAGE_DIR)
    differing = committed.symmetric_difference(fresh)
    for name in committed & fresh:
        if not filecmp.cmp(committed_root / PACKAGE_DIR / name, fresh_root / PACKAGE_DIR / name, shallow=False):
            differing.add(name)
    return sorted(differing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        if args.check:
            stale = stale_files(ROOT, fresh_root)
            if stale:
                print("generated code is stale; run `make protos`: " + ", ".join(stale), file=sys.stderr)
                return 1
            print("generated code is fresh")
            return 0
        target = ROOT / PACKAGE_DIR
        for name in generated_files(target):
            (target / name).unlink()
        target.mkdir(parents=True, exist_ok=True)
        for name in generated_files(fresh_root / PACKAGE_DIR):
            shutil.copy2(fresh_root / PACKAGE_DIR / name, target / name)
        shutil.copy2(fresh_root / "rectune" / "__init__.py", ROOT / "rectune" / "__init__.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
