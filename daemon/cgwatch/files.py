"""Reading files that a user names, which may be anything: a token file, a CA file,
a kubelet pod list. Only a regular file of bounded size is read, never a device, a
FIFO or a file that would fill memory; a refusal is one line naming the path and
never the content."""

from __future__ import annotations

import os
import stat

#: the most a secret file (KEY_file, auth.token_file, kubernetes token_file/ca_file) may hold
MAX_SECRET_FILE = 64 * 1024


def _file_kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _limit(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


def check_small_file(path: str | os.PathLike[str], limit: int = MAX_SECRET_FILE) -> None:
    """ValueError (one line, naming ``path``, never its content) unless ``path`` is a regular file
    of at most ``limit`` bytes; OSError if it cannot be looked at."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{os.fspath(path)} is {_file_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise ValueError(f"{os.fspath(path)} is too large ({st.st_size} bytes, limit {_limit(limit)})")


def read_small_bytes(path: str | os.PathLike[str], limit: int = MAX_SECRET_FILE) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Nothing else is read: not /dev/zero, a FIFO (opening one would wait for a writer) or a
    file that is too large, each refused with a one-line ValueError that names the path and
    never the content; OSError (with ``strerror``) if it cannot be opened.

    >>> read_small_bytes("/dev/zero")
    Traceback (most recent call last):
    ...
    ValueError: /dev/zero is a character device, not a regular file
    """
    check_small_file(path, limit)         # before opening: a device's open may do something
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)                 # what was opened, should it have changed since
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{os.fspath(path)} is {_file_kind(st.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(f"{os.fspath(path)} is too large (more than {_limit(limit)})")
    return b"".join(chunks)


def read_small_file(path: str | os.PathLike[str], limit: int = MAX_SECRET_FILE) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (a token, a URL), as
    :func:`read_small_bytes` reads it; text that is not UTF-8 is a one-line ValueError.

    >>> read_small_file("/dev/zero")
    Traceback (most recent call last):
    ...
    ValueError: /dev/zero is a character device, not a regular file
    """
    try:
        return read_small_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{os.fspath(path)} is not UTF-8 text") from None
