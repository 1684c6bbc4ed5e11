"""Regenerate the committed gRPC/protobuf stubs beside the .proto files."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
PACKAGE_DIR = Path("kgverify") / "v1"


def _include_dirs() -> list[str]:
    import grpc_tools
    import google.rpc  # googleapis-common-protos ships google/rpc/*.proto

    tools_include = Path(grpc_tools.__file__).parent / "_proto"
    googleapis_root = Path(next(iter(google.rpc.__path__))).parent.parent
    return [str(PROTO_ROOT), str(tools_include), str(googleapis_root)]


def generate(out_root: Path) -> list[Path]:
    """Runs protoc for every .proto of kgverify.v1; returns the files written."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / PACKAGE_DIR).glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs differ")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(Path(tmp))
        stale = []
        for path in written:
            target = PROTO_ROOT / path.relative_to(tmp)
            if not target.exists() or target.read_bytes() != path.read_bytes():
                stale.append(str(target.relative_to(PROTO_ROOT.parent)))
                if not args.check:
                    shutil.copyfile(path, target)
    if args.check and stale:
        print("stale generated stubs (run `make proto`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    print("\n".join(stale) if stale else "stubs up to date")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
