"""The versioned KB directory: immutable versions/ and an atomically replaced CURRENT pointer."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import KnowledgeBaseCorruptError, KnowledgeBaseNotFoundError

CURRENT_NAME = "CURRENT"
VERSIONS_DIR = "versions"
LOCK_NAME = ".lock"
MANIFEST_NAME = "manifest.json"
_VERSION = re.compile(r"^v(\d{6,})$")
_TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flushes every file below path, then the directories, so a rename publishes complete data."""
    for root, dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def is_kb(path: Path) -> bool:
    """Whether path holds a published knowledge base."""
    return (Path(path) / CURRENT_NAME).is_file()


def holds_kb_files(path: Path) -> bool:
    """Whether path is a knowledge base directory, published or not: CURRENT, or a versions/ directory beside the
    writer's lock or holding versions or staging (a first build that died, one in progress)."""
    path = Path(path)
    if is_kb(path):
        return True
    root = path / VERSIONS_DIR
    try:
        return root.is_dir() and ((path / LOCK_NAME).exists() or any(
            _VERSION.match(p.name) or p.name.startswith(_TMP_PREFIX) for p in root.iterdir()))
    except OSError:
        return False


def current_version(path: Path) -> Path:
    """The version directory CURRENT points at (what a reader loads)."""
    path = Path(path)
    pointer = path / CURRENT_NAME
    if not pointer.is_file():
        if (path / MANIFEST_NAME).is_file():
            raise KnowledgeBaseCorruptError(
                f"{path} is a knowledge base in an older format; rebuild it with `kgverify kb build`")
        if not path.exists():
            raise KnowledgeBaseNotFoundError(f"{path} is not a knowledge base: it does not exist")
        raise KnowledgeBaseNotFoundError(f"{path} is not a knowledge base: {CURRENT_NAME} is missing")
    name = pointer.read_text(encoding="utf-8").strip()
    if not _VERSION.match(name):
        raise KnowledgeBaseCorruptError(f"{pointer} does not name a version: {name!r}")
    version = path / VERSIONS_DIR / name
    if not version.is_dir():
        raise KnowledgeBaseCorruptError(f"{pointer} points at {name}, which is missing")
    return version


def versions(path: Path) -> list[Path]:
    """Published version directories, oldest first."""
    root = Path(path) / VERSIONS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


@contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """One writer per KB directory at a time (the kernel drops the lock if the writer dies)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_NAME, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_if_unborn(path: Path, created: bool = True) -> None:
    """Removes what a failed first build left behind: no CURRENT, nothing but the lock file and an empty
    versions/ (a later command would otherwise call it a damaged KB instead of a missing one). The directory
    itself goes only if the build created it; one that existed before keeps nothing of the build."""
    path = Path(path)
    if not path.is_dir() or is_kb(path):
        return
    versions = path / VERSIONS_DIR
    if {p.name for p in path.iterdir()} <= {LOCK_NAME, VERSIONS_DIR} and \
            (not versions.exists() or (versions.is_dir() and not any(versions.iterdir()))):
        if created:
            shutil.rmtree(path, ignore_errors=True)
            return
        if versions.is_dir():
            versions.rmdir()
        (path / LOCK_NAME).unlink(missing_ok=True)


def check_output_dir(path: Path) -> None:
    """Refuses to write a KB into a directory that holds something else."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"output {path} exists and is not a directory")
    if is_kb(path):
        return
    # CURRENT.tmp-*: a first build killed while publishing (the writer's own leftover, removed under the lock)
    stray = [p.name for p in path.iterdir()
             if p.name not in (LOCK_NAME, VERSIONS_DIR) and not p.name.startswith(f"{CURRENT_NAME}.tmp-")]
    if stray:
        raise ValueError(f"output {path} is not empty and holds no knowledge base ({', '.join(sorted(stray)[:5])}); "
                         "choose an empty or new directory")


def new_staging_dir(path: Path) -> Path:
    """A fresh directory to build the next version in; invisible to readers until published."""
    root = Path(path) / VERSIONS_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{_TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def remove_stale_staging(path: Path) -> None:
    """Removes staging dirs of builds that died (called under the writer lock)."""
    root = Path(path) / VERSIONS_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
    for p in Path(path).glob(f"{CURRENT_NAME}.tmp-*"):  # a CURRENT replacement that died before its rename
        p.unlink(missing_ok=True)
    current = _VERSION.match(current_name(path) or "")
    if current:  # versions newer than CURRENT were renamed into place by a writer killed before its switch
        for p in versions(path):
            if int(_VERSION.match(p.name).group(1)) > int(current.group(1)):
                shutil.rmtree(p, ignore_errors=True)


def next_version_name(path: Path) -> str:
    """The name the next published version gets (stable while the writer lock is held)."""
    existing = versions(path)
    number = int(_VERSION.match(existing[-1].name).group(1)) + 1 if existing else 1
    return f"v{number:06d}"


def publish(path: Path, staging: Path, keep: int = 2) -> Path:
    """Makes staging the current version with one atomic rename of CURRENT; keeps `keep` versions."""
    path = Path(path)
    version = path / VERSIONS_DIR / next_version_name(path)
    fsync_tree(staging)
    os.rename(staging, version)
    tmp = path / f"{CURRENT_NAME}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        fsync_dir(version.parent)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(version.name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path / CURRENT_NAME)
    except BaseException:
        # interrupted (or failed) before the switch: the version was never published, so nothing of it stays
        # (it would have been the newest version on disk without ever being current)
        tmp.unlink(missing_ok=True)
        if current_name(path) != version.name:
            shutil.rmtree(version, ignore_errors=True)
        raise
    fsync_dir(path)
    prune(path, keep)
    return version


def current_name(path: Path) -> str | None:
    """What CURRENT names right now ("v000003"), or None when it cannot be read or is empty (no validation)."""
    try:
        return (Path(path) / CURRENT_NAME).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def prune(path: Path, keep: int) -> None:
    """Deletes all but the newest `keep` versions (never the current one).

    Servers that loaded an older version keep serving it: open and mapped files outlive unlinking.
    """
    current = current_version(path)
    for old in versions(path)[:-max(keep, 1)]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
