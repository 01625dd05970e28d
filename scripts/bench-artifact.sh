#!/usr/bin/env bash
# Artifact pipeline benchmark: `ferry-agent fetch` (download + SHA-256 + size check + extract) of a ~200 MB tar.gz
# served by nginx on loopback, against the shell baseline `curl -o f && sha256sum -c && tar xzf f -C dir`.
# Prints the best of $RUNS runs of each and the ratio ferry/baseline (goal <= 1.0). See docs/benchmarks.md.
#
# Environment: RUNS (default 3), SIZE_MB (compressed target, default 200), BENCH_DIR (work directory, default a
# new one under /var/tmp, removed afterwards unless KEEP=1; an artifact already in it is reused), SKIP_BUILD=1
# (reuse .build/release/ferry-agent).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-200}
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/ferry-bench-artifact.XXXXXX)}
AGENT="$ROOT/.build/release/ferry-agent"
NGINX_PID=""

cleanup() {
    if [ -n "$NGINX_PID" ]; then
        kill "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

for tool in curl sha256sum tar python3 nginx /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-artifact: $tool is required" >&2; exit 1; }
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== building ferry-agent (release)"
    (cd "$ROOT" && swift build -c release --product ferry-agent 2>&1 | grep -E "error|Compiling|Build complete" | tail -3)
fi
[ -x "$AGENT" ] || { echo "bench-artifact: $AGENT is missing" >&2; exit 1; }

mkdir -p "$WORK/www" "$WORK/nginx/tmp"
chmod 755 "$WORK" "$WORK/www"
ARTIFACT="$WORK/www/artifact.tar.gz"

if [ -f "$ARTIFACT" ]; then
    echo "== reusing $ARTIFACT (from an earlier KEEP=1 run)"
else
mkdir -p "$WORK/src"
echo "== generating ~${SIZE_MB} MB of realistic application content in $WORK/src"
python3 - "$WORK/src" "$SIZE_MB" <<'PY'
# A node_modules-like tree: many JavaScript-like text files (random words from a vocabulary, compressing about
# like real source under gzip) plus incompressible binaries (images, fonts, native modules), sized so the
# tar.gz comes out near the target.
import os, random, sys, zlib
root, target_mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
# Identifiers follow a Zipf law like real code: a few are everywhere, most are rare.
keywords = ["function", "return", "const", "let", "if", "else", "this", "module.exports", "require", "=>", "null",
            "undefined", "async", "await", "new", "typeof", "true", "false", "for", "of"]
identifiers = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(4000)]
vocabulary = keywords + identifiers
weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
punctuation = [" ", " ", " ", "(", ")", ";\n  ", ", ", ".", " = ", " {\n    ", "\n  }\n", "[", "]", "'", " === ", " + "]
words = rng.choices(vocabulary, weights=weights, k=3_000_000)
marks = rng.choices(punctuation, k=3_000_000)
pool = "".join(w + m for w, m in zip(words, marks)).encode()
sample = pool[:4 << 20]
ratio = len(zlib.compress(sample, 6)) / len(sample)
text_total = int(target_mb * (1 << 20) * 0.45 / ratio)
binary_total = int(target_mb * (1 << 20) * 0.55)
files = 0
written = 0
package = 0
while written < text_total:
    package += 1
    directory = os.path.join(root, "node_modules", f"pkg-{package:04d}", rng.choice(["lib", "dist", "src/util", "lib/internal"]))
    os.makedirs(directory, exist_ok=True)
    for index in range(rng.randint(3, 30)):
        size = min(int(rng.lognormvariate(9.3, 1.1)), 400_000)
        start = rng.randrange(0, len(pool) - size)
        with open(os.path.join(directory, f"file{index}.js"), "wb") as handle:
            handle.write(pool[start:start + size])
        files += 1
        written += size
assets = os.path.join(root, "public", "assets")
os.makedirs(assets, exist_ok=True)
binary = 0
index = 0
while binary < binary_total:
    size = min(rng.randint(100_000, 6_000_000), binary_total - binary + 1)
    with open(os.path.join(assets, f"asset{index}.bin"), "wb") as handle:
        handle.write(os.urandom(size))
    index += 1
    files += 1
    binary += size
with open(os.path.join(root, "package.json"), "w") as handle:
    handle.write('{"name": "bench-app", "version": "1.0.0"}\n')
os.makedirs(os.path.join(root, "bin"), exist_ok=True)
with open(os.path.join(root, "bin", "start"), "w") as handle:
    handle.write("#!/bin/sh\nexec node server.js\n")
os.chmod(os.path.join(root, "bin", "start"), 0o755)
os.symlink("../node_modules/pkg-0001", os.path.join(root, "bin", "pkg"))
print(f"   {files} files, {(written + binary) / (1 << 20):.0f} MB uncompressed (text ratio under gzip {ratio:.2f})")
PY

echo "== packing $ARTIFACT (tar czf)"
tar czf "$ARTIFACT.tmp" -C "$WORK/src" .
chmod 644 "$ARTIFACT.tmp"
mv "$ARTIFACT.tmp" "$ARTIFACT"
rm -rf "$WORK/src"
fi
SHA=$(sha256sum "$ARTIFACT" | cut -d' ' -f1)
SIZE=$(stat -c %s "$ARTIFACT")
echo "   $SIZE bytes ($((SIZE / 1048576)) MB), sha256 $SHA"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    server {
        listen 127.0.0.1:$PORT;
        root $WORK/www;
    }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
URL="http://127.0.0.1:$PORT/artifact.tar.gz"
for _ in $(seq 100); do
    curl -sf -o /dev/null -r 0-0 "$URL" && break
    sleep 0.1
done
curl -sf -o /dev/null -r 0-0 "$URL" || { echo "bench-artifact: nginx did not come up" >&2; cat "$WORK/nginx/error.log" >&2; exit 1; }
echo "== nginx (pid $NGINX_PID) serving $URL"

# Each run prints "<wall ms> <cpu ms>" (CPU = user + system of the command and its children, from GNU time):
# on a busy machine wall time is noisy, CPU time much less so.
measure() {
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" "$@" >/dev/null 2>&1 || { echo "bench-artifact: $* failed" >&2; exit 1; }
    python3 -c 'import sys; e, u, s = map(float, open(sys.argv[1]).read().split()[-3:]); print(round(e * 1000), round((u + s) * 1000))' \
        "$WORK/time.txt"
}

run_ferry() {
    rm -rf "$WORK/ferry"
    mkdir -p "$WORK/ferry"
    measure "$AGENT" fetch --url "$URL" --sha256 "$SHA" --size "$SIZE" --out "$WORK/ferry/out" --state-dir "$WORK/ferry/state"
}

run_baseline() {
    rm -rf "$WORK/base"
    mkdir -p "$WORK/base/out"
    measure bash -c 'curl -sSf -o "$1/base/artifact.tar.gz" "$2" && echo "$3  $1/base/artifact.tar.gz" | sha256sum -c --quiet - \
        && tar xzf "$1/base/artifact.tar.gz" -C "$1/base/out"' _ "$WORK" "$URL" "$SHA"
}

ferry_wall=()
ferry_cpu=()
base_wall=()
base_cpu=()
for run in $(seq "$RUNS"); do
    # Interleaved so drift (other load on the machine) hits both sides alike.
    read -r wall cpu < <(run_baseline)
    base_wall+=("$wall")
    base_cpu+=("$cpu")
    read -r wall cpu < <(run_ferry)
    ferry_wall+=("$wall")
    ferry_cpu+=("$cpu")
    echo "   run $run: baseline ${base_wall[-1]} ms (cpu ${base_cpu[-1]} ms), ferry ${ferry_wall[-1]} ms (cpu ${ferry_cpu[-1]} ms)"
done
diff -r "$WORK/base/out" "$WORK/ferry/out" >/dev/null || { echo "bench-artifact: extracted trees differ" >&2; exit 1; }

best() { printf '%s\n' "$@" | sort -n | head -1; }
BASE=$(best "${base_wall[@]}")
FERRY=$(best "${ferry_wall[@]}")
BASE_CPU=$(best "${base_cpu[@]}")
FERRY_CPU=$(best "${ferry_cpu[@]}")
echo
echo "artifact: $((SIZE / 1048576)) MB tar.gz over loopback (nginx), best of $RUNS; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "baseline  curl -o + sha256sum -c + tar xzf : ${BASE} ms wall, ${BASE_CPU} ms cpu"
echo "ferry     ferry-agent fetch                : ${FERRY} ms wall, ${FERRY_CPU} ms cpu"
python3 -c "import sys; f, b, fc, bc = map(int, sys.argv[1:]); print(f'ratio ferry/baseline: {f / b:.2f} wall (goal <= 1.0), {fc / bc:.2f} cpu')" \
    "$FERRY" "$BASE" "$FERRY_CPU" "$BASE_CPU"
