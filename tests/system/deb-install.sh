#!/usr/bin/env bash
# The Debian package, built and tried: `cargo deb`, lintian, then `dpkg -i`
# into a throwaway bookworm root (debootstrap) where the real cron mails
# through it, first while the daemon is stopped (the mail waits in the
# maildrop), then while it runs. Also: apt takes postrelay as the host's
# mail-transport-agent (cron's and bsd-mailx's MTA dependency is met, no
# exim4 is pulled in, installing exim4 would remove postrelay), and purge
# leaves no link behind.
#
# Runs as root (chroot, mount and network namespaces); the daemon and cron
# run in a private network namespace, so nothing listens on the host.
#   tests/system/deb-install.sh            # prints "deb: N passed, N failed"
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root_and cargo-deb lintian debootstrap unshare chroot
cd "$REPO_ROOT"

echo "== cargo deb"
cargo deb --locked >/dev/null || fatal "cargo deb"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=target/debian/postrelay_"$version"-1_$(dpkg --print-architecture).deb
[ -f "$deb" ] || fatal "cargo deb did not write $deb"
echo "built $deb"

echo "== lintian"
# --fail-on warning: errors and warnings fail; info and pedantic tags do not.
check "lintian reports no error or warning" \
    lintian --fail-on error,warning --tag-display-limit 0 "$deb"

echo "== package contents"
contents=$(dpkg-deb --contents "$deb")
fields=$(dpkg-deb --field "$deb")
has_entry() { grep -qE "$1" <<<"$contents"; }
check "binary /usr/bin/postrelay, 0755 root" has_entry '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/postrelay$'
check "/usr/sbin/sendmail links to the binary" has_entry ' \./usr/sbin/sendmail -> \.\./bin/postrelay$'
check "/usr/bin/mailq links to the binary" has_entry ' \./usr/bin/mailq -> postrelay$'
check "/usr/bin/newaliases links to the binary" has_entry ' \./usr/bin/newaliases -> postrelay$'
check "systemd unit" has_entry ' \./(usr/)?lib/systemd/system/postrelay\.service$'
check "man page" has_entry ' \./usr/share/man/man8/postrelay\.8\.gz$'
field_is() { grep -qxF "$1" <<<"$fields"; }
check "Provides: mail-transport-agent" field_is "Provides: mail-transport-agent"
check "Conflicts: mail-transport-agent" field_is "Conflicts: mail-transport-agent"
check "Replaces: mail-transport-agent" field_is "Replaces: mail-transport-agent"

echo "== throwaway root"
make_work postrelay-deb
ROOT="$WORK/root"
mkdir "$ROOT"
tar -C "$ROOT" -xf "$(rootfs_tarball)" || fatal "debootstrap root"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "$deb" "$ROOT/tmp/postrelay.deb"
# No service starts inside the root while packages install (cron's would
# outlive the test): the policy-rc.d convention of Debian's chroots.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

# in_root COMMAND...: runs in the root, with /proc and /dev, in a mount
# namespace that disappears with the command.
in_root() {
    unshare --mount --fork -- sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        exec chroot "$root" "$@"' in_root "$ROOT" "$@"
}
export DEBIAN_FRONTEND=noninteractive
in_root apt-get update -qq >"$WORK/apt.log" 2>&1 || fatal "apt-get update in the root"

dpkg_install() { in_root dpkg -i /tmp/postrelay.deb >"$WORK/dpkg.log" 2>&1; }
check "dpkg -i installs the package" dpkg_install
postrelay_installed() { in_root dpkg-query -W -f='${Status}' postrelay | grep -qx 'install ok installed'; }
check "postrelay is installed" postrelay_installed

# Numeric ids: the root's users are not the host's.
svc_uid=$(chroot "$ROOT" id -u postrelay)
svc_gid=$(chroot "$ROOT" id -g postrelay)
mode_owner() { [ "$(stat -c '%a %u %g' "$ROOT$1")" = "$2" ]; }
check "maildrop is 3733 postrelay:postrelay" \
    mode_owner /var/spool/postrelay/maildrop "3733 $svc_uid $svc_gid"
system_user() { [ "$svc_uid" -lt 1000 ]; }
check "the service user is a system user" system_user
is_conffile() { in_root dpkg-query -W -f='${Conffiles}\n' postrelay | grep -q '^ /etc/postrelay/postrelay.toml '; }
check "/etc/postrelay/postrelay.toml is a conffile" is_conffile
config_valid() { in_root /usr/bin/postrelay check-config --config /etc/postrelay/postrelay.toml >/dev/null 2>&1; }
check "the installed config is valid" config_valid

# The MTA dependency of cron (Recommends) and bsd-mailx (Depends) is met by
# postrelay: apt installs neither exim4 nor postfix beside it.
install_mta_users() { in_root apt-get install -y -qq cron bsd-mailx >>"$WORK/apt.log" 2>&1; }
check "cron and bsd-mailx install without another MTA" install_mta_users
no_other_mta() {
    ! in_root dpkg-query -W -f='${Package} ${Status}\n' 'exim4*' 'postfix' 2>/dev/null |
        grep -q 'install ok installed'
}
check "no other MTA was pulled in" no_other_mta
check "postrelay is still installed" postrelay_installed
exim_would_replace() { in_root apt-get install -s -qq exim4-daemon-light | grep -q '^Remv postrelay '; }
check "installing exim4 would remove postrelay (Conflicts)" exim_would_replace

echo "== cron mails through the package"
# The unit's StateDirectory, made by hand: there is no systemd in the root.
install -d -m 0700 -o "$svc_uid" -g "$svc_gid" "$ROOT/var/lib/postrelay"
# The operator's [local] settings, which /usr/sbin/sendmail must follow
# without being told where the configuration is.
sed -i -e 's/^domain = ""$/domain = "host.test.example"/' \
    -e 's/^admin_address = ""$/admin_address = "ops@example.net"/' \
    "$ROOT/etc/postrelay/postrelay.toml"
cat >"$ROOT/etc/cron.d/postrelay-check" <<'EOF'
* * * * * root echo "cron output $(date +\%s)"
EOF
chmod 0644 "$ROOT/etc/cron.d/postrelay-check"

# Inside a private network, mount and PID namespace: cron runs from the
# start; the daemon only once cron's first mail is in the maildrop. Ending
# the namespace's first process ends both.
unshare --net --mount --pid --fork -- bash -s "$ROOT" "$WORK" <<'INNER' >"$WORK/inner.log" 2>&1 || true
set -u
root=$1 work=$2
ip link set lo up
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
chroot "$root" /usr/sbin/cron -f -L 15 >"$work/cron.log" 2>&1 &
wait_for() { # SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ "$SECONDS" -lt "$deadline" ] || return 1; sleep 0.2; done
}
dropped() { find "$root/var/spool/postrelay/maildrop" -maxdepth 1 -type f ! -name '.*' | grep -q .; }
if wait_for 75 dropped; then
    echo "dropped-while-stopped"
    stat -c '%a %u %g' "$root"/var/spool/postrelay/maildrop/[!.]* | head -n 1 | sed 's/^/drop-file /'
else
    echo "no-drop"
    exit 0
fi
chroot --userspec=postrelay:postrelay "$root" env POSTRELAY_SPOOL__DIR=/var/lib/postrelay \
    /usr/bin/postrelay serve --config /etc/postrelay/postrelay.toml >"$work/daemon.log" 2>&1 &
if wait_for 15 sh -c "[ \$(find '$root/var/lib/postrelay/dry-run' -name '*.json' 2>/dev/null | wc -l) -ge 1 ]"; then
    echo "imported"
fi
drained() { ! dropped; }
wait_for 5 drained && echo "maildrop-empty"
# cron's next run, with the daemon up: straight over SMTP.
if wait_for 70 sh -c "[ \$(find '$root/var/lib/postrelay/dry-run' -name '*.json' | wc -l) -ge 2 ]"; then
    echo "delivered-while-running"
fi
wait_for 2 drained && echo "maildrop-still-empty"
INNER
cat "$WORK/inner.log"
said() { grep -qx "$1" "$WORK/inner.log"; }
check "cron's mail waits in the maildrop while the daemon is stopped" said dropped-while-stopped
check "the drop file is root's, group postrelay, mode 0640" said "drop-file 640 0 $svc_gid"
check "the daemon imports it when it starts" said imported
check "the maildrop is empty after the import" said maildrop-empty
check "cron's next mail goes through the running daemon" said delivered-while-running
check "nothing is left in the maildrop" said maildrop-still-empty

from_cron() { # every request: cron's, from root, to the admin, with the job's output
    local f n=0
    for f in "$ROOT"/var/lib/postrelay/dry-run/*.json; do
        [ -e "$f" ] || return 1
        python3 - "$f" <<'PY' || return 1
import json, sys
req = json.load(open(sys.argv[1]))
assert "Cron Daemon" in req["From"] and "root@host.test.example" in req["From"], req["From"]
rcpts = [req.get(k, "") for k in ("To", "Cc", "Bcc")]
assert "ops@example.net" in rcpts and "root@" not in " ".join(rcpts), rcpts
assert req["Subject"].startswith("Cron <root@"), req["Subject"]
assert "cron output " in req.get("TextBody", ""), req.get("TextBody")
print("  request:", json.dumps({k: req[k] for k in ("From", "To", "Cc", "Bcc", "Subject") if k in req}))
PY
        n=$((n + 1))
    done
    [ "$n" -ge 2 ]
}
check "each request is cron's mail from root@[local] domain to [local] admin_address, with the job's output" from_cron
if [ "$failed" -ne 0 ]; then
    for f in "$ROOT"/var/lib/postrelay/dry-run/*.json; do
        [ -e "$f" ] && { echo "--- $f"; head -n 40 "$f"; }
    done
    for log in dpkg.log cron.log daemon.log apt.log; do
        echo "--- $log (last lines)"
        tail -n 20 "$WORK/$log" 2>/dev/null || true
    done
fi

echo "== remove and purge"
# bsd-mailx needs an MTA: it goes first.
in_root dpkg --purge bsd-mailx >/dev/null
dpkg_purge() { in_root dpkg --purge postrelay >>"$WORK/dpkg.log" 2>&1; }
check "dpkg --purge removes the package" dpkg_purge
gone() { [ ! -e "$ROOT$1" ] && [ ! -L "$ROOT$1" ]; }
check "purge removes /usr/sbin/sendmail" gone /usr/sbin/sendmail
check "purge removes the conffile" gone /etc/postrelay/postrelay.toml
check "purge removes the empty maildrop" gone /var/spool/postrelay/maildrop

summary deb
