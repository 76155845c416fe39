"""Atomic file output: a temporary file beside the target, renamed over it once complete."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def write_atomically(path: str, write: Callable[[str], None]) -> str:
    """Calls ``write(tmp)`` on a fresh temporary path in ``path``'s directory, then renames it to
    ``path`` with the permissions a plain ``open`` would give; a failed write leaves ``path`` as
    it was. Returns ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bnaudit-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
