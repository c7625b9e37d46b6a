"""A small seccomp filter for sandboxed commands: no setuid/setgid bits, no extended attributes, no io_uring.

Files a command creates in the workspace land on disk owned by the workspace's owner (as root, through the
idmapped mount, that is root). A command could otherwise leave a setuid-root binary, or one with file capabilities
(the `security.capability` extended attribute), for another local user to run. The filter refuses, with EPERM,
chmod-family calls and file-creating calls whose mode has S_ISUID or S_ISGID, and answers every *setxattr call
with EOPNOTSUPP (as a file system without extended attributes would, so `cp -p` and `mv` carry on). openat2
(its mode sits in a struct the filter cannot read) and io_uring (whose operations bypass seccomp) answer ENOSYS,
so programs fall back to the plain calls. System calls of another ABI (x32, i386 on x86_64) answer ENOSYS.

The program is classic BPF built here, so there is no dependency on libseccomp; bubblewrap loads it
(`--seccomp FD`), or `install()` does for the layers without bubblewrap.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6] (little-endian here).
_NR, _ARCH = 0, 4


def _arg_low(i: int) -> int:
    return 16 + 8 * i


_LD_W_ABS, _JEQ_K, _JSET_K, _JGE_K, _RET_K = 0x20, 0x15, 0x45, 0x35, 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_SETID_BITS = 0o6000

# name: (audit arch, {syscall: index of its mode argument}, setxattr calls, ENOSYS calls, lowest foreign nr)
_ARCHES = {
    "x86_64": (0xC000003E,
               {90: 1, 91: 1, 268: 2, 452: 2, 2: 2, 257: 3, 85: 1, 133: 1, 259: 2},  # chmod fchmod fchmodat
               # fchmodat2 open openat creat mknod mknodat
               (188, 189, 190, 463),  # setxattr lsetxattr fsetxattr setxattrat
               (437, 425, 426, 427),  # openat2 io_uring_setup io_uring_enter io_uring_register
               0x40000000),  # x32 system calls
    "aarch64": (0xC00000B7,
                {52: 1, 53: 2, 452: 2, 56: 3, 33: 2},  # fchmod fchmodat fchmodat2 openat mknodat
                (5, 6, 7, 463),
                (437, 425, 426, 427),
                None),
}


def supported() -> bool:
    return platform.machine() in _ARCHES


def program() -> bytes:
    """The filter as an array of struct sock_filter, ready for bubblewrap's --seccomp or for install()."""
    arch, modes, xattrs, enosys, foreign = _ARCHES[platform.machine()]
    insns: list[tuple[int, int, int, int]] = []

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        insns.append((code, jt, jf, k))

    op(_LD_W_ABS, _ARCH)
    op(_JEQ_K, arch, jt=1)  # our ABI: go on; another one: ENOSYS
    op(_RET_K, _ERRNO | errno.ENOSYS)
    op(_LD_W_ABS, _NR)
    if foreign is not None:
        op(_JGE_K, foreign, jf=1)
        op(_RET_K, _ERRNO | errno.ENOSYS)
    for nr, arg in modes.items():
        op(_JEQ_K, nr, jf=4)  # not this call: on to the next block, A still holds nr
        op(_LD_W_ABS, _arg_low(arg))
        op(_JSET_K, _SETID_BITS, jf=1)
        op(_RET_K, _ERRNO | errno.EPERM)
        op(_RET_K, _ALLOW)
    for nr in xattrs:  # "not supported" (not EPERM): cp -p, cp -a and mv then go on without them
        op(_JEQ_K, nr, jf=1)
        op(_RET_K, _ERRNO | errno.EOPNOTSUPP)
    for nr in enosys:
        op(_JEQ_K, nr, jf=1)
        op(_RET_K, _ERRNO | errno.ENOSYS)
    op(_RET_K, _ALLOW)
    return b"".join(struct.pack("<HBBI", *i) for i in insns)


def memfd() -> int:
    """A file descriptor holding the program, positioned at its start (for `bwrap --seccomp FD`)."""
    fd = os.memfd_create("assistant-seccomp", 0)
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def install() -> None:
    """Load the filter into the calling process (after fork, before exec): no_new_privs, then SECCOMP_SET_MODE_FILTER."""
    code = program()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    prog = SockFprog(len(code) // 8, code)
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
