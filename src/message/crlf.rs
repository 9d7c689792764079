//! Line endings: mail is stored and sent with CRLF. The SMTP listener's DATA
//! decoder writes CRLF as it reads; this normalises a whole message that
//! reached the spool some other way (before mapping it).

/// The whole of `raw` with every lone `\n` written as `\r\n`.
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 64);
    let mut start = 0;
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.extend_from_slice(&raw[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&raw[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_stays() {
        let table: &[(&[u8], &[u8])] = &[
            (b"a\nb\r\nc\n", b"a\r\nb\r\nc\r\n"),
            (b"\n", b"\r\n"),
            (b"a\r\n", b"a\r\n"),
            (b"a\rb", b"a\rb"),
            (b"", b""),
        ];
        for (raw, want) in table {
            assert_eq!(to_crlf(raw), *want, "{raw:?}");
        }
    }
}
