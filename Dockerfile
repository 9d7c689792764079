# postrelay container image.
#
#   docker build -t postrelay .
#   docker run -d --name postrelay -p 127.0.0.1:2525:2525 -p 127.0.0.1:9025:9025 \
#       -e POSTRELAY_SMTP__ALLOWED_NETWORKS=127.0.0.0/8,172.17.0.1/32 \
#       -v postrelay-spool:/var/spool/postrelay \
#       -e POSTRELAY_BACKEND=postmark \
#       -e POSTRELAY_POSTMARK__SERVER_TOKEN_FILE=/run/secrets/postmark-token \
#       -v /etc/postrelay/postmark-token:/run/secrets/postmark-token:ro \
#       --stop-timeout 40 postrelay
#
# Not an open relay: only loopback clients may send until
# POSTRELAY_SMTP__ALLOWED_NETWORKS lists the network your clients come from
# (above: the default bridge's gateway, which is where a port published on the
# host's 127.0.0.1 arrives from; in Compose, the project network's subnet) or
# [[users]] accounts exist; anyone else gets 554 5.7.1 at connect. Publishing
# 2525 on every interface (-p 2525:2525) exposes it to the host's network.
#
# Without a config file the daemon runs on the embedded defaults (backend
# dry-run) plus the POSTRELAY_* variables below. To use a file, mount it and
# set POSTRELAY_CONFIG=/etc/postrelay/postrelay.toml; the variables still win.
# Give `docker stop` (--stop-timeout, compose stop_grace_period) a little more
# than shutdown_timeout (30s) so mail in flight drains before SIGKILL.
#
# The daemon runs as uid:gid 10025:10025. A named volume gets the right owner
# from the image; a bind-mounted spool must belong to uid 10025 and be mode
# 0700 (`install -d -o 10025 -g 10025 -m 0700 /srv/postrelay-spool`): the
# daemon refuses a spool owned by anyone else or open to group/others. Secret
# files (token, API key) mounted in must be readable by uid 10025: for the
# token above, `chown 10025 /etc/postrelay/postmark-token` on the host (keep
# it 0600), or a compose secret with `uid: "10025"`.
#
# tests/system/image-smoke.sh builds this final stage with podman (the
# binary built on the host in place of the builder stage's) and checks the
# greeting, the uid, dry-run output on the volume, the HEALTHCHECK, and that
# `stop` lets an open SMTP transaction finish.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
 && install -m 0755 target/release/postrelay /usr/local/bin/postrelay

FROM debian:bookworm-slim
# ca-certificates: the API is HTTPS and rustls reads the system trust store.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10025 postrelay \
 && useradd --system --uid 10025 --gid 10025 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin postrelay \
 && install -d -m 0700 -o 10025 -g 10025 /var/spool/postrelay \
 && install -d -m 3733 -o 10025 -g 10025 /var/spool/postrelay-maildrop
COPY --from=builder /usr/local/bin/postrelay /usr/local/bin/postrelay

# The maildrop (docs/maildrop.md) cannot live inside the private spool: it is
# beside it, mode 3733, for `docker exec ... postrelay sendmail` run as another
# uid while the daemon restarts.
ENV POSTRELAY_SMTP__LISTEN=0.0.0.0:2525 \
    POSTRELAY_SPOOL__DIR=/var/spool/postrelay \
    POSTRELAY_SENDMAIL__MAILDROP=/var/spool/postrelay-maildrop \
    POSTRELAY_HTTP__LISTEN=0.0.0.0:9025
EXPOSE 2525 9025
VOLUME ["/var/spool/postrelay"]

# The image has no curl or wget, and postrelay has no probe subcommand: bash
# (part of debian:bookworm-slim) opens a TCP connection with /dev/tcp, sends
# GET /healthz and requires a 200 status line. The port is taken from
# POSTRELAY_HTTP__LISTEN, so overriding that variable keeps the check right.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${POSTRELAY_HTTP__LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1\\.[01] 200 '"]

USER 10025:10025
ENTRYPOINT ["/usr/local/bin/postrelay"]
CMD ["serve"]
