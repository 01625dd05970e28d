#!/usr/bin/env bash
# Artifact pipeline benchmark: `ferry-agent fetch` (download + SHA-256 + size check + extract) of a ~200 MB tar.gz
# served by nginx on loopback, against the shell baseline `curl -o f && sha256sum -c && tar xzf f -C dir`.
# Prints the best of $RUNS runs of each and the ratio ferry/baseline (goal <= 1.0). See docs/benchmarks.md.
#
# Environment: RUNS (default 3), SIZE_MB (compressed target, default 200), BENCH_DIR (work directory, default a
# new one under /var/tmp, removed afterwards unless KEEP=1), SKIP_BUILD=1 (reuse .build/release/ferry-agent).
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

for tool in curl sha256sum tar python3 nginx; do
    command -v "$tool" >/dev/null || { echo "bench-artifact: $tool is required" >&2; exit 1; }
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== building ferry-agent (release)"
    (cd "$ROOT" && swift build -c release --product ferry-agent 2>&1 | grep -E "error|Compiling|Build complete" | tail -3)
fi
[ -x "$AGENT" ] || { echo "bench-artifact: $AGENT is missing" >&2; exit 1; }

mkdir -p "$WORK/src" "$WORK/www" "$WORK/nginx/tmp"
chmod 755 "$WORK" "$WORK/www"

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

ARTIFACT="$WORK/www/artifact.tar.gz"
echo "== packing $ARTIFACT (tar czf)"
tar czf "$ARTIFACT" -C "$WORK/src" .
chmod 644 "$ARTIFACT"
rm -rf "$WORK/src"
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

now() { date +%s%N; }

run_ferry() {
    rm -rf "$WORK/ferry"
    mkdir -p "$WORK/ferry"
    local start end
    start=$(now)
    "$AGENT" fetch --url "$URL" --sha256 "$SHA" --size "$SIZE" --out "$WORK/ferry/out" --state-dir "$WORK/ferry/state" >/dev/null 2>&1
    end=$(now)
    echo $(( (end - start) / 1000000 ))
}

run_baseline() {
    rm -rf "$WORK/base"
    mkdir -p "$WORK/base/out"
    local start end
    start=$(now)
    curl -sSf -o "$WORK/base/artifact.tar.gz" "$URL" \
        && echo "$SHA  $WORK/base/artifact.tar.gz" | sha256sum -c --quiet - \
        && tar xzf "$WORK/base/artifact.tar.gz" -C "$WORK/base/out"
    end=$(now)
    echo $(( (end - start) / 1000000 ))
}

ferry_times=()
base_times=()
for run in $(seq "$RUNS"); do
    # Interleaved so drift (other load on the machine) hits both sides alike.
    base_times+=("$(run_baseline)")
    ferry_times+=("$(run_ferry)")
    echo "   run $run: baseline ${base_times[-1]} ms, ferry ${ferry_times[-1]} ms"
done
diff -r "$WORK/base/out" "$WORK/ferry/out" >/dev/null || { echo "bench-artifact: extracted trees differ" >&2; exit 1; }

best() { printf '%s\n' "$@" | sort -n | head -1; }
BASE=$(best "${base_times[@]}")
FERRY=$(best "${ferry_times[@]}")
echo
echo "artifact: $((SIZE / 1048576)) MB tar.gz over loopback (nginx), best of $RUNS"
echo "baseline  curl -o + sha256sum -c + tar xzf : ${BASE} ms"
echo "ferry     ferry-agent fetch                : ${FERRY} ms"
python3 -c "import sys; print(f'ratio ferry/baseline: {int(sys.argv[1]) / int(sys.argv[2]):.2f} (goal <= 1.0)')" "$FERRY" "$BASE"
