//! Content-Transfer-Encoding removal: base64, quoted-printable, x-uuencode.
//! Every decoder is lenient and total: junk is skipped or kept literally,
//! never a reason to drop data, and each runs in one linear pass. Tails are
//! kept: an unpadded final base64 group and a quoted-printable soft break at
//! the very end of a part both decode to their bytes.

/// The transfer encodings a part can declare that change its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    /// 7bit, 8bit, binary, absent or unknown: the bytes are the content.
    Identity,
    Base64,
    QuotedPrintable,
    UuEncode,
}

impl TransferEncoding {
    /// Reads a `Content-Transfer-Encoding` value (case and spaces ignored).
    pub fn from_header(value: &str) -> Self {
        match value.trim().trim_matches('"').to_ascii_lowercase().as_str() {
            "base64" => Self::Base64,
            "quoted-printable" => Self::QuotedPrintable,
            "x-uuencode" | "uuencode" | "x-uue" | "x-uu" => Self::UuEncode,
            _ => Self::Identity,
        }
    }
}

/// A decoded body, plus the file name an x-uuencode `begin` line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub data: Vec<u8>,
    pub uu_name: Option<String>,
}

/// Removes `encoding` from `body`.
pub fn decode(encoding: TransferEncoding, body: &[u8]) -> Decoded {
    let data = match encoding {
        TransferEncoding::Identity => body.to_vec(),
        TransferEncoding::Base64 => base64(body),
        TransferEncoding::QuotedPrintable => quoted_printable(body),
        TransferEncoding::UuEncode => return uudecode(body),
    };
    Decoded {
        data,
        uu_name: None,
    }
}

fn b64_value(b: u8) -> Option<u32> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Base64 ignoring whitespace and junk. `=` ends a group; a final group of
/// two or three symbols without padding still yields its one or two bytes.
pub fn base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let (mut acc, mut n) = (0u32, 0u8);
    let flush = |out: &mut Vec<u8>, acc: u32, n: u8| match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    };
    for &b in input {
        if b == b'=' {
            flush(&mut out, acc, n);
            (acc, n) = (0, 0);
            continue;
        }
        let Some(v) = b64_value(b) else { continue };
        acc = (acc << 6) | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            (acc, n) = (0, 0);
        }
    }
    flush(&mut out, acc, n);
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable. `=XX` decodes, `=` before a line end (or at the very
/// end of the part) is a soft break, trailing literal whitespace on a line
/// is transport padding, and any other `=` is kept as written.
pub fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    // Literal spaces/tabs at the end of `out` that a line end would strip.
    let mut padding = 0usize;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'=' => {
                if let (Some(h), Some(l)) = (
                    input.get(i + 1).copied().and_then(hex),
                    input.get(i + 2).copied().and_then(hex),
                ) {
                    out.push((h << 4) | l);
                    padding = 0;
                    i += 3;
                    continue;
                }
                let mut j = i + 1;
                while matches!(input.get(j), Some(b' ' | b'\t')) {
                    j += 1;
                }
                match input.get(j) {
                    None => i = j,
                    Some(b'\n') => i = j + 1,
                    Some(b'\r') if input.get(j + 1) == Some(&b'\n') => i = j + 2,
                    _ => {
                        out.push(b'=');
                        padding = 0;
                        i += 1;
                    }
                }
            }
            b'\r' | b'\n' => {
                out.truncate(out.len() - padding);
                padding = 0;
                out.push(b);
                i += 1;
            }
            b' ' | b'\t' => {
                out.push(b);
                padding += 1;
                i += 1;
            }
            _ => {
                out.push(b);
                padding = 0;
                i += 1;
            }
        }
    }
    out.truncate(out.len() - padding);
    out
}

/// x-uuencode: the lines after `begin <mode> <name>` up to `end`. Input
/// without a `begin` line is not uuencoded and comes back unchanged.
pub fn uudecode(input: &[u8]) -> Decoded {
    let mut lines = input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(begin) = lines.by_ref().find(|l| l.starts_with(b"begin ")) else {
        return Decoded {
            data: input.to_vec(),
            uu_name: None,
        };
    };
    let name = String::from_utf8_lossy(&begin[6..])
        .trim()
        .split_once(' ')
        .map(|(_, name)| name.trim().to_string())
        .filter(|n| !n.is_empty());
    let mut data = Vec::new();
    for line in lines {
        if line.trim_ascii_end() == b"end" {
            break;
        }
        let Some((&len, rest)) = line.split_first() else {
            continue;
        };
        let len = usize::from(len.wrapping_sub(b' ') & 63);
        let start = data.len();
        for group in rest.chunks(4) {
            let mut acc = 0u32;
            for k in 0..4 {
                let c = group.get(k).copied().unwrap_or(b' ');
                acc = (acc << 6) | u32::from(c.wrapping_sub(b' ') & 63);
            }
            data.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
        }
        data.truncate(start + len.min(data.len() - start));
    }
    Decoded {
        data,
        uu_name: name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_keeps_an_unpadded_tail() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"aGVsbG8gd29ybGQ", b"hello world"),
            (b"aGVsbG8gd29ybGQ=", b"hello world"),
            (b"aGVsbG8gd29ybA", b"hello worl"),
            (b"aGVs\r\nbG8=\r\n", b"hello"),
            (b"aGk=aGk=", b"hihi"),
            (b"a", b""),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn quoted_printable_soft_break_at_the_very_end_is_dropped() {
        assert_eq!(quoted_printable(b"Regards, Bob="), b"Regards, Bob");
        assert_eq!(
            quoted_printable(b"<p>Regards, Bob</p>= \t"),
            b"<p>Regards, Bob</p>"
        );
    }

    #[test]
    fn quoted_printable_decodes_escapes_soft_breaks_and_strips_padding() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"a=3Db", b"a=b"),
            (b"caf=C3=A9", "café".as_bytes()),
            (b"long =\r\nline", b"long line"),
            (b"bare=\nlf", b"barelf"),
            (b"pad   \r\nnext", b"pad\r\nnext"),
            (b"kept=20\r\n=zz", b"kept \r\n=zz"),
        ];
        for (input, want) in cases {
            assert_eq!(
                quoted_printable(input),
                want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn uuencode_decodes_the_body_and_names_the_file() {
        let input = b"begin 644 hello.txt\r\nC2&5L;&\\@9G)O;2!A('5U96YC;V1E9\"!A='1A8VAM96YT+@H \r\n`\r\nend\r\n";
        let decoded = uudecode(input);
        assert_eq!(decoded.data, b"Hello from a uuencoded attachment.\n");
        assert_eq!(decoded.uu_name.as_deref(), Some("hello.txt"));
    }

    #[test]
    fn uuencode_without_begin_is_kept_as_is() {
        assert_eq!(uudecode(b"plain text").data, b"plain text");
    }

    #[test]
    fn transfer_encoding_names_are_case_insensitive() {
        assert_eq!(
            TransferEncoding::from_header(" Base64 "),
            TransferEncoding::Base64
        );
        assert_eq!(
            TransferEncoding::from_header("X-UUENCODE"),
            TransferEncoding::UuEncode
        );
        assert_eq!(
            TransferEncoding::from_header("8bit"),
            TransferEncoding::Identity
        );
    }
}
