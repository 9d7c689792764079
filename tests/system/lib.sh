# shellcheck shell=bash
# Shared by the system tests in this directory (sourced, not run): a tally of
# checks, a throwaway work directory removed on exit, and a Debian bookworm
# minbase root made once with debootstrap and cached as a tarball under
# target/system/ (the only thing these tests keep between runs).
#
# Each test runs as root on a Debian machine that reaches Debian's archive;
# `.ci/run` skips them with a printed reason otherwise.

SYSTEM_TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SYSTEM_TESTS_DIR/../.." && pwd)
ROOTFS_CACHE="$REPO_ROOT/target/system/bookworm-minbase.tar"
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

passed=0
failed=0
WORK=""

# check NAME COMMAND...: runs the command, counts and prints the result.
check() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok: $name"
    else
        failed=$((failed + 1))
        echo "FAILED: $name"
    fi
}

# fatal MESSAGE: a step the remaining checks depend on failed.
fatal() {
    echo "FAILED: $*" >&2
    failed=$((failed + 1))
    exit 1
}

# summary LABEL: the closing line, and the exit status.
summary() {
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# poll SECONDS COMMAND...: retries COMMAND every 0.2 s until it succeeds or
# the deadline passes.
poll() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# make_work PREFIX: a work directory in /var/tmp (not a tmpfs: it holds a
# root file system), removed with everything mounted under it on exit.
make_work() {
    WORK=$(mktemp -d "/var/tmp/$1.XXXXXX")
    trap remove_work EXIT
}

remove_work() {
    local status=$?
    if [ -n "${CLEANUP_HOOK:-}" ]; then
        "$CLEANUP_HOOK" || true
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        # Mounts left under the work directory, deepest first.
        local mounts m
        mounts=$(findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r) || true
        for m in $mounts; do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf --one-file-system "$WORK"
    fi
    return "$status"
}

# rootfs_tarball: prints the path of a bookworm minbase root as a tarball,
# making it with debootstrap when it is not cached. Its apt sources name
# bookworm, -updates and -security, so `apt-get` inside it installs current
# packages.
rootfs_tarball() {
    if [ ! -s "$ROOTFS_CACHE" ]; then
        local tmp
        tmp=$(mktemp -d /var/tmp/postrelay-rootfs.XXXXXX)
        if ! debootstrap --variant=minbase bookworm "$tmp/root" "$DEBIAN_MIRROR" \
            >"$tmp/debootstrap.log" 2>&1; then
            tail -n 20 "$tmp/debootstrap.log" >&2
            rm -rf --one-file-system "$tmp"
            return 1
        fi
        local security=${DEBIAN_MIRROR%/debian}/debian-security
        cat >"$tmp/root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $security bookworm-security main
EOF
        rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
        mkdir -p "$(dirname "$ROOTFS_CACHE")"
        tar --numeric-owner -C "$tmp/root" -cf "$ROOTFS_CACHE.part" .
        mv "$ROOTFS_CACHE.part" "$ROOTFS_CACHE"
        rm -rf --one-file-system "$tmp"
    fi
    echo "$ROOTFS_CACHE"
}

# need_root_and COMMAND...: exits 0 with a printed reason when not root or a
# command is missing (the caller installs them; `.ci/run` does).
need_root_and() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "skipped: needs root"
        exit 0
    fi
    local c
    for c in "$@"; do
        if ! command -v "$c" >/dev/null 2>&1; then
            echo "skipped: $c is not installed"
            exit 0
        fi
    done
}
