"""Who the cache trusts: ``CacheMode`` and the checks of the cache directory's owner and permissions."""

from __future__ import annotations

import os
import stat
from enum import Enum

__all__ = ["CacheMode"]

_GROUP_OR_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


class CacheMode(Enum):
    """Whose entries a :class:`PtxCache` loads (docs/cache.md, "Trust model")."""

    #: The directory and every entry are the current user's and writable by no one else;
    #: entries are written 0600.
    PRIVATE = "private"
    #: The directory belongs to a group the user is in and is not world-writable; entries
    #: are written 0640, and entries of other users are loaded when they are group-owned by
    #: the directory's group and writable by their owner only.
    SHARED = "shared"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):  # fmt: skip
        if test(mode):
            return name
    return f"a file of type {stat.S_IFMT(mode):o}"


def _dir_problem(st: os.stat_result, mode: CacheMode, euid: int | None) -> tuple[str, str] | None:
    """``(why, what to do)`` if a directory with status ``st`` must not be used in ``mode``."""
    if not stat.S_ISDIR(st.st_mode):
        return f"it is not a directory but {_kind(st.st_mode)}", "remove it or point RINGKERNEL_CACHE_DIR elsewhere"
    if euid is None:  # no POSIX owners and modes on this platform: nothing to check
        return None
    perms = stat.S_IMODE(st.st_mode)
    if mode is CacheMode.PRIVATE:
        if st.st_uid != euid:
            return (f"it is owned by uid {st.st_uid}, not by you (uid {euid})",
                    f"have it owned by you (chown {euid} <dir>), or set RINGKERNEL_CACHE_SHARED=1 if it is a "
                    "group-shared cache directory")  # fmt: skip
        if perms & _GROUP_OR_OTHER_WRITE:
            return (f"it is writable by {'others' if perms & stat.S_IWOTH else 'its group'} (mode {perms:04o})",
                    "make it writable by you only (chmod go-w <dir>, or chmod 700 <dir>), or set "
                    "RINGKERNEL_CACHE_SHARED=1 if it is meant to be shared with its group")  # fmt: skip
        return None
    if perms & stat.S_IWOTH:
        return (f"it is writable by everyone (mode {perms:04o}), so anyone could plant an entry",
                "remove others' write permission (chmod o-w <dir>; chmod 2770 <dir> is the recommended shared mode)")  # fmt: skip
    if st.st_uid != euid and st.st_gid != os.getegid() and st.st_gid not in os.getgroups():
        return (f"its group (gid {st.st_gid}) is not one of yours",
                "have it group-owned by a group you are in (chgrp <group> <dir>; chmod 2770 <dir>)")  # fmt: skip
    return None
