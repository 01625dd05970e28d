#!/usr/bin/env bash
# Agent idle footprint benchmark: the resident memory of `ferry-agent run` after 100 polls of an unchanged desired
# state, and its CPU over a further minute of idle polling (one poll a second, no long-poll), each against a
# baseline measured in the same run: a minimal C program polling the desired state of an agent of its own (same
# service, same document, a token of its own) with If-None-Match through libcurl once a second. The goal is agent
# RSS <= 15 MB. The builtin supervisor daemon (started by the agent, running the one app) and the app itself are
# separate processes, reported apart. See docs/benchmarks.md.
#
# Environment: POLLS (before measuring, default 100), WINDOW (seconds of CPU measurement, default 60), BENCH_DIR
# (work directory, default a new one under /var/tmp, removed afterwards unless KEEP=1), SKIP_BUILD=1 (reuse the
# release binaries), STATIC_STDLIB=1 (build with --static-swift-stdlib into .build-static instead of .build),
# AGENT_BIN (measure this ferry-agent binary instead of the built one, e.g. a copy built another way), SCRATCH (build
# directory, default .build; e.g. .build-release, where scripts/bench-fleet builds), PM2 (a pm2 binary, e.g.
# "$(scripts/real-pm2)": the agent then runs the app under that PM2, in a private PM2_HOME, instead of the builtin
# supervisor; the agent's CPU always includes the commands it ran, such as `pm2 jlist`), DEPLOYED=1 (the agent as
# deployed: the controller's and the agent's default intervals, 30 s long-polls, a report every 30 s, drift checks
# every 5 s, instead of a plain poll every second; POLLS then defaults to 2, and the baseline makes the same 30 s
# long-polls, `?wait=30` with If-None-Match and no pause between them, so the ratio compares the same requests).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOYED=${DEPLOYED:-0}
if [ "$DEPLOYED" = 1 ]; then POLLS=${POLLS:-2}; else POLLS=${POLLS:-100}; fi
WINDOW=${WINDOW:-60}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/ferry-bench-idle.XXXXXX)}
BUILD_ARGS=(-c release)
SCRATCH=${SCRATCH:-$ROOT/.build}
LABEL="release build"
if [ "${STATIC_STDLIB:-0}" = 1 ]; then
    SCRATCH="$ROOT/.build-static"
    BUILD_ARGS+=(--static-swift-stdlib)
    LABEL="release build, --static-swift-stdlib"
fi
BUILD_ARGS+=(--scratch-path "$SCRATCH")
BIN="$SCRATCH/release"
if [ -n "${AGENT_BIN:-}" ]; then LABEL="agent binary given by AGENT_BIN"; fi
AGENT_BIN=${AGENT_BIN:-$BIN/ferry-agent}
PIDS=()
SUPERVISOR_HOME=""
PM2=${PM2:-}
PM2_HOME_DIR=""

cleanup() {
    local pid
    # Everything this script started, by pid, newest first; then the supervisor daemon the agent started.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$SUPERVISOR_HOME" ] && [ -S "$SUPERVISOR_HOME/supervisor.sock" ]; then
        "$AGENT_BIN" supervisor --stop --home "$SUPERVISOR_HOME" >/dev/null 2>&1 || true
    fi
    # The private PM2 daemon (and its app), by its own home only.
    if [ -n "$PM2_HOME_DIR" ] && [ -e "$PM2_HOME_DIR/pm2.pid" ]; then
        PM2_HOME="$PM2_HOME_DIR" "$PM2" kill >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

for tool in curl gcc python3 tar node; do
    command -v "$tool" >/dev/null || { echo "bench-agent-idle: $tool is required" >&2; exit 1; }
done
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] \
    || { echo "bench-agent-idle: libcurl headers are required (libcurl4-openssl-dev)" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== building ferry-controller and ferry-agent ($LABEL)"
    for product in ferry-controller ferry-agent; do
        (cd "$ROOT" && swift build "${BUILD_ARGS[@]}" --product "$product" 2>&1 | grep -E "error|complete" | tail -3)
    done
fi
for binary in "$BIN/ferry-controller" "$AGENT_BIN"; do
    [ -x "$binary" ] || { echo "bench-agent-idle: $binary is missing" >&2; exit 1; }
done

# --- Helpers ------------------------------------------------------------------------------------------------------
# `wait_for SECONDS DESCRIPTION COMMAND...`: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        if [ $SECONDS -ge $deadline ]; then echo "bench-agent-idle: timed out waiting for $what" >&2; exit 1; fi
        sleep 0.2
    done
}

status_kb() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
# utime + stime in clock ticks, all threads, dead ones included (fields 14 and 15 of /proc/PID/stat), plus cutime +
# cstime (16 and 17): the children it waited for, such as the `pm2` commands it runs.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat"; }
# On-CPU nanoseconds summed over the live threads (/proc/PID/task/*/schedstat): finer than ticks.
# A thread may end between the glob and the read (the agent runs each supervisor call on a thread of its own): cat
# then fails, which must not end the script (pipefail).
cpu_ns() { { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{ sum += $1 } END { printf "%.0f", sum }'; }
polls() {
    curl -fsS "$URL/metrics" | awk '/^ferry_desired_state_responses_total/ { sum += $NF } END { print sum + 0 }'
}
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# --- Controller ---------------------------------------------------------------------------------------------------
echo "== controller"
mkdir -p "$WORK/controller" "$WORK/agent" "$WORK/app"
"$BIN/ferry-controller" keygen --out "$WORK/op" >/dev/null
# The agent polls as often as the controller tells it (pollSeconds): once a second here, unless DEPLOYED=1.
POLL_ARGS=(--poll-seconds 1)
if [ "$DEPLOYED" = 1 ]; then POLL_ARGS=(); fi
"$BIN/ferry-controller" serve --listen 127.0.0.1:0 --data-dir "$WORK/controller" --trusted-key "$WORK/op.pub" \
    "${POLL_ARGS[@]}" --log-level warning >"$WORK/controller.log" 2>&1 &
PIDS+=($!)
wait_for 30 "the controller to listen" grep -q "listening on http://" "$WORK/controller.log"
URL=$(sed -n 's/^ferry-controller listening on \(http:[^ ]*\)$/\1/p' "$WORK/controller.log" | head -1)
OPERATOR=$("$BIN/ferry-controller" token create --data-dir "$WORK/controller" --role operator --name bench)
ENROLL=$("$BIN/ferry-controller" token create --data-dir "$WORK/controller" --role enroll --service idle --max-uses 2)
echo "   $URL"

# --- One small release: an idle node app --------------------------------------------------------------------------
cat >"$WORK/app/server.js" <<'JS'
// Idle on purpose: the benchmark measures the agent, not the app.
setInterval(() => {}, 1 << 30);
JS
tar czf "$WORK/app.tgz" -C "$WORK/app" .
curl -fsS -X POST -H "Authorization: Bearer $OPERATOR" --data-binary "@$WORK/app.tgz" "$URL/v1/artifacts" >"$WORK/artifact.json"
python3 - "$WORK/artifact.json" >"$WORK/release.json" <<'PY'
import datetime, json, sys
artifact = json.load(open(sys.argv[1]))
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({
    "service": "idle", "serial": 1, "version": "1.0.0",
    "createdAt": stamp(now), "expiresAt": stamp(now + datetime.timedelta(days=1)),
    "artifact": {"url": artifact["url"], "sha256": artifact["sha256"], "size": artifact["size"]},
    "pm2": {"apps": [{"name": "idle", "script": "server.js"}]},
    "health": {"deadlineSeconds": 30, "stableSeconds": 2},
}))
PY
"$BIN/ferry-controller" sign --key "$WORK/op.key" "$WORK/release.json" >"$WORK/release.envelope.json"
curl -fsS -X POST -H "Authorization: Bearer $OPERATOR" -H "Content-Type: application/json" \
    --data-binary "@$WORK/release.envelope.json" "$URL/v1/releases" >/dev/null
echo "   published idle 1.0.0"

# --- Agent --------------------------------------------------------------------------------------------------------
echo "== agent"
STATE="$WORK/agent/state"
if [ -n "$PM2" ]; then
    PM2_HOME_DIR="$WORK/pm2home"
    MANAGER=(--process-manager pm2 --pm2 "$PM2" --pm2-home "$PM2_HOME_DIR")
    # The version from PM2's package.json: `pm2 --version` starts a daemon in the default PM2_HOME (~/.pm2).
    PM2_VERSION=$(node -p 'require(process.argv[1]).version' "$(dirname "$(readlink -f "$PM2")")/../package.json" 2>/dev/null ||
        echo unknown)
    echo "   process manager: PM2 $PM2_VERSION ($PM2, PM2_HOME $PM2_HOME_DIR)"
else
    SUPERVISOR_HOME="$STATE/supervisor"
    MANAGER=(--process-manager builtin)
fi
"$AGENT_BIN" enroll --controller "$URL" --token "$ENROLL" --config "$WORK/agent/agent.json" --service idle \
    --trusted-key "$WORK/op.pub" --state-dir "$STATE" --env-dir "$WORK/agent/env" "${MANAGER[@]}" \
    "${POLL_ARGS[@]}" --name bench >/dev/null
if [ "$DEPLOYED" = 1 ]; then
    echo "   as deployed: default intervals (30 s long-polls, reports every 30 s, drift checks every 5 s)"
else
    # No long-poll: one request a second, the most polling an agent does.
    sed -i 's/"longPollSeconds":30/"longPollSeconds":0/' "$WORK/agent/agent.json"
    grep -q '"longPollSeconds":0' "$WORK/agent/agent.json" || { echo "bench-agent-idle: could not set longPollSeconds" >&2; exit 1; }
fi
# The baseline polls as an agent of its own. Sharing the agent's identity is fine for plain polls, but the controller
# parks one long-poll per agent, and a second one ends the first: with DEPLOYED=1 the two would end each other's
# long-polls in turn and neither would wait 30 s.
"$AGENT_BIN" enroll --controller "$URL" --token "$ENROLL" --config "$WORK/baseline/agent.json" --service idle \
    --trusted-key "$WORK/op.pub" --state-dir "$WORK/baseline/state" --env-dir "$WORK/baseline/env" \
    --process-manager builtin --name bench-baseline >/dev/null
BASELINE_ID=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["agentId"])' "$WORK/baseline/agent.json")
BASELINE_TOKEN=$(tr -d '\n' <"$WORK/baseline/state/agent.token")

# The runtime switches (FERRY_EXECUTOR, FERRY_CODE_PAGES; docs/agent.md) pass through when set, for A/B runs.
SWITCHES=()
for name in FERRY_EXECUTOR FERRY_CODE_PAGES; do
    if [ -n "${!name+set}" ]; then SWITCHES+=("$name=${!name}"); fi
done
env -i PATH="$(dirname "$(command -v node)"):/usr/local/bin:/usr/bin:/bin" HOME="$WORK/agent" FERRY_LOG_LEVEL=info \
    ${SWITCHES[@]+"${SWITCHES[@]}"} "$AGENT_BIN" run --config "$WORK/agent/agent.json" >"$WORK/agent.log" 2>&1 &
AGENT=$!
PIDS+=("$AGENT")
app_running() { curl -fsS -H "Authorization: Bearer $OPERATOR" "$URL/v1/fleet" | grep -q '"phase":"running"'; }
wait_for 90 "the release to be running" app_running
start=$(polls)
echo "   release running after $start polls; waiting for $POLLS polls"
enough_polls() { [ "$(polls)" -ge "$POLLS" ]; }
wait_for $((POLLS * (DEPLOYED == 1 ? 35 : 3) + 30)) "$POLLS polls" enough_polls
AGENT_RSS_100=$(status_kb "$AGENT" VmRSS)

# --- Baseline: libcurl polling the same URL once a second (DEPLOYED=1: long-polling it as the agent does) --------
cat >"$WORK/poll.c" <<'C'
/* The least a poller can do: one reused libcurl handle, GET with the agent token and If-None-Match, once a second;
   with WAIT > 0, a long-poll of WAIT seconds (`?wait=WAIT`, what the agent sends) after another, with no pause. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char etag[256];

static size_t body(char *data, size_t size, size_t count, void *user) { (void)data; (void)user; return size * count; }

static size_t header(char *data, size_t size, size_t count, void *user) {
    size_t length = size * count;
    (void)user;
    if (length > 6 && strncasecmp(data, "etag: ", 6) == 0 && length - 6 < sizeof etag) {
        memcpy(etag, data + 6, length - 6);
        etag[length - 6] = 0;
        etag[strcspn(etag, "\r\n")] = 0;
    }
    return length;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: poll URL TOKEN WAIT\n"); return 2; }
    char authorization[512], condition[300], url[1024];
    long wait = atol(argv[3]);
    snprintf(authorization, sizeof authorization, "Authorization: Bearer %s", argv[2]);
    if (wait > 0) snprintf(url, sizeof url, "%s?wait=%ld", argv[1], wait);
    else snprintf(url, sizeof url, "%s", argv[1]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (wait > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT, wait + 15);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, header);
    for (;;) {
        struct curl_slist *headers = curl_slist_append(NULL, authorization);
        if (etag[0]) {
            snprintf(condition, sizeof condition, "If-None-Match: %s", etag);
            headers = curl_slist_append(headers, condition);
        }
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        CURLcode code = curl_easy_perform(curl);
        if (code != CURLE_OK) fprintf(stderr, "poll: %s\n", curl_easy_strerror(code));
        curl_slist_free_all(headers);
        if (wait == 0 || code != CURLE_OK) sleep(1);
    }
}
C
gcc -O2 -o "$WORK/poll" "$WORK/poll.c" -lcurl
BASELINE_WAIT=0
if [ "$DEPLOYED" = 1 ]; then BASELINE_WAIT=30; fi
"$WORK/poll" "$URL/v1/agents/$BASELINE_ID/desired-state" "$BASELINE_TOKEN" "$BASELINE_WAIT" 2>"$WORK/poll.log" &
BASELINE=$!
PIDS+=("$BASELINE")
sleep 5 # a few polls: past its first (full) answer and into 304s, like the agent

# --- Measurement window -------------------------------------------------------------------------------------------
echo "== measuring $WINDOW s of idle polling"
TCK=$(getconf CLK_TCK)
if [ -n "$PM2" ]; then MANAGER_PID=$(cat "$PM2_HOME_DIR/pm2.pid"); else MANAGER_PID=$(cat "$SUPERVISOR_HOME/supervisor.pid"); fi
m_ticks0=$(cpu_ticks "$MANAGER_PID")
a_ticks0=$(cpu_ticks "$AGENT"); a_ns0=$(cpu_ns "$AGENT")
b_ticks0=$(cpu_ticks "$BASELINE"); b_ns0=$(cpu_ns "$BASELINE")
polls0=$(polls)
sleep "$WINDOW"
a_ticks1=$(cpu_ticks "$AGENT"); a_ns1=$(cpu_ns "$AGENT")
m_ticks1=$(cpu_ticks "$MANAGER_PID")
b_ticks1=$(cpu_ticks "$BASELINE"); b_ns1=$(cpu_ns "$BASELINE")
polls1=$(polls)

AGENT_RSS=$(status_kb "$AGENT" VmRSS)
AGENT_HWM=$(status_kb "$AGENT" VmHWM)
AGENT_ANON=$(status_kb "$AGENT" RssAnon)
AGENT_FILE=$(status_kb "$AGENT" RssFile)
AGENT_THREADS=$(status_kb "$AGENT" Threads)
# PSS shares each page among the processes mapping it (the supervisor daemon maps the same binary and libraries);
# USS is what exiting the agent would give back.
AGENT_PSS=$(awk '/^Pss:/ { print $2 }' "/proc/$AGENT/smaps_rollup")
AGENT_USS=$(awk '/^Private_(Clean|Dirty):/ { sum += $2 } END { print sum }' "/proc/$AGENT/smaps_rollup")
BASE_RSS=$(status_kb "$BASELINE" VmRSS)
SUP_RSS=$(status_kb "$MANAGER_PID" VmRSS)
APP=$(pgrep -P "$MANAGER_PID" | head -1 || true)
APP_RSS=0
if [ -n "$APP" ]; then APP_RSS=$(status_kb "$APP" VmRSS); fi

# CPU time in the window, in ms. The agent's threads come and go (a supervisor call runs on a thread of its own), and
# schedstat only covers live threads: its figure is utime+stime from /proc/PID/stat (every thread, exited ones
# included, in 10 ms ticks), with the children it waited for. The baseline is one thread: /proc/PID/schedstat counts
# it to the nanosecond.
A_MS=$(awk -v t=$((a_ticks1 - a_ticks0)) -v tck="$TCK" 'BEGIN { printf "%.0f", t * 1000 / tck }')
M_MS=$(awk -v t=$((m_ticks1 - m_ticks0)) -v tck="$TCK" 'BEGIN { printf "%.0f", t * 1000 / tck }')
B_MS=$(awk -v n=$((b_ns1 - b_ns0)) 'BEGIN { printf "%.1f", n / 1e6 }')
A_LIVE_MS=$(awk -v n=$((a_ns1 - a_ns0)) 'BEGIN { printf "%.1f", n / 1e6 }')
B_TICKS_MS=$(awk -v t=$((b_ticks1 - b_ticks0)) -v tck="$TCK" 'BEGIN { printf "%.0f", t * 1000 / tck }')
pct() { awk -v ms="$1" -v w="$WINDOW" 'BEGIN { printf "%.3f", ms / 10 / w }'; }

# What the agent's resident pages are: the biggest mappings, by file (anonymous memory as "[anon]").
awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6 ? $6 : "[anon]") } /^Rss:/ { rss[name] += $2 }
    END { for (n in rss) if (rss[n] >= 256) printf "%8.1f MB  %s\n", rss[n] / 1024, n }' "/proc/$AGENT/smaps" \
    | sort -rn | head -12 >"$WORK/agent-mappings.txt"
# The executable's resident pages by the permissions of their mapping: read-only data, code, written data.
AGENT_EXE=$(readlink "/proc/$AGENT/exe")
EXE_BY_PERMS=$(awk -v exe="$AGENT_EXE" '/^[0-9a-f]+-[0-9a-f]+ / { p = ($6 == exe ? $2 : "") }
    /^Rss:/ && p != "" { rss[p] += $2 } END { for (k in rss) printf "%s %.1f MB, ", k, rss[k] / 1024 }' "/proc/$AGENT/smaps")

echo
echo "== results (ferry-agent $("$AGENT_BIN" --version): $AGENT_BIN, $LABEL)"
echo "polls during the window: $((polls1 - polls0)) (agent + baseline, ${WINDOW} s)"
printf '%-34s %10s %10s %8s\n' "" agent baseline ratio
printf '%-34s %10s %10s %8s\n' "RSS after $POLLS polls (MB)" "$(mb "$AGENT_RSS_100")" "" ""
printf '%-34s %10s %10s %8s\n' "RSS after the window (MB)" "$(mb "$AGENT_RSS")" "$(mb "$BASE_RSS")" "$(ratio "$AGENT_RSS" "$BASE_RSS")"
printf '%-34s %10s %10s %8s\n' "CPU time in the window (ms)" "$A_MS" "$B_MS" "$(ratio "$A_MS" "$B_MS")"
printf '%-34s %10s %10s %8s\n' "CPU (% of one core)" "$(pct "$A_MS")" "$(pct "$B_MS")" "$(ratio "$A_MS" "$B_MS")"
echo "cross-checks: agent live threads by schedstat $A_LIVE_MS ms (misses exited transfer threads); baseline by ticks $B_TICKS_MS ms"
echo "agent: peak RSS $(mb "$AGENT_HWM") MB, anonymous $(mb "$AGENT_ANON") MB, file-backed $(mb "$AGENT_FILE") MB," \
    "PSS $(mb "$AGENT_PSS") MB, USS $(mb "$AGENT_USS") MB, $AGENT_THREADS threads"
if [ -n "$PM2" ]; then MANAGER_NAME="PM2 daemon"; else MANAGER_NAME="supervisor daemon"; fi
echo "not the agent: $MANAGER_NAME RSS $(mb "$SUP_RSS") MB (pid $MANAGER_PID), CPU in the window $M_MS ms;" \
    "idle node app RSS $(mb "$APP_RSS") MB"
echo "switches: ${SWITCHES[*]:-none}; the executable's resident pages by mapping: ${EXE_BY_PERMS%, }"
echo "agent's largest resident mappings:"
cat "$WORK/agent-mappings.txt"
if [ "$AGENT_RSS" -le $((15 * 1024)) ]; then
    echo "goal agent RSS <= 15 MB: met ($(mb "$AGENT_RSS") MB)"
else
    echo "goal agent RSS <= 15 MB: NOT met ($(mb "$AGENT_RSS") MB)"
fi
