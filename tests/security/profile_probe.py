"""Runs INSIDE a sandbox (uploaded by test_profile.py): makes the syscalls an attacker would use to leave the
container and prints, as JSON, the errno name each one got ("ok" when it succeeded).

x86_64 syscall numbers; arguments are chosen so that the kernel itself would answer differently from the
seccomp filter where possible (e.g. `mount` on a missing path: ENOENT from the kernel, EPERM from the filter),
so a removed filter shows up as a changed answer, not only as a success.
"""

import ctypes
import errno
import json
import os
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _arg(a):
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    if isinstance(a, ctypes.Array):
        return a
    return ctypes.c_long(a)


def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
    if r >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def in_child(fn):
    """Runs fn in a forked child (a successful unshare must not change the prober) and returns its answer."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, fn().encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 256).decode()
    os.waitpid(pid, 0)
    return out or "died"


def clone_newuser():
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(0x10000000 | 17), ctypes.c_long(0), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def ptrace_pid1():
    got = sc(101, 16, 1, 0, 0)  # PTRACE_ATTACH
    if got == "ok":  # only without the filter: let envd go again
        sc(101, 17, 1, 0, 0)  # PTRACE_DETACH
    return got


def perf_event_open():
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("IIQ", attr, 0, 1, 128, 0)  # PERF_TYPE_SOFTWARE, size, CPU_CLOCK
    struct.pack_into("Q", attr, 40, (1 << 5) | (1 << 6))  # exclude_kernel | exclude_hv: allowed unprivileged
    return sc(298, attr, 0, -1, -1, 0)


def syscalls():
    return {
        "keyctl": sc(250, 0, -3, 1),  # KEYCTL_GET_KEYRING_ID of the session keyring
        "add_key": sc(248, b"user", b"soulbox-probe", b"x", 1, -2),
        "request_key": sc(249, b"user", b"soulbox-probe-none", 0, 0),
        "bpf": sc(321, 5, 0, 8),  # BPF_PROG_LOAD with a NULL attr: EFAULT from the kernel
        "userfaultfd": sc(323, 1 | 0o2000000),  # UFFD_USER_MODE_ONLY: allowed unprivileged
        "perf_event_open": perf_event_open(),
        "init_module": sc(175, 0, 0, b""),
        "finit_module": sc(313, -1, b"", 0),
        "kexec_load": sc(246, 0, 0, 0, 0),
        "kexec_file_load": sc(320, -1, -1, 0, b"", 0),
        "mount": sc(165, b"none", b"/nonexistent-soulbox-probe", b"tmpfs", 0, 0),
        "fsopen": sc(430, b"tmpfs", 0),
        "open_tree": sc(428, -100, b"/", 0),
        "move_mount": sc(429, -1, b"", -1, b"", 0),
        "pivot_root": sc(155, b"/tmp", b"/tmp"),
        "unshare_user": in_child(lambda: sc(272, 0x10000000)),
        "clone_newuser": in_child(clone_newuser),
        "setns": sc(308, -1, 0),
        "io_uring_setup": sc(425, 1, ctypes.create_string_buffer(120)),
        "ptrace_pid1": ptrace_pid1(),
        "process_vm_readv": sc(310, 1, 0, 0, 0, 0, 0),
        "name_to_handle_at": sc(303, -100, b"/", 0, 0, 0),
        "open_by_handle_at": sc(304, -1, 0, 0),
        "iopl": sc(172, 3),
        "personality_no_aslr": sc(135, 0x0040000),
    }


FAMILIES = {
    "AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16,
    "AF_VSOCK": 40, "AF_PACKET": 17, "AF_ALG": 38, "AF_BLUETOOTH": 31, "AF_XDP": 44, "AF_CAN": 29,
    "AF_TIPC": 30, "AF_RDS": 21, "AF_KEY": 15, "AF_X25": 9, "AF_AX25": 3, "AF_APPLETALK": 5, "AF_NFC": 39,
    "AF_QIPCRTR": 42, "AF_SMC": 43, "AF_MCTP": 45, "AF_LLC": 26, "AF_PPPOX": 24, "AF_IEEE802154": 36,
}


def sockets():
    out = {}
    for name, fam in FAMILIES.items():
        kind = 2 if fam in (17, 44, 16) else 1  # SOCK_DGRAM / SOCK_STREAM
        out["socket " + name] = sc(41, fam, kind, 0)
    pair = (ctypes.c_int * 2)()
    out["socketpair AF_UNIX"] = sc(53, 1, 1, 0, pair)
    out["socketpair AF_INET"] = sc(53, 2, 1, 0, pair)
    out["socketpair AF_VSOCK"] = sc(53, 40, 1, 0, pair)
    return out


def i386_socketcall_vsock(path):
    """A static 32-bit x86 program: socketcall(SYS_SOCKET, {AF_VSOCK, SOCK_STREAM, 0}), exit(result). On 32-bit
    x86 the socket family sits behind a pointer, out of a filter's reach."""
    code = bytes.fromhex("6a00" "6a01" "6a28" "89e1" "bb01000000" "b866000000" "cd80" "89c3" "b801000000" "cd80")
    base, ehsize, phsize = 0x08048000, 52, 32
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, base + ehsize + phsize, ehsize, 0, 0, ehsize, phsize, 1, 0, 0, 0)
    total = ehsize + phsize + len(code)
    program = struct.pack("<IIIIIIII", 1, 0, base, base, total, total, 5, 0x1000)
    with open(path, "wb") as f:
        f.write(header + program + code)
    os.chmod(path, 0o755)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "syscalls":
        print(json.dumps(syscalls()))
    elif what == "sockets":
        print(json.dumps(sockets()))
    elif what == "ptrace":
        print(json.dumps({"ptrace_pid1": ptrace_pid1()}))
    elif what == "i386":
        i386_socketcall_vsock(sys.argv[2])
