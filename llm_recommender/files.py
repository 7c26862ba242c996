"""Atomic writes: a reader (or a process killed half-way) sees the old file or folder or the new one, never half."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path, *, prefix: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path`` in one rename.

    The temporary name keeps ``path``'s suffix (``np.savez`` appends ``.npz`` to names without it)
    and starts with ``prefix`` (default ``.tmp-<name>-``), which listings can skip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".tmp-{path.name}-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(target: str | Path, *, replace: bool = True, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it becomes ``target`` in one rename.

    On an exception the temporary folder is removed (after a kill it stays under a ``.tmp-`` name
    no reader accepts). ``replace=False``: where ``target`` exists by then (another process wrote
    it first), that one stays and this one is dropped. ``mode``: the folder's permissions
    (``mkdtemp`` makes it private)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    if mode is not None:
        os.chmod(tmp, mode)
    try:
        yield tmp
        old = None
        if target.exists():
            if not replace:
                return
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if replace or not target.exists():  # not a concurrent writer that won
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
