#!/usr/bin/env bash
# Throughput and memory through the dry-run backend, measured with Postfix's
# smtp-source load generator (Debian package `postfix`).
#
#   bench/smtp-source.sh            # 2000 messages of 2 KB over 10 sessions
#   N=5000 S=20 L=8192 bench/smtp-source.sh
#
# Prints: accepted messages/s (each one fsynced before its 250), end-to-end
# messages/s (until every dry-run request file is written), peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v smtp-source >/dev/null || { echo "install smtp-source: apt-get install postfix" >&2; exit 1; }
N=${N:-2000} S=${S:-10} L=${L:-2048} PORT=${PORT:-12599}

cargo build --release --quiet
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
POSTRELAY_SPOOL__DIR="$dir/spool" POSTRELAY_SMTP__LISTEN="127.0.0.1:$PORT" \
POSTRELAY_DELIVERY__RATE_LIMIT=0 POSTRELAY_LOG__LEVEL=warn \
  target/release/postrelay serve 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

start=$(date +%s.%N)
smtp-source -s "$S" -m "$N" -l "$L" -f bench@example.com -t rcpt@example.org "127.0.0.1:$PORT"
accepted=$(date +%s.%N)
deadline=$((SECONDS + 120))
while [ "$(find "$dir/spool/dry-run" -name '*.json' | wc -l)" -lt "$N" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "not all messages delivered" >&2; exit 1; }
  sleep 0.05
done
done_at=$(date +%s.%N)
peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

awk -v n="$N" -v s="$start" -v a="$accepted" -v d="$done_at" -v p="$peak" -v l="$L" -v c="$S" 'BEGIN {
  printf "messages: %d x %d bytes over %d sessions\n", n, l, c
  printf "accepted: %.0f msg/s (%.2f s)\n", n / (a - s), a - s
  printf "delivered (dry-run): %.0f msg/s (%.2f s)\n", n / (d - s), d - s
  printf "peak RSS: %.1f MB\n", p / 1024
}'
