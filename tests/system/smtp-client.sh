#!/usr/bin/env bash
# A minimal SMTP client on bash's /dev/tcp, for the system tests (the
# container image has no other client, and the tests run it inside the
# container's network namespace with nsenter):
#
#   smtp-client.sh HOST PORT greeting           # prints the 220 line
#   smtp-client.sh HOST PORT send SUBJECT       # one message, prints the DATA reply
#   smtp-client.sh HOST PORT send-split SUBJECT -- COMMAND...
#       # the same, but runs COMMAND after the first half of the body and
#       # sends the rest (and the final dot) only when COMMAND succeeded
#
# Every reply line read is printed with "S: "; an unexpected reply code, or
# none within 15 seconds, exits 1.
set -euo pipefail

host=$1 port=$2 mode=$3
shift 3

exec 3<>"/dev/tcp/$host/$port"

# expect CODES: reads one reply (all its lines), fails unless its code is
# one of CODES ("250", "221|421").
expect() {
    local line
    while true; do
        IFS= read -r -t 15 line <&3 || {
            echo "no reply (expected $1)" >&2
            return 1
        }
        line=${line%$'\r'}
        echo "S: $line"
        [ "${line:3:1}" = "-" ] && continue
        [[ "${line:0:3}" =~ ^($1)$ ]] || {
            echo "expected $1" >&2
            return 1
        }
        return 0
    done
}

say() { printf '%s\r\n' "$@" >&3; }

expect 220
case "$mode" in
greeting)
    say "QUIT"
    expect 221
    ;;
send | send-split)
    subject=$1
    shift
    say "EHLO smoke.test"
    expect 250
    say "MAIL FROM:<app@example.com>"
    expect 250
    say "RCPT TO:<user@example.org>"
    expect 250
    say "DATA"
    expect 354
    say "From: app@example.com" "To: user@example.org" "Subject: $subject" "" \
        "first half of the body"
    if [ "$mode" = send-split ]; then
        [ "${1:-}" = "--" ] && shift
        "$@" || {
            echo "the command between the halves failed" >&2
            exit 1
        }
    fi
    say "second half of the body" "."
    expect 250
    say "QUIT"
    expect "221|421" # 421: the server is draining
    ;;
*)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
