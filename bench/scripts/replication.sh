#!/usr/bin/env bash
# W1 and W2 on a single node (2 shards) against three nodes of a cluster
# (1 shard each, on CPUs 0, 1 and 0: the same two cores) with replication
# factor 3, alternating, ROUNDS times. Prints one line per run; the
# ratio to read is rf3 / single of the same round.
#
#   cargo build --release -p sluice-broker && ROUNDS=2 bench/scripts/replication.sh
set -u
cd "$(dirname "$0")/../.."
B=${SLUICE_BIN:-target/release/sluice}
W=$(mktemp -d /tmp/sluice-replication-XXXX)
trap 'kill $(cat "$W"/*.pid 2>/dev/null) 2>/dev/null; rm -rf "$W"' EXIT
ROUNDS=${ROUNDS:-2}
SECONDS_RUN=${SECONDS_RUN:-15s}

lg() { # bootstrap batch-bytes label
  rm -f "$W/lg.json"
  "$B" loadgen --bootstrap "$1" --partitions 2 --producers 2 --consumers 0 --message-bytes 1000 \
    --batch-bytes "$2" --acks all --max-in-flight 5 --duration "$SECONDS_RUN" --warmup 3s \
    --json "$W/lg.json" >"$W/lg.out" 2>&1 || { echo "$3 failed: $(tail -1 "$W/lg.out")"; return; }
  python3 -c "import json;r=json.load(open('$W/lg.json'));p=r['produce'];l=r['produce_latency_us'];print('$3', round(p['mb_per_sec'],1), 'MB/s; produce p50', l['p50'], 'us, p99', l['p99'], 'us; errors', p['errors'])"
}
single() { # batch-bytes label
  rm -rf "$W/data"; mkdir -p "$W/data"
  "$B" serve --listen 127.0.0.1:29092 --data-dir "$W/data/s" >"$W/s.log" 2>&1 & echo $! >"$W/s.pid"
  for _ in $(seq 1 300); do grep -q "sluice: serving" "$W/s.log" && break; sleep 0.2; done
  lg 127.0.0.1:29092 "$1" "single $2"
  kill "$(cat "$W/s.pid")"; wait "$(cat "$W/s.pid")" 2>/dev/null; rm -f "$W/s.pid"
}
cluster() { # batch-bytes label
  rm -rf "$W/data"; mkdir -p "$W/data"
  local cl="1@127.0.0.1:29301,2@127.0.0.1:29302,3@127.0.0.1:29303"
  for i in 1 2 3; do
    taskset -c $(( (i + 1) % 2 )) "$B" serve --node-id $i --cluster "$cl" --listen 127.0.0.1:2920$i \
      --data-dir "$W/data/n$i" --cores 1 --shard-memory-bytes 2147483648 >"$W/n$i.log" 2>&1 &
    echo $! >"$W/n$i.pid"
  done
  for _ in $(seq 1 300); do
    "$B" cluster status --json --bootstrap 127.0.0.1:29201 2>/dev/null | python3 -c "import json,sys;s=json.load(sys.stdin);sys.exit(0 if s['controller'] is not None and sum(1 for n in s['nodes'] if n['reachable'] and n['address']) == 3 else 1)" 2>/dev/null && break
    sleep 0.2
  done
  lg 127.0.0.1:29201 "$1" "rf3 $2"
  for i in 1 2 3; do kill "$(cat "$W/n$i.pid")"; done
  for i in 1 2 3; do wait "$(cat "$W/n$i.pid")" 2>/dev/null; rm -f "$W/n$i.pid"; done
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  single 1048576 W1; cluster 1048576 W1
  single 102400 W2; cluster 102400 W2
done
