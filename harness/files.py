"""Writing files so that no reader ever sees half of one: write beside, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path`` atomically (a kill
    mid-write leaves the previous file whole), on failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(staging)
        os.replace(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staging)


@contextlib.contextmanager
def published(path: Path) -> Iterator[Path]:
    """An empty folder beside ``path`` to fill; on success it is renamed into place, unless another
    process published ``path`` first (then its copy is kept and this one removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=".staging-"))
    try:
        yield staging
        os.rename(staging, path)  # atomic
    except OSError:
        if not path.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
