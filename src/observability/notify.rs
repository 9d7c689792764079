//! systemd readiness notification (`Type=notify`): one datagram to
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! A no-op when the variable is absent; failures are logged, never fatal.

use std::os::unix::net::UnixDatagram;

pub fn ready() {
    send("READY=1\nSTATUS=accepting mail");
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let path = path.to_string_lossy();
        if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), path.as_ref())?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_to_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // SAFETY of env mutation: this is the only test touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        ready();
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .starts_with("READY=1")
        );
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    }
}
