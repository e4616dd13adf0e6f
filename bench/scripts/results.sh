#!/usr/bin/env bash
# The one command behind BENCHMARKS.md's table of current results: builds
# the release binary, then runs, one after another on a quiet machine,
#   the suite (limits by fio and iperf3, W1-W5, the fresh-against-warm
#     line, W3's HTML latency page),
#   replication factor 3 against one node (W1, W2),
#   the copy rate of an added replica,
#   the time to a new leader after kill -9,
#   TLS against plaintext,
#   and, when iggy-server and iggy-bench are on PATH, the peer side by side,
# and keeps every run's output, JSON and HTML page in bench/results/
# (committed with the table they produced; the previous run's files are
# replaced).
#
#   bench/scripts/results.sh            # 3 rounds of each
#   ROUNDS=2 bench/scripts/results.sh   # 2 rounds: about 10 minutes on
#                                       # 2 cores, 20 with the peer
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
OUT=bench/results
rm -rf "$OUT"
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/run.log"; }

log "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo -modified), $(nproc) CPUs, $(uname -r)"
cargo build --release -p sluice-broker 2>&1 | tail -1
cargo build --release -p sluice-bench --examples 2>&1 | tail -1

log "suite (SLUICE_SUITE_REPEATS=$ROUNDS)"
SLUICE_SUITE_REPEATS=$ROUNDS cargo run --release -q -p sluice-bench --example suite \
  2>&1 | tee "$OUT/suite.txt"
cp target/bench/suite.json "$OUT/" 2>/dev/null || true
cp target/suite/*.html "$OUT/" 2>/dev/null || true

log "replication factor 3 (ROUNDS=$ROUNDS)"
ROUNDS=$ROUNDS bench/scripts/replication.sh 2>&1 | tee "$OUT/replication.txt"

log "replica copy rate (ROUNDS=$ROUNDS)"
ROUNDS=$ROUNDS bench/scripts/reassign.sh 2>&1 | tee "$OUT/reassign.txt"

log "failover"
cargo run --release -q -p sluice-bench --example failover 2>&1 | tee "$OUT/failover.txt"

log "TLS against plaintext (SLUICE_BENCH_REPEATS=$ROUNDS)"
SLUICE_BENCH_REPEATS=$ROUNDS cargo bench -q -p sluice-bench --bench tls 2>&1 \
  | tee "$OUT/tls.txt"
cp target/bench/tls.json "$OUT/" 2>/dev/null || true

if command -v iggy-server >/dev/null && command -v iggy-bench >/dev/null; then
  log "peer side by side (SLUICE_PEER_ROUNDS=$ROUNDS)"
  SLUICE_PEER_ROUNDS=$ROUNDS cargo run --release -q -p sluice-bench --example peer 2>&1 | tee "$OUT/peer.txt"
else
  log "peer skipped: iggy-server and iggy-bench are not on PATH"
fi
log "done: $OUT"
