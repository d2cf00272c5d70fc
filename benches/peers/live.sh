#!/usr/bin/env bash
# Live updates as real clients see them: SUBSCRIBERS graphql-ws clients in Node (benches/live,
# a process apart from the server) subscribe to `workspaceJobEvents` of one workspace on
# `jobgraph serve --workers 0` over a fresh PostgreSQL database; CHANGES jobs are then cancelled
# one after the other, each once every subscriber got the one before. RUNS runs, each on its own
# database and server; prints each run and the medians of the p99 latency from the change to
# the client and of the server's memory per subscriber. The targets: p99 < 100 ms and
# < 32 KiB per subscriber at 10,000 subscribers (Hasura publishes 10,000 live queries on
# 2 vCPU; it is not run here).
#
# Before each jobgraph run, the same clients run against the floor (benches/live/floor.mjs): a
# Node server that only speaks the protocol and writes one message, serialized once, to every
# socket. No server delivers faster to these clients on this machine.
#
#   bash benches/peers/live.sh        # RUNS=3 SUBSCRIBERS=10000 CHANGES=20 THREADS=2 USERS=1 BIN=
#
# USERS spreads the subscribers over that many users, members of the workspace: as many
# audiences, each with its own view of the jobs (one shared execution each).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
CHANGES=${CHANGES:-20}
THREADS=${THREADS:-2}
USERS=${USERS:-1}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
# SSLMODE: how jobgraph connects to PostgreSQL; without TLS by default, as the other benches do.
SSLMODE=${SSLMODE:-disable}
# BIN: another build of jobgraph to measure (for example one from another worktree).
if [ -z "${BIN:-}" ]; then
  cargo build --release -q --bin jobgraph
  BIN=${CARGO_TARGET_DIR:-target}/release/jobgraph
fi
bin=$BIN
[ -d benches/live/node_modules ] || (cd benches/live && npm ci --no-audit --no-fund --silent)
db=jobgraph_bench_live
work=$(mktemp -d)
server=
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
p99s=() kibs=() floors=()
for i in $(seq 1 "$RUNS"); do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  node benches/live/floor.mjs "$port" &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  out=$(URL="http://127.0.0.1:$port/graphql" TOKEN=none SERVER_PID=$server \
    SUBSCRIBERS=$SUBSCRIBERS CHANGES=$CHANGES THREADS=$THREADS node benches/live/subscribe.mjs) \
    || { echo "floor run $i failed" >&2; exit 1; }
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  floor=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["p99_ms"])' "$(grep '^{"subscribers"' <<<"$out")")
  floors+=("$floor")
  echo "run $i, floor: $(grep '^latency' <<<"$out")"

  psql "$PG/postgres" -Xqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
  export DATABASE_URL="$PG/$db?sslmode=$SSLMODE" JOBGRAPH_DATA_DIR=$work/data
  "$bin" migrate >/dev/null 2>&1
  "$bin" user create --email bench@live.example --admin >/dev/null
  token=$("$bin" token create --email bench@live.example --name bench)
  members=
  for u in $(seq 2 "$USERS"); do
    "$bin" user create --email "viewer$u@live.example" >/dev/null
    members+="viewer$u@live.example $("$bin" token create --email "viewer$u@live.example" --name bench),"
  done
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin" serve --workers 0 --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  out=$(URL="http://127.0.0.1:$port/graphql" TOKEN=$token MEMBERS=$members SERVER_PID=$server \
    SUBSCRIBERS=$SUBSCRIBERS CHANGES=$CHANGES THREADS=$THREADS node benches/live/subscribe.mjs) \
    || { echo "run $i failed (server log: $(tail -3 "$work/serve.log"))" >&2; exit 1; }
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  psql "$PG/postgres" -Xqc "DROP DATABASE $db WITH (FORCE)"
  line=$(grep '^{"subscribers"' <<<"$out")
  read -r p99 kib deliveries < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["p99_ms"], d["server_kib_per_subscriber"], d["deliveries"])' "$line")
  p99s+=("$p99") kibs+=("$kib")
  echo "run $i, jobgraph: $(grep '^latency' <<<"$out"); $deliveries deliveries; $kib KiB per subscriber"
done
echo "$SUBSCRIBERS subscribers, median of $RUNS runs: p99 $(printf '%s\n' "${p99s[@]}" | median) ms (target < 100; the floor: $(printf '%s\n' "${floors[@]}" | median) ms), $(printf '%s\n' "${kibs[@]}" | median) KiB per subscriber (target < 32)"
