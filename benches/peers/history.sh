#!/usr/bin/env bash
# The history page side by side with PostGraphile (../shared/peers/postgraphile): the peer and
# jobgraph's history bench alternately, PAIRS times, with the peer's settings (wrk -t1 -c32,
# 20 s after a 5 s warm-up, the page after the 500,000 newest jobs), one server running at a
# time. Prints each run's requests/s and the ratios jobgraph / PostGraphile, per pair and
# their medians.
#
#   bash benches/peers/history.sh            # PAIRS=3
#
# Knobs: PAIRS (3), DURATION (20), WARMUP (5), CONNS (32), PEERS (../shared/peers beside the
# clone). The peer's setup (wrk, npm packages, its 1,000,000-job database) runs first and is
# skipped when done; jobgraph's bench seeds its own database on every run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${PAIRS:-3}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
CONNS=${CONNS:-32}
PEERS=${PEERS:-$(cd .. && pwd)/shared/peers}
peer=$PEERS/postgraphile
[ -x "$peer/bench.sh" ] || { echo "no PostGraphile peer at $peer (set PEERS)" >&2; exit 1; }
"$peer/setup.sh" >/dev/null
log=$(mktemp -d)
echo "logs in $log"
cargo bench --bench history --no-run 2>&1 | tail -1

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -a P_FIRST P_DEEP J_FIRST J_DEEP
for i in $(seq 1 "$PAIRS"); do
  DURATION=$DURATION CONNS=$CONNS THREADS=1 WARMUP=$WARMUP SINGLE=0 \
    QUERIES="first deep_cursor" "$peer/bench.sh" >"$log/peer-$i.txt" 2>&1 ||
    { tail -20 "$log/peer-$i.txt"; exit 1; }
  p_first=$(awk '/^== summary/{s=1} s && $1 == "first" {print $2}' "$log/peer-$i.txt")
  p_deep=$(awk '/^== summary/{s=1} s && $1 == "deep_cursor" {print $2}' "$log/peer-$i.txt")
  BENCH_CONNECTIONS=$CONNS BENCH_THREADS=1 BENCH_DURATION=${DURATION}s BENCH_WARMUP=${WARMUP}s \
    BENCH_DEEP_OFFSET=499999 cargo bench -q --bench history >"$log/jobgraph-$i.txt" 2>&1 ||
    { tail -20 "$log/jobgraph-$i.txt"; exit 1; }
  j_first=$(awk '/^History benchmark/{s=1} s && $1 == "first" {print $3}' "$log/jobgraph-$i.txt")
  j_deep=$(awk '/^History benchmark/{s=1} s && $1 == "deep" {print $5}' "$log/jobgraph-$i.txt")
  [ -n "$p_first" ] && [ -n "$p_deep" ] && [ -n "$j_first" ] && [ -n "$j_deep" ] ||
    { echo "could not read the figures of pair $i (see $log)" >&2; exit 1; }
  P_FIRST+=("$p_first"); P_DEEP+=("$p_deep"); J_FIRST+=("$j_first"); J_DEEP+=("$j_deep")
  awk -v i="$i" -v pf="$p_first" -v pd="$p_deep" -v jf="$j_first" -v jd="$j_deep" 'BEGIN {
    printf "pair %d: first page PostGraphile %.0f, jobgraph %.0f requests/s (%.2fx); deep page %.0f, %.0f (%.2fx)\n",
      i, pf, jf, jf / pf, pd, jd, jd / pd }'
done
first_ratios=$(for k in "${!P_FIRST[@]}"; do awk -v p="${P_FIRST[$k]}" -v j="${J_FIRST[$k]}" 'BEGIN {print j / p}'; done)
deep_ratios=$(for k in "${!P_DEEP[@]}"; do awk -v p="${P_DEEP[$k]}" -v j="${J_DEEP[$k]}" 'BEGIN {print j / p}'; done)
printf 'history page, jobgraph / PostGraphile, median of %d pairs: first %.2fx, deep %.2fx (target 3x)\n' \
  "$PAIRS" "$(echo "$first_ratios" | median)" "$(echo "$deep_ratios" | median)"
