"""When the assistant runs as root: a private mount namespace in which a dedicated unprivileged uid can work.

Root's commands must not run as root (process limits do not bind root; a fork bomb starves the machine), so
they run as `sandbox_uid`. That uid must write the workspace without the workspace being opened to anyone else
on disk: a helper, run once per workspace, makes a private mount namespace in which the workspace is an
*idmapped* mount (its owner's files appear owned by the sandbox uid; what the sandbox creates is owned by the
workspace's owner on disk), and in which folders the sandbox uid could not traverse on the way there (such as
/root, mode 0700) are replaced by empty tmpfs folders holding only the paths it needs. Nothing changes on disk
and nothing is visible to other processes. Each command enters the namespace with `nsenter` before dropping to
the sandbox uid; the helper waits meanwhile, holding the namespace.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError

# Run as root in a fresh interpreter (single-threaded, so unshare and fork are safe). Syscall numbers 428
# (open_tree), 429 (move_mount) and 442 (mount_setattr) are the same on every architecture.
HELPER = r'''
import ctypes, json, os, sys
a = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def check(r, what):
    if r < 0:
        e = ctypes.get_errno()
        sys.stderr.write("%s: %s\n" % (what, os.strerror(e))); sys.exit(3)
    return r
class Attr(ctypes.Structure):
    _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64), ("userns", ctypes.c_uint64)]
CLONE_NEWNS, CLONE_NEWUSER, MS_REC, MS_PRIVATE = 0x20000, 0x10000000, 0x4000, 0x40000
OPEN_TREE_CLONE, AT_RECURSIVE, AT_EMPTY_PATH, MOUNT_ATTR_IDMAP, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x8000, 0x1000, 0x100000, 4
# 1. a user namespace holding the mapping: the workspace owner's ids <-> the sandbox's ids
r, w = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r); os.close(w2)
    ok = libc.unshare(CLONE_NEWUSER) == 0
    os.write(w, b"1" if ok else b"0"); os.read(r2, 1); os._exit(0)
os.close(w); os.close(r2)
if os.read(r, 1) != b"1":
    sys.stderr.write("cannot create a user namespace\n"); sys.exit(3)
with open("/proc/%d/uid_map" % pid, "w") as fh: fh.write("%d %d 1\n" % (a["owner_uid"], a["uid"]))
with open("/proc/%d/gid_map" % pid, "w") as fh: fh.write("%d %d 1\n" % (a["owner_gid"], a["gid"]))
userns = os.open("/proc/%d/ns/user" % pid, os.O_RDONLY)
os.write(w2, b"x"); os.waitpid(pid, 0)
# 2. detached copies of what must be reachable: the workspace idmapped, the rest as it is
trees = []
for path, idmap in a["targets"]:
    fd = check(libc.syscall(428, -100, path.encode(), OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC), "open_tree " + path)
    if idmap:
        attr = Attr(MOUNT_ATTR_IDMAP, 0, 0, userns)
        check(libc.syscall(442, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)),
              "idmapped mount of " + path + " (does its file system support idmapped mounts?)")
    trees.append((path, fd))
# 3. the private namespace: empty tmpfs over folders the sandbox uid cannot traverse, then the trees
check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
for cover in a["covers"]:
    check(libc.mount(b"none", cover.encode(), b"tmpfs", 0, b"mode=0755,size=64k"), "tmpfs on " + cover)
for path, fd in trees:
    os.makedirs(path, exist_ok=True)
    check(libc.syscall(429, fd, b"", -100, path.encode(), MOVE_MOUNT_F_EMPTY_PATH), "move_mount " + path)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
'''


def searchable(path: Path, uid: int, gid: int) -> bool:
    """Whether uid (with only gid as its group) may traverse this folder."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def first_blocked(path: Path, uid: int, gid: int) -> Path | None:
    """The highest folder on the way to path (path excluded) that uid cannot traverse, or None."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not searchable(parent, uid, gid):
            return parent
    return None


@dataclass
class RootMounts:
    """The helper's mount namespace, entered through the helper (kept waiting): `nsenter --mount=<ns_path>`.
    A path rather than an inherited descriptor, so that no command inherits a handle on the namespace."""

    proc: subprocess.Popen
    covers: list[Path]

    @property
    def ns_path(self) -> str:
        return f"/proc/{self.proc.pid}/ns/mnt"  # our unreaped child: its pid cannot be reused meanwhile

    @classmethod
    def create(cls, workspace: Path, uid: int, gid: int, readable: list[Path]) -> "RootMounts":
        st = os.stat(workspace)
        targets: list[tuple[str, bool]] = [(str(workspace), True)]
        for p in readable:
            if p != workspace and workspace not in p.parents and first_blocked(p, uid, gid):
                targets.append((str(p), False))
        covers: list[Path] = []
        for path, _ in targets:
            blocked = first_blocked(Path(path), uid, gid)
            if blocked and not any(c == blocked or c in blocked.parents for c in covers):
                covers = [c for c in covers if blocked not in c.parents] + [blocked]
        args = {"owner_uid": st.st_uid, "owner_gid": st.st_gid, "uid": uid, "gid": gid,
                "targets": targets, "covers": [str(c) for c in covers]}
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", HELPER, json.dumps(args)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = proc.stdout.readline()
        proc.stdout.close()
        if line != b"ready\n":
            proc.kill()
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            proc.stderr.close()
            proc.stdin.close()
            proc.wait()
            raise AssistantError(f"cannot prepare the sandbox's view of {workspace}: {err or 'helper failed'}")
        proc.stderr.close()
        return cls(proc, covers)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the helper's signal to go; the namespace goes with it
            self.proc.wait()
