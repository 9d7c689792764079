//! Line endings: mail is stored and sent with CRLF. The SMTP listener
//! normalises a DATA stream chunk by chunk; mapping normalises a whole
//! message (mail that reached the spool some other way).

/// Rewrites lone `\n` as `\r\n`, keeping state across chunks.
#[derive(Debug, Default)]
pub struct CrlfNormalizer {
    prev_cr: bool,
}

impl CrlfNormalizer {
    /// Appends the normalised form of `chunk` to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64);
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' {
                let cr_before = if i == 0 {
                    self.prev_cr
                } else {
                    chunk[i - 1] == b'\r'
                };
                if !cr_before {
                    out.extend_from_slice(&chunk[start..i]);
                    out.extend_from_slice(b"\r\n");
                    start = i + 1;
                }
            }
        }
        out.extend_from_slice(&chunk[start..]);
        if let Some(&last) = chunk.last() {
            self.prev_cr = last == b'\r';
        }
    }
}

/// The whole of `raw` with every lone `\n` written as `\r\n`.
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    CrlfNormalizer::default().push(raw, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(chunks: &[&[u8]]) -> Vec<u8> {
        let mut n = CrlfNormalizer::default();
        let mut out = Vec::new();
        for c in chunks {
            n.push(c, &mut out);
        }
        out
    }

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(norm(&[b"a\nb\r\nc\n"]), b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn crlf_split_across_chunks_is_not_doubled() {
        assert_eq!(norm(&[b"a\r", b"\nb\n"]), b"a\r\nb\r\n");
        assert_eq!(norm(&[b"a", b"\nb"]), b"a\r\nb");
    }
}
