"""Driven by bench/seccomp.sh: times `runc run` of /bin/true in a sandbox's bundle under three seccomp profiles."""

import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

# The deny-list the runtime used before issue 11 (crates/soulbox-runtime/src/seccomp.rs at that time).
DENIED = """mount umount umount2 fsopen fsconfig fsmount fspick move_mount open_tree mount_setattr pivot_root init_module
finit_module delete_module create_module kexec_load kexec_file_load bpf perf_event_open ptrace process_vm_readv
process_vm_writev kcmp keyctl add_key request_key iopl ioperm open_by_handle_at name_to_handle_at swapon swapoff reboot
settimeofday clock_settime clock_adjtime adjtimex stime acct quotactl quotactl_fd setns lookup_dcookie userfaultfd
fanotify_init syslog vm86 vm86old nfsservctl _sysctl uselib get_kernel_syms query_module io_uring_setup io_uring_enter
io_uring_register""".split()
NEWUSER = [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}]
DENY_LIST = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": NEWUSER},
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": NEWUSER},
    ],
}

sandbox_dir, rounds = sys.argv[1], int(sys.argv[2])
work = os.path.join(os.path.dirname(os.path.dirname(sandbox_dir)), "bench")
oci_root = os.path.join(work, "oci")
with open(os.path.join(sandbox_dir, "config.json")) as f:
    base = json.load(f)
profiles = {"no filter": {"defaultAction": "SCMP_ACT_ALLOW"}, "deny-list (before)": DENY_LIST, "allow-list (now)": base["linux"]["seccomp"]}
base["process"]["args"] = ["/bin/true"]
base["process"].pop("oomScoreAdj", None)
base["root"] = {"path": os.path.join(sandbox_dir, "rootfs"), "readonly": True}
base["linux"]["namespaces"] = [n for n in base["linux"]["namespaces"] if n["type"] != "network"] + [{"type": "network"}]
base["mounts"] = [m for m in base["mounts"] if m["destination"] != "/.soulbox/envd"]
parent = base["linux"]["cgroupsPath"].rsplit("/", 1)[0]


def start(profile, tag):
    bundle = os.path.join(work, tag)
    os.makedirs(bundle, exist_ok=True)
    spec = copy.deepcopy(base)
    spec["linux"]["seccomp"] = profile
    spec["linux"]["cgroupsPath"] = f"{parent}/bench-{tag}"
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    t = time.perf_counter()
    subprocess.run(["runc", "--root", oci_root, "run", "-b", bundle, f"bench-{tag}"], check=True, stdin=subprocess.DEVNULL)
    took = (time.perf_counter() - t) * 1000
    subprocess.run(["runc", "--root", oci_root, "delete", "-f", f"bench-{tag}"], capture_output=True)
    return took


times = {name: [] for name in profiles}
try:
    for i in range(rounds):
        for n, (name, profile) in enumerate(profiles.items()):
            times[name].append(start(profile, f"{n}-{i}"))
finally:
    shutil.rmtree(work, ignore_errors=True)
p50 = {}
for name, v in times.items():
    v.sort()
    p50[name] = statistics.median(v)
    print(f"{name:20s} runc run /bin/true: p50 {p50[name]:5.1f} ms  p90 {v[int(len(v) * 0.9)]:5.1f} ms  (n={len(v)})")
now, before, none = p50["allow-list (now)"], p50["deny-list (before)"], p50["no filter"]
print(f"allow-list vs deny-list: {now / before:.2f}x ({now - before:+.1f} ms); allow-list vs no filter: {now / none:.2f}x ({now - none:+.1f} ms)")
