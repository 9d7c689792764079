#!/usr/bin/env bash
# The container image, built and tried with Debian's podman, offline apart
# from Debian's archive (shared/reference/containers.md): a debootstrap
# bookworm base imported as debian:bookworm-slim, the Dockerfile's final
# stage built with the binary built here in place of the builder stage's,
# then run with the spool bind-mounted. Checks: the daemon runs as a
# non-root uid, greets with 220, a message lands in the dry-run output on
# the volume, the HEALTHCHECK passes, `podman stop` lets an open
# transaction finish (250, then exit 0), and the restarted container
# delivers what was drained.
#
# Runs as root. podman's storage, its configuration and the base root all
# live in one work directory that is removed at the end; only the base
# root's tarball is cached (target/system/).
#   tests/system/image-smoke.sh            # prints "image: N passed, N failed"
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root_and podman runc debootstrap nsenter
cd "$REPO_ROOT"

make_work postrelay-image
NAME=postrelay-smoke
IMAGE=localhost/postrelay:smoke
export CONTAINERS_CONF="$WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
cgroupns = "host"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/graph"
runroot = "$WORK/run"
EOF
# Only what this test made; remove_work then unmounts what is left under
# the work directory (the storage is there) and deletes it.
podman_cleanup() {
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    podman rmi -a -f >/dev/null 2>&1 || true
}
CLEANUP_HOOK=podman_cleanup

echo "== build"
cargo build --release --locked || fatal "cargo build --release"
mkdir "$WORK/base"
tar -C "$WORK/base" -xf "$(rootfs_tarball)" || fatal "base root"
tar --numeric-owner -C "$WORK/base" -c . |
    podman import - localhost/debian:bookworm-slim >/dev/null 2>"$WORK/podman.err" ||
    fatal "podman import: $(cat "$WORK/podman.err")"
rm -rf --one-file-system "$WORK/base"

# The final stage as written, with the host's binary copied in place of the
# builder stage's (whose rust image cannot be pulled here).
mkdir "$WORK/context"
cp target/release/postrelay "$WORK/context/postrelay"
awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' Dockerfile |
    sed 's|^COPY --from=builder /usr/local/bin/postrelay |COPY postrelay |' \
        >"$WORK/context/Containerfile"
grep -q '^COPY postrelay /usr/local/bin/postrelay$' "$WORK/context/Containerfile" ||
    fatal "the final stage no longer copies /usr/local/bin/postrelay from the builder"
build_image() {
    podman build --format docker --network host --pull=never -q -t "$IMAGE" \
        -f "$WORK/context/Containerfile" "$WORK/context" >"$WORK/build.log" 2>&1
}
check "the final stage builds" build_image
healthcheck_kept() { podman image inspect "$IMAGE" --format '{{.Config.Healthcheck}}' | grep -q healthz; }
check "the image keeps its HEALTHCHECK" healthcheck_kept
uid=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
uid=${uid%%:*}

echo "== run"
# A bind-mounted spool must belong to the image's uid (the daemon refuses
# a spool owned by anyone else).
install -d -m 0700 -o "$uid" -g "$uid" "$WORK/spool"
podman run -d --name "$NAME" --network none --stop-timeout 40 \
    -v "$WORK/spool:/var/spool/postrelay" "$IMAGE" >/dev/null 2>"$WORK/podman.err" ||
    fatal "podman run: $(cat "$WORK/podman.err")"
pid=$(podman inspect "$NAME" --format '{{.State.Pid}}')
client() { nsenter -t "$pid" -n -- bash "$SYSTEM_TESTS_DIR/smtp-client.sh" 127.0.0.1 2525 "$@"; }
greets() { client greeting >"$WORK/greeting.log" 2>&1; }
check "the SMTP greeting is 220" poll 10 greets
sed 's/^/  /' "$WORK/greeting.log"
runs_as() { [ "$(stat -c %u "/proc/$pid")" = "$uid" ] && [ "$uid" != 0 ]; }
check "the daemon runs as uid $uid, not root" runs_as

# dry_run_has SUBJECT: a request file on the volume carries the subject.
dry_run_has() { grep -qsE "\"Subject\": ?\"$1\"" "$WORK"/spool/dry-run/*.json; }
send_one() { client send "smoke one" >"$WORK/send.log" 2>&1; }
check "a message is accepted" send_one
check "it lands in the dry-run output on the volume" poll 10 dry_run_has "smoke one"
# A local program in the container, as another uid: `postrelay sendmail`.
exec_sendmail() {
    printf 'Subject: smoke sendmail\n\nfrom a local program\n' |
        podman exec -i --user 65534:65534 "$NAME" \
            /usr/local/bin/postrelay sendmail -f app@example.com user@example.org
}
check "sendmail in the container, run as another uid, is accepted" exec_sendmail
check "its message lands in the dry-run output" poll 10 dry_run_has "smoke sendmail"
healthy() { podman healthcheck run "$NAME" >/dev/null 2>&1; }
check "the HEALTHCHECK passes" poll 15 healthy

echo "== stop drains an open transaction"
# Between the two halves of the body: `podman stop` (SIGTERM), and wait
# until the daemon says it is draining.
# The client runs it in its own bash: exported.
stop_now() {
    podman stop -t 40 "$NAME" >"$WORK/stop.log" 2>&1 &
    poll 10 sh -c "podman logs '$NAME' 2>&1 | grep -q 'draining'"
}
export NAME WORK
export -f stop_now poll
send_while_stopping() { client send-split "smoke drained" -- stop_now >"$WORK/drain.log" 2>&1; }
check "the transaction open at stop ends in 250" send_while_stopping
sed 's/^/  /' "$WORK/drain.log"
stopped() { [ "$(podman inspect "$NAME" --format '{{.State.Status}}')" = exited ]; }
check "the container stops" poll 45 stopped
exit_code_zero() { [ "$(podman inspect "$NAME" --format '{{.State.ExitCode}}')" = 0 ]; }
check "the daemon exits 0" exit_code_zero
podman start "$NAME" >/dev/null 2>"$WORK/podman.err" || fatal "podman start: $(cat "$WORK/podman.err")"
check "after a restart the drained message is delivered" poll 15 dry_run_has "smoke drained"

if [ "$failed" -ne 0 ]; then
    echo "--- container log (last lines)"
    podman logs "$NAME" 2>&1 | tail -n 30 || true
    tail -n 20 "$WORK/build.log" 2>/dev/null || true
fi
summary image
