"""Reading files named by untrusted documents.

A model file names other files (glTF buffers and images, later URDF meshes).
Those names are data from whoever made the file, so they are resolved here
and nowhere else: a name must stay inside the folder of the file that names
it after percent-decoding and after symbolic links are resolved, and it must
name a regular file (not a device, a FIFO or a folder). Errors are raised as
the caller's error type, naming the file and the object.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import urllib.parse
from typing import Callable, Optional

# "scheme:" at the start of a URI (http:, file:, a Windows drive C:, ...).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def read_regular_file(path: str, fail: Callable[[str], Exception], what: str, limit: Optional[int] = None,
                      follow_links: bool = False) -> bytes:
    """The bytes of a regular file (at most `limit` of them, when given).

    Opened without blocking and (unless `follow_links`: the user's own path)
    without following a final symbolic link, and checked to be a regular file
    on the open descriptor, so a FIFO or a device swapped in after a check
    cannot hang or flood the read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise fail(f"{what}: cannot open {path!r}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail(f"{what}: {path!r} is not a regular file")
        size = info.st_size if limit is None else min(info.st_size, limit)
        chunks, remaining = [], size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def resolve_relative_uri(uri: str, folder: str, fail: Callable[[str], Exception], what: str) -> str:
    """The real path of a relative URI inside `folder` (itself a real path).

    Refused: a scheme (http:, file:, C:), an absolute path, NUL bytes, bad
    percent-encoding, and any name that after decoding and resolving symbolic
    links lies outside `folder`."""
    if not isinstance(uri, str) or not uri:
        raise fail(f"{what}: the URI must be a non-empty string, got {uri!r}")
    if _SCHEME.match(uri):
        raise fail(f"{what}: URI {uri!r} has a scheme; only relative paths inside the file's folder "
                   "(or base64 data URIs) are read")
    try:
        name = urllib.parse.unquote(uri, errors="strict")
    except UnicodeDecodeError:
        raise fail(f"{what}: URI {uri!r} has percent-encoding that is not UTF-8") from None
    if "\x00" in name:
        raise fail(f"{what}: URI {uri!r} contains a NUL character")
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise fail(f"{what}: URI {uri!r} is an absolute path; only paths inside the file's folder are read")
    resolved = os.path.realpath(os.path.join(folder, name))
    if resolved == folder or os.path.commonpath([folder, resolved]) != folder:
        raise fail(f"{what}: URI {uri!r} points outside the file's folder {folder!r}; refused")
    return resolved


def decode_data_uri(uri: str, fail: Callable[[str], Exception], what: str) -> bytes:
    """The bytes of a ``data:[<media type>];base64,<data>`` URI (the only form glTF allows)."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.endswith(";base64"):
        raise fail(f"{what}: a data URI must be base64 ('data:<type>;base64,<data>'), got {uri[:60]!r}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise fail(f"{what}: the data URI is not valid base64 ({error})") from None
