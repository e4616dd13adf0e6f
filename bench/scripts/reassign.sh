#!/usr/bin/env bash
# The copy rate of a reassignment: three nodes of a cluster (1 shard each,
# on CPUs 0, 1 and 0, as replication.sh), a partition of one replica
# filled with MESSAGES messages of 1000 bytes (acks=1), then a second
# replica added with `sluice cluster reassign --wait`: prints the bytes of
# the log, the seconds to completion and MB/s, ROUNDS times, each beside
# the disk's O_DIRECT sequential write rate measured just before (dd).
#
#   cargo build --release -p sluice-broker && ROUNDS=3 bench/scripts/reassign.sh
set -u
cd "$(dirname "$0")/../.."
B=${SLUICE_BIN:-target/release/sluice}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/sluice-reassign-XXXX")
trap 'kill $(cat "$W"/*.pid 2>/dev/null) 2>/dev/null; rm -rf "$W"' EXIT
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-1000000}

for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$W/data" "$W/dd"; mkdir -p "$W/data"
  disk=$(dd if=/dev/zero of="$W/dd" bs=1M count=1024 oflag=direct conv=fdatasync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
  rm -f "$W/dd"
  cl="1@127.0.0.1:29301,2@127.0.0.1:29302,3@127.0.0.1:29303"
  for i in 1 2 3; do
    taskset -c $(( (i + 1) % 2 )) "$B" serve --node-id $i --cluster "$cl" --listen 127.0.0.1:2920$i \
      --data-dir "$W/data/n$i" --cores 1 --shard-memory-bytes 2147483648 >"$W/n$i.log" 2>&1 &
    echo $! >"$W/n$i.pid"
  done
  boot=127.0.0.1:29201,127.0.0.1:29202,127.0.0.1:29203
  for _ in $(seq 1 300); do
    "$B" cluster status --json --bootstrap "$boot" 2>/dev/null | python3 -c "import json,sys;s=json.load(sys.stdin);sys.exit(0 if s['controller'] is not None and sum(1 for n in s['nodes'] if n['reachable'] and n['address']) == 3 else 1)" 2>/dev/null && break
    sleep 0.2
  done
  for _ in $(seq 1 50); do
    "$B" topic create copy --partitions 1 --replication-factor 1 --bootstrap "$boot" >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$B" loadgen --bootstrap 127.0.0.1:29201 --topic copy --partitions 1 --producers 1 --consumers 0 \
    --message-bytes 1000 --batch-bytes 1048576 --acks 1 --messages "$MESSAGES" >"$W/lg.out" 2>&1 \
    || { echo "fill failed: $(tail -1 "$W/lg.out")"; continue; }
  leader=$("$B" topic describe copy --json --bootstrap "$boot" | python3 -c "import json,sys;print(json.load(sys.stdin)['partitions'][0]['leader'])")
  other=$(( leader % 3 + 1 ))
  bytes=$(du -sb "$W/data/n$leader/copy-0" | cut -f1)
  out=$("$B" cluster reassign copy --partition 0 --replicas "$leader,$other" --wait --json --bootstrap "$boot")
  python3 -c "import json;r=json.loads('''$out''');b=$bytes;print('round $round: copied', round(b/1e6), 'MB to node $other in', round(r['seconds'],2), 's =', round(b/1e6/r['seconds'],1), 'MB/s; disk O_DIRECT write (dd, 1 GiB): $disk')"
  for i in 1 2 3; do kill "$(cat "$W/n$i.pid")"; done
  for i in 1 2 3; do wait "$(cat "$W/n$i.pid")" 2>/dev/null; rm -f "$W/n$i.pid"; done
done
