"""Reading a file the operator names (routes.yaml, the state snapshot) so that whatever
sits at the path cannot hang or flood the process.

A plain read of a FIFO waits for a writer for ever (a reload then held its lock, and
the process could not stop); a symlink to /dev/zero, or a file that is huge, is read
until memory runs out. The path is opened without blocking, only a regular file is
read, and at most `max_bytes` of it.
"""

from __future__ import annotations

import os
import stat


class UnreadableFile(OSError):
    """Not a regular file, or larger than the limit: said in `strerror`, as an OSError's."""


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them; OSError
    (FileNotFoundError, PermissionError, UnreadableFile, ...) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(0, f"not a regular file ({_kind(mode)})")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise UnreadableFile(0, f"larger than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"
