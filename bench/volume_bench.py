"""Volume benchmark (not a test; issue 15): run by `BENCH=bench/volume_bench.py bench/server.sh`.

In one sandbox with a volume mounted at /data, and in the same run:
  (a) writing SIZE_MIB MiB with dd (fsync at the end) to the volume vs to the sandbox's own disk (/home/user)
  (b) reading it back with dd (page cache warm on both sides: the mount path, not the disk, is what differs)
  (c) the same bytes through the volume content API (Volume.write_file/read_file, no sandbox involved) vs
      through envd's files API (sandbox.files.write/read)
Ratios are volume / own disk. RUNS rounds, medians.
"""
import os
import statistics
import time

from e2b import Sandbox, Volume

SIZE_MIB = int(os.environ.get("SIZE_MIB", "256"))
RUNS = int(os.environ.get("RUNS", "3"))


def dd_rate(sbx, command):
    """MiB/s of a dd run inside the sandbox, from its own wall time (the command's round trip excluded)."""
    out = sbx.commands.run(f"s=$(date +%s%N); {command} 2>/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))",
                           timeout=600).stdout
    micros = int(out.strip().splitlines()[-1])
    return SIZE_MIB / (micros / 1e6)


def timed_rate(fn):
    t0 = time.perf_counter()
    fn()
    return SIZE_MIB / (time.perf_counter() - t0)


def main():
    volume = Volume.create(f"bench-{os.getpid()}")
    sbx = Sandbox.create(volume_mounts={"/data": volume}, timeout=1200)
    payload = os.urandom(SIZE_MIB << 20)
    rows = {k: [] for k in ("dd write", "dd read", "API upload", "API download")}
    try:
        for _ in range(RUNS):
            own, vol = "/home/user/bench.bin", "/data/bench.bin"
            write = "dd if=/dev/zero of={} bs=1M count=" + str(SIZE_MIB) + " conv=fsync"
            read = "dd if={} of=/dev/null bs=1M"
            rows["dd write"].append((dd_rate(sbx, write.format(own)), dd_rate(sbx, write.format(vol))))
            rows["dd read"].append((dd_rate(sbx, read.format(own)), dd_rate(sbx, read.format(vol))))
            sbx.commands.run(f"rm -f {own} {vol}")
            up_own = timed_rate(lambda: sbx.files.write(own, payload))
            up_vol = timed_rate(lambda: volume.write_file("/bench.bin", payload, force=True))
            rows["API upload"].append((up_own, up_vol))
            down_own = timed_rate(lambda: sbx.files.read(own, format="bytes"))
            down_vol = timed_rate(lambda: volume.read_file("/bench.bin", format="bytes"))
            rows["API download"].append((down_own, down_vol))
            sbx.commands.run(f"rm -f {own} {vol}")
        print(f"{SIZE_MIB} MiB, median of {RUNS}        own disk      volume   ratio")
        for name, pairs in rows.items():
            own_rate = statistics.median(p[0] for p in pairs)
            vol_rate = statistics.median(p[1] for p in pairs)
            print(f"{name:<28} {own_rate:8.0f} MiB/s {vol_rate:8.0f} MiB/s  {vol_rate / own_rate:5.2f}x")
    finally:
        sbx.kill()
        Volume.destroy(volume.volume_id)


if __name__ == "__main__":
    main()
