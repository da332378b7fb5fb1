#!/usr/bin/env bash
# The README's "try it": run it while `make dev` is up. In each of the stack's two markets it
# publishes an order event, looks up the customer's contacts and simulates calls and texts
# through the virtual number: India's numbers carry voice only (the call comes through Exotel,
# numbers in national form, and a text is refused), the US's carry voice and SMS (Twilio). A
# stranger is asked for a PIN; the customer, calling from another phone, gets through with theirs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
env_file="${VNMASK_DEV_ENV:-$root/.local/dev/dev.env}"
[ -f "$env_file" ] || { echo "no $env_file: start the stack with 'make dev' first" >&2; exit 1; }
source "$env_file"
vnctl() { "${CARGO_TARGET_DIR:-$root/target}/debug/vnctl" "$@"; }
run=$(date +%s)
base="http://127.0.0.1:$VNMASK_LAMBDA_PORT"

# publish ORDER MARKET CUSTOMER_PHONE DRIVER_PHONE: a DriverAssigned event for the order.
publish() {
  cat >"/tmp/$1.json" <<JSON
{"event_id": "$1-e1", "type": "DriverAssigned", "order_id": "$1", "version": 1,
 "occurred_at": "2026-11-24T10:15:00Z", "market": "$2",
 "participants": [{"role": "customer", "user_id": "u-cust-$2", "phone": "$3"},
                  {"role": "driver",   "user_id": "u-drv-$2",  "phone": "$4"}]}
JSON
  vnctl publish "/tmp/$1.json"
}

# contacts ORDER MARKET: the customer's lookup, once the event is applied.
contacts() {
  local answer=""
  for _ in $(seq 1 60); do
    answer=$(curl -s -H "x-vnmask-local-claims: {\"sub\": \"u-cust-$2\"}" \
      "$base/lambda-url/lookup/v1/orders/$1/contacts")
    case "$answer" in *virtual_number*) break ;; esac
    sleep 1
  done
  echo "$answer"
}

field() { python3 -c "import json,sys; print(json.load(sys.stdin)['contacts'][0]['$1'])"; }

in_order="try-in-$run"
echo "1. India (voice only): publish DriverAssigned for order $in_order"
publish "$in_order" IN +919812345678 +919898765432

echo "2. the customer's app asks which number to show for the driver (it carries voice only)"
answer=$(contacts "$in_order" IN)
echo "$answer"
vn=$(printf '%s' "$answer" | field virtual_number)

echo "3. the customer dials $vn; Exotel asks the webhook, both numbers in national form: connect"
vnctl simulate call --provider exotel --from 09812345678 --to "0${vn#+91}"

echo "4. the customer texts $vn: refused, the number carries no SMS"
vnctl simulate sms --from +919812345678 --to "$vn" --body "at the gate"

echo "5. a stranger dials $vn: asked for a PIN, and never connected without one"
vnctl simulate call --from +919811111111 --to "$vn"

us_order="try-us-$run"
echo "6. the US (voice and SMS): publish DriverAssigned for order $us_order"
publish "$us_order" US +14158675309 +14158675311

echo "7. the customer's app asks which number to show for the driver (voice and SMS)"
answer=$(contacts "$us_order" US)
echo "$answer"
vn=$(printf '%s' "$answer" | field virtual_number)
pin=$(printf '%s' "$answer" | field pin)

echo "8. the customer dials $vn through Twilio: connect"
vnctl simulate call --from +14158675309 --to "$vn"

echo "9. the customer texts $vn: relayed to the driver"
vnctl simulate sms --from +14158675309 --to "$vn" --body "at the gate"

echo "10. the customer calls $vn from a friend's phone and keys in their PIN $pin: connect"
vnctl simulate call --from +14155550123 --to "$vn" --pin "$pin"
