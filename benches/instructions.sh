#!/usr/bin/env bash
# Instructions the server runs per history page, counted by callgrind: unlike requests/s, this
# does not move with the machine's speed or load (repeatable within about 1%), so two builds can
# be compared from single runs, one after the other.
#
#   bash benches/instructions.sh                 # this checkout's history bench
#   bash benches/instructions.sh BIN1 BIN2 ...   # bench binaries of other builds
#
# Runs the history bench (20,000 jobs, 4 connections, 10 s per page) under
# `valgrind --tool=callgrind` and prints, per request (one call of `graphql::request_data` each),
# the instructions inside `http::graphql::execute` (the GraphQL request from its parsed
# parameters to its serialized response: validation, resolvers, SQL client, serialization) and
# in some of its parts. The figures count the first and the deep page together. Needs valgrind
# (Debian's package) and what the history bench needs (PostgreSQL, wrk). Under valgrind the
# server answers about 50 requests/s.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  bins=("$(cargo bench --bench history --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)")
fi
out=$(mktemp -d)
echo "callgrind output in $out"
for bin in "${bins[@]}"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 1; }
  run=$out/$(basename "$bin")
  BENCH_JOBS=20000 BENCH_CONNECTIONS=4 BENCH_THREADS=1 BENCH_DURATION=10s BENCH_WARMUP=2s \
    BENCH_DEEP_OFFSET=9999 BENCH_WORKERS=2 \
    valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$run.%p" "$bin" >"$run.log" 2>&1 ||
    { tail -20 "$run.log"; exit 1; }
  profile=$(ls "$run".[0-9]* | head -1)
  callgrind_annotate --inclusive=yes "$profile" >"$run.txt" 2>/dev/null
  python3 - "$profile" "$run.txt" "$bin" <<'PY'
import re, sys
profile, annotated, bin = sys.argv[1:]
# Calls of request_data, once per request, from the call lines of the profile.
names, requests, lines = {}, 0, open(profile).read().split('\n')
for i, line in enumerate(lines):
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?$', line)
    if not m:
        continue
    if m.group(3):
        names[m.group(2)] = m.group(3)
    if m.group(1) == 'cfn' and names.get(m.group(2)) == 'jobgraph::graphql::request_data' \
            and lines[i + 1].startswith('calls='):
        requests += int(lines[i + 1].split('=')[1].split()[0])
text = open(annotated).read().split('\n')
def inclusive(part):
    for line in text:
        if part in line:
            return int(line.split()[0].replace(',', ''))
    return 0
if requests == 0:
    sys.exit(f'{bin}: no request counted (see {profile})')
print(f'{bin}: {requests} requests')
for label, part in [
    ('execute, in all', 'jobgraph::http::graphql::execute::{{closure}}'),
    ('validation', 'async_graphql::validation::check_rules'),
    ('a page\'s objects (InlineList::written)', 'jobgraph::graphql::inline::InlineList<T>::written ['),
    ('rows decoded (store::rows::read)', 'jobgraph::store::rows::read'),
    ('JSON written (graphql::json)', 'jobgraph::graphql::json::write_value ['),
]:
    print(f'  {label:36} {inclusive(part) // requests:>10,} instructions per request')
PY
done
