#!/usr/bin/env bash
# Two `vislab tune` workers sharing one Optuna study in a local PostgreSQL server.
#
#   scripts/tune-postgres.sh [TRIALS] [-- extra vislab tune arguments]
#
# Installs PostgreSQL (the Debian package) if initdb is missing, starts a throw-away server on
# 127.0.0.1 (a fresh data folder, trust authentication on loopback only), creates a database,
# runs two workers against postgresql+psycopg://..., prints the trials, then stops the server
# and deletes its data folder. Needs the psycopg driver: pip install -e '.[postgres]'.
# On a cluster, point --storage at the site's database instead and start one worker per job.
set -euo pipefail
cd "$(dirname "$0")/.."

trials=${1:-4}
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
if [ ${#extra[@]} -eq 0 ]; then  # tiny trials on built-in data: a check of the plumbing, not a search
  extra=(--data-root=builtin --model-name=Q1_1 --epochs=2 --train-limit=200 --num-threads=1)
fi

python -c "import psycopg" 2>/dev/null || {
  echo "tune-postgres: the psycopg driver is missing; pip install -e '.[postgres]'" >&2; exit 2; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "tune-postgres: installing PostgreSQL (apt-get install postgresql)" >&2
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# PostgreSQL refuses to run as root: the server runs as the 'postgres' user the package made.
as_server=()
if [ "$(id -u)" -eq 0 ]; then
  as_server=(runuser -u postgres --)
fi
data=$(mktemp -d /tmp/vislab-pg.XXXXXX)
out=$(mktemp -d /tmp/vislab-tune-pg.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres "$data"
port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")

stop() {
  "${as_server[@]}" "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap stop EXIT

"${as_server[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
"${as_server[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-h 127.0.0.1 -p $port -k $data" start >/dev/null
"$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres vislab
url="postgresql+psycopg://postgres@127.0.0.1:$port/vislab"
echo "tune-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, study in $url"

started=$(date +%s)
pids=()
for worker in 1 2; do
  python -m vislab tune cnn --trials "$trials" --storage "$url" --study-name pg-demo --out "$out" \
    --space configs/cnn/tune-q1.yaml "${extra[@]}" 2> "$out/worker-$worker.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "tune-postgres: two workers finished in $(( $(date +%s) - started )) s (exit status $status)"
for worker in 1 2; do
  echo "worker $worker ran trials: $(grep -o '== trial [0-9]*' "$out/worker-$worker.log" | awk '{print $3}' | paste -sd, -)"
done
echo "-- trials in the PostgreSQL study:"
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d vislab -A -F ' ' -c \
  "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v USING (trial_id) ORDER BY t.number"
echo "-- $out/trials.csv:"
cut -d, -f1-3 "$out/trials.csv"
echo "tune folder: $out"
exit "$status"
