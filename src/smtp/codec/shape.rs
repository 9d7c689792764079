//! Counts the lines of a message that cost a parser the most: header lines
//! (of the message and of each MIME part) and boundary candidates (lines
//! starting with `--`). A parsed header or part costs about a kilobyte
//! whatever its size, so these counts, not the byte size, say what checking
//! a message of many tiny parts or headers will allocate.

#[derive(Debug, Clone)]
pub struct Shape {
    /// Bytes of the current line before its LF.
    len: usize,
    /// Its first two bytes.
    head: [u8; 2],
    /// Inside a header block (the message's, or a part's after a boundary).
    in_headers: bool,
    lines: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            len: 0,
            head: [0; 2],
            in_headers: true,
            lines: 0,
        }
    }
}

impl Shape {
    /// Scans decoded message bytes (every LF preceded by CR).
    pub fn scan(&mut self, mut bytes: &[u8]) {
        while let Some((&first, rest)) = bytes.split_first() {
            if self.len < 2 && first != b'\n' {
                self.head[self.len] = first;
                self.len += 1;
                bytes = rest;
                continue;
            }
            match memchr::memchr(b'\n', bytes) {
                None => {
                    self.len = self.len.saturating_add(bytes.len());
                    return;
                }
                Some(pos) => {
                    self.len += pos;
                    bytes = &bytes[pos + 1..];
                    self.end_line();
                }
            }
        }
    }

    fn end_line(&mut self) {
        let empty = self.len == 1 && self.head[0] == b'\r';
        if empty {
            self.in_headers = false;
        } else if self.in_headers {
            self.lines += 1;
        } else if self.len >= 2 && self.head == *b"--" {
            // A part boundary: the part's header lines follow.
            self.lines += 1;
            self.in_headers = true;
        }
        self.len = 0;
    }

    /// Header lines and boundary candidates seen so far.
    pub fn lines(&self) -> usize {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(chunks: &[&[u8]]) -> usize {
        let mut s = Shape::default();
        for c in chunks {
            s.scan(c);
        }
        s.lines()
    }

    #[test]
    fn counts_header_lines_and_parts_in_any_split() {
        let table: &[(&[u8], usize)] = &[
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", 2),
            // A signature separator looks like a boundary: counted, with what follows.
            (b"\r\nbody\r\n-- \r\nsig\r\n", 2),
            (
                b"A: 1\r\n\r\n--B\r\nX: 1\r\nY: 2\r\n\r\n-text\r\n--B\r\n\r\n\r\n--B--\r\n",
                6,
            ),
            (b"A: 1\r\n\r\n--B\r\n\r\n--B\r\n\r\n--B\r\n\r\n", 4),
            (b"a\r\r\nb\r\n", 2),
        ];
        for (msg, want) in table {
            assert_eq!(count(&[msg]), *want, "{:?}", String::from_utf8_lossy(msg));
            for cut in 0..=msg.len() {
                assert_eq!(count(&[&msg[..cut], &msg[cut..]]), *want, "cut {cut}");
            }
        }
    }
}
