#!/usr/bin/env bash
# The README's "try it": run it while `make dev` is up. It publishes an order event, looks up the
# customer's contacts and simulates the customer calling the driver through the virtual number.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
env_file="${VNMASK_DEV_ENV:-$root/.local/dev/dev.env}"
[ -f "$env_file" ] || { echo "no $env_file: start the stack with 'make dev' first" >&2; exit 1; }
source "$env_file"
vnctl() { "${CARGO_TARGET_DIR:-$root/target}/debug/vnctl" "$@"; }
order="try-$(date +%s)"
base="http://127.0.0.1:$VNMASK_LAMBDA_PORT"

echo "1. publish DriverAssigned for order $order (customer u-cust, driver u-drv)"
cat >"/tmp/$order.json" <<JSON
{"event_id": "$order-e1", "type": "DriverAssigned", "order_id": "$order", "version": 1,
 "occurred_at": "2026-11-24T10:15:00Z", "market": "IN",
 "participants": [{"role": "customer", "user_id": "u-cust", "phone": "+919812345678"},
                  {"role": "driver",   "user_id": "u-drv",  "phone": "+919898765432"}]}
JSON
vnctl publish "/tmp/$order.json"

echo "2. the customer's app asks which number to show for the driver"
contacts=""
for _ in $(seq 1 60); do
  contacts=$(curl -s -H 'x-vnmask-local-claims: {"sub": "u-cust"}' "$base/lambda-url/lookup/v1/orders/$order/contacts")
  case "$contacts" in *virtual_number*) break ;; esac
  sleep 1
done
echo "$contacts"
vn=$(printf '%s' "$contacts" | python3 -c 'import json,sys; print(json.load(sys.stdin)["contacts"][0]["virtual_number"])')

echo "3. the customer dials $vn: the webhook answers with TwiML"
vnctl simulate call --from +919812345678 --to "$vn"

echo "4. a stranger dials $vn: refused"
vnctl simulate call --from +919811111111 --to "$vn"
