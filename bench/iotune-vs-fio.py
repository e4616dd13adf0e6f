#!/usr/bin/env python3
"""iotune's figures next to fio's for the same block sizes and depths, on
the same directory in the same run (sequential writes; fdatasync after a
write, through io_uring and as a system call; sequential 256 KiB reads at
depth 16).

fio is asked to do what the log does (FIO_MODE=log, the default): write a
fresh file by extending it (--file_append on an empty file, no
preallocation) and submit on a polled ring (--hipri: glommio puts O_DIRECT
file I/O on its IOPOLL ring, where io_uring runs a file's blocking writes
one after another instead of on competing workers). FIO_MODE=default runs
fio with its own defaults instead (a preallocated file, interrupt-driven
completions).

    cargo build --release -p sluice-broker
    python3 bench/iotune-vs-fio.py DIR [ROUNDS]

Rounds alternate which tool goes first; each ratio is iotune/fio per
round, and the table gives the median. Needs fio (apt-get install fio).
FIO_CONTROL=1 runs fio in iotune's place: fio against itself, the
comparison's own noise on this disk.

fio's buffers are in transparent huge pages (glibc's hugetlb tunable,
and --iomem_align=2m so a buffer lies inside a huge page), as the log's
DMA buffers are: from scattered 4 KiB pages this virtio disk
reads up to a third slower, since it bounds the physical segments in
flight rather than the requests.
"""
import json, os, statistics, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sluice = os.environ.get("SLUICE_BIN", os.path.join(root, "target/release/sluice"))
d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/iotune-vs-fio")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
os.makedirs(d, exist_ok=True)
f = os.path.join(d, "fio.dat")
sizes = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20]
depths = [1, 4, 16]


FIO_ENV = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.hugetlb=1")

mode = os.environ.get("FIO_MODE", "log")
if mode == "log":
    fio_mode = ["--hipri", "--fallocate=none", "--file_append=1"]
elif mode == "default":
    fio_mode = []
else:
    sys.exit(f"FIO_MODE={mode}: expected log or default")


def fio(*args, fresh=True, polled=True):
    if fresh and os.path.exists(f):
        os.remove(f)
    if fresh:
        open(f, "w").close()
    out = subprocess.run(
        ["fio", "--name=x", "--ioengine=io_uring", "--direct=1", "--iomem_align=2m",
         "--filename=" + f, *[a for a in fio_mode if polled or a != "--hipri"], "--output-format=json", *args],
        check=True, capture_output=True, text=True, env=FIO_ENV).stdout
    return json.loads(out[out.index("{"):])["jobs"][0]


def fio_round():
    r = {}
    for bs in sizes:
        for qd in depths:
            j = fio("--rw=write", f"--bs={bs}", f"--iodepth={qd}", "--size=1G", "--runtime=1", "--time_based=0")
            r[("w", bs, qd)] = j["write"]["bw_bytes"]
        # fdatasync is not a polled operation: this case runs without --hipri.
        j = fio("--rw=write", f"--bs={bs}", "--iodepth=1", "--fdatasync=1", "--size=64M",
                "--runtime=1", polled=False)
        r[("s", bs)] = j["sync"]["lat_ns"]["percentile"]["50.000000"] / 1000
        # iotune's figure as its executor sees the completion, against the
        # same fio figure: how much the executor's turn adds.
        r[("e", bs)] = r[("s", bs)]
        # The same with the system calls (psync engine): against iotune's
        # fdatasync(2) figure.
        j = fio("--rw=write", f"--bs={bs}", "--fdatasync=1", "--size=64M", "--runtime=1",
                "--ioengine=psync", polled=False)
        r[("y", bs)] = j["sync"]["lat_ns"]["percentile"]["50.000000"] / 1000
    # The file to read: written whole first (an appending job would read
    # past its end).
    if os.path.exists(f):
        os.remove(f)
    subprocess.run(["fio", "--name=w", "--ioengine=io_uring", "--direct=1", "--filename=" + f,
                    "--rw=write", "--bs=1M", "--iodepth=4", "--size=512M"],
                   check=True, capture_output=True, env=FIO_ENV)
    # Reads without --hipri: virtio disks refuse polled reads (EOPNOTSUPP;
    # the log then reads on its blocking pool).
    out = subprocess.run(
        ["fio", "--name=x", "--ioengine=io_uring", "--direct=1", "--iomem_align=2m",
         "--filename=" + f, "--output-format=json", "--rw=read", "--bs=256k", "--iodepth=16", "--size=512M",
         "--runtime=2"], check=True, capture_output=True, text=True, env=FIO_ENV).stdout
    j = json.loads(out[out.index("{"):])["jobs"][0]
    r[("r",)] = j["read"]["bw_bytes"]
    os.remove(f)
    return r


def iotune_round():
    out = subprocess.run([sluice, "iotune", "--json", "--duration", "30s", "--dir", d],
                         check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    r = {}
    for p in v["seq_write"]:
        r[("w", p["block_bytes"], p["depth"])] = p["write_bytes_per_sec"]
    for s in v["fdatasync"]:
        r[("s", s["write_bytes"])] = s["fdatasync_p50_us"]
        r[("e", s["write_bytes"])] = s["executor_fdatasync_p50_us"]
        r[("y", s["write_bytes"])] = s["syscall_p50_us"]
    r[("r",)] = v["seq_read_bytes_per_sec"]
    return r


# FIO_CONTROL=1 puts fio in iotune's place: fio against itself, the same
# rounds and medians, which shows how far apart two runs of the same tool
# land on this disk (the comparison's own noise).
control = os.environ.get("FIO_CONTROL") == "1"
ours_round = fio_round if control else iotune_round

ratios, ours, theirs = {}, {}, {}
for i in range(rounds):
    a, b = (ours_round(), fio_round()) if i % 2 == 0 else tuple(reversed((fio_round(), ours_round())))
    for k in b:
        ratios.setdefault(k, []).append(a[k] / b[k])
        ours.setdefault(k, []).append(a[k])
        theirs.setdefault(k, []).append(b[k])

med = statistics.median
who = "fio (control)" if control else "iotune"
print(f"{who} against fio (FIO_MODE={mode}), median of {rounds} rounds, {d}\n")
print(f"| case | {who} | fio | {who}/fio |\n|---|---|---|---|")
for k in sorted(ratios, key=str):
    if k[0] == "w":
        name, unit, scale = f"write {k[1] >> 10} KiB x {k[2]}", "MB/s", 1e6
    elif k[0] == "s":
        name, unit, scale = f"fdatasync after {k[1] >> 10} KiB (p50, io_uring)", "us", 1
    elif k[0] == "e":
        name, unit, scale = f"fdatasync after {k[1] >> 10} KiB (p50, io_uring, seen by the executor)", "us", 1
    elif k[0] == "y":
        name, unit, scale = f"fdatasync after {k[1] >> 10} KiB (p50, system call)", "us", 1
    else:
        name, unit, scale = "read 256 KiB x 16", "MB/s", 1e6
    print(f"| {name} | {med(ours[k]) / scale:.0f} {unit} | {med(theirs[k]) / scale:.0f} {unit} | {med(ratios[k]):.2f} |")
