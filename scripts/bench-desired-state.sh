#!/usr/bin/env bash
# Measures the controller's hottest path — an agent polling its desired state and getting 304 Not Modified — against
# nginx serving the same JSON document with its own ETag, on this machine, in the same run, with the same wrk load.
#
#   scripts/bench-desired-state.sh            # builds release, runs both, prints both rates and their ratio
#
# Environment: DURATION (default 10s per run), ROUNDS (3), CONNECTIONS (64), THREADS (2), WARMUP (2s), SKIP_BUILD=1
# (reuse the binary), SCRATCH (build directory, default .build; e.g. .build-release, where scripts/bench-fleet builds).
# Needs: swift, wrk, nginx (Debian nginx-light), curl, python3. Everything runs on 127.0.0.1 from a temporary
# directory that is removed at the end; both servers are stopped by their PIDs.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}

cd "$(dirname "$0")/.."
for tool in wrk nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed (apt-get install wrk nginx-light curl python3)" >&2; exit 1; }
done

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building ferry-controller (release)..." >&2
    swift build -c release --scratch-path "${SCRATCH:-.build}" --product ferry-controller >&2
fi
BIN="${SCRATCH:-.build}/release/ferry-controller"
[[ -x "$BIN" ]] || { echo "error: $BIN not found" >&2; exit 1; }

WORK=$(mktemp -d /tmp/ferry-bench.XXXXXX)
CONTROLLER_PID=""
NGINX_PID=""
cleanup() {
    [[ -n "$CONTROLLER_PID" ]] && kill "$CONTROLLER_PID" 2>/dev/null && wait "$CONTROLLER_PID" 2>/dev/null || true
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

# --- Controller with one agent and one release -------------------------------------------------------------------
"$BIN" keygen --out "$WORK/operator" >/dev/null
OPERATOR_TOKEN=$("$BIN" token create --data-dir "$WORK/data" --role operator --name bench)
ENROLL_TOKEN=$("$BIN" token create --data-dir "$WORK/data" --role enroll --name bench --service api --max-uses 1)
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --trusted-key "$WORK/operator.pub" --log-level warning \
    >"$WORK/controller.out" 2>"$WORK/controller.err" &
CONTROLLER_PID=$!
for _ in $(seq 1 200); do
    grep -q "listening on" "$WORK/controller.out" 2>/dev/null && break
    kill -0 "$CONTROLLER_PID" 2>/dev/null || { cat "$WORK/controller.err" >&2; exit 1; }
    sleep 0.05
done
CONTROLLER_URL=$(sed -n 's/^ferry-controller listening on //p' "$WORK/controller.out")
[[ -n "$CONTROLLER_URL" ]] || { echo "error: the controller did not start" >&2; exit 1; }

mkdir -p "$WORK/app" && echo "require('http').createServer((q, s) => s.end('ok')).listen(3000)" >"$WORK/app/server.js"
tar -czf "$WORK/app.tar.gz" -C "$WORK/app" .
cat >"$WORK/ecosystem.json" <<'EOF'
{"apps": [{"name": "api", "script": "server.js", "instances": 2, "exec_mode": "cluster", "env": {"PORT": 3000}}]}
EOF
"$BIN" publish --controller "$CONTROLLER_URL" --token "$OPERATOR_TOKEN" --key "$WORK/operator.key" --service api \
    --version 1.0.0 --artifact "$WORK/app.tar.gz" --ecosystem "$WORK/ecosystem.json" >/dev/null
ENROLLED=$(curl -sf -X POST -H "Authorization: Bearer $ENROLL_TOKEN" \
    -d '{"name":"bench-1","hostname":"bench-1","services":["api"]}' "$CONTROLLER_URL/v1/agents")
AGENT_ID=$(echo "$ENROLLED" | json_field agentId)
AGENT_TOKEN=$(echo "$ENROLLED" | json_field token)
DESIRED_PATH="/v1/agents/$AGENT_ID/desired-state"
curl -sf -D "$WORK/controller.headers" -o "$WORK/desired-state.json" -H "Authorization: Bearer $AGENT_TOKEN" \
    "$CONTROLLER_URL$DESIRED_PATH"
CONTROLLER_ETAG=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' "$WORK/controller.headers" | tr -d '\r')

# --- nginx serving the same bytes at the same path ----------------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp" "$WORK/www/v1/agents/$AGENT_ID"
cp "$WORK/desired-state.json" "$WORK/www$DESIRED_PATH"
USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user root;"
cat >"$WORK/nginx/nginx.conf" <<EOF
$USER_LINE
daemon off;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        default_type application/json;
        etag on;
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 1 100); do curl -sf -o /dev/null "$NGINX_URL$DESIRED_PATH" && break; sleep 0.05; done
NGINX_ETAG=$(curl -sf -D - -o /dev/null "$NGINX_URL$DESIRED_PATH" | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tr -d '\r')

# Both must answer 304 to the request wrk will send, or the comparison means nothing.
check_304() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AGENT_TOKEN" -H "If-None-Match: $2" "$1")
    [[ "$code" == 304 ]] || { echo "error: $1 answered $code, not 304" >&2; exit 1; }
}
check_304 "$CONTROLLER_URL$DESIRED_PATH" "$CONTROLLER_ETAG"
check_304 "$NGINX_URL$DESIRED_PATH" "$NGINX_ETAG"

run_wrk() { # url etag duration -> requests/sec
    local output
    output=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" -H "Authorization: Bearer $AGENT_TOKEN" -H "If-None-Match: $2" "$1")
    if grep -q "Non-2xx or 3xx" <<<"$output"; then echo "error: wrk saw errors against $1:" >&2; echo "$output" >&2; exit 1; fi
    awk '/^Requests\/sec:/ {print $2}' <<<"$output"
}

echo "desired state: $(wc -c <"$WORK/desired-state.json") bytes; wrk -t$THREADS -c$CONNECTIONS -d$DURATION x $ROUNDS rounds, If-None-Match → 304" >&2
run_wrk "$CONTROLLER_URL$DESIRED_PATH" "$CONTROLLER_ETAG" "$WARMUP" >/dev/null
run_wrk "$NGINX_URL$DESIRED_PATH" "$NGINX_ETAG" "$WARMUP" >/dev/null
# Alternate the two servers in rounds so a change in machine load hits both, and report the median round.
CONTROLLER_RATES=()
NGINX_RATES=()
for round in $(seq 1 "$ROUNDS"); do
    CONTROLLER_RATES+=("$(run_wrk "$CONTROLLER_URL$DESIRED_PATH" "$CONTROLLER_ETAG" "$DURATION")")
    NGINX_RATES+=("$(run_wrk "$NGINX_URL$DESIRED_PATH" "$NGINX_ETAG" "$DURATION")")
    echo "round $round: controller ${CONTROLLER_RATES[-1]} req/s, nginx ${NGINX_RATES[-1]} req/s" >&2
done
# Which path answered: the 304s given from the raw bytes before the HTTP decoder (DesiredStateFastPath) among all.
curl -sf "$CONTROLLER_URL/metrics" | awk '
    /^ferry_desired_state_responses_total\{code="304"\}/ { total = $2 }
    /^ferry_desired_state_fast_path_answers_total / { fast = $2 }
    END { printf "controller 304s answered before the HTTP decoder: %d of %d\n", fast, total }' >&2
# For context: the same server's cheapest route (no token, no state), i.e. what the HTTP stack alone costs.
FLOOR_RATE=$(run_wrk "$CONTROLLER_URL/healthz" "none" "$DURATION")

python3 - "$FLOOR_RATE" "${CONTROLLER_RATES[*]}" "${NGINX_RATES[*]}" <<'EOF'
import statistics, sys
floor = float(sys.argv[1])
controller = [float(value) for value in sys.argv[2].split()]
nginx = [float(value) for value in sys.argv[3].split()]
ratios = [c / n for c, n in zip(controller, nginx)]
print(f"ferry-controller 304 desired-state: {statistics.median(controller):12.0f} req/s (median of {len(controller)})")
print(f"nginx 304 static file (same JSON):  {statistics.median(nginx):12.0f} req/s (median of {len(nginx)})")
print(f"ratio controller/nginx:             {statistics.median(ratios):12.2f}  (median round; goal >= 0.60)")
print(f"(context: ferry-controller GET /healthz {floor:.0f} req/s, the HTTP stack with a trivial handler)")
EOF
