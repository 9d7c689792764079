//! RFC 2047 encoded words in header values and parameters. Owns the rule
//! that whitespace between two adjacent encoded words is dropped (folds
//! included) while all other text is kept, and that adjacent words in one
//! charset are joined before decoding, so a multibyte character split across
//! two words survives. Raw 8-bit text outside words goes through
//! [`charset::undeclared`]. Linear: the `?=` ends and the whitespace of
//! the value are indexed once, so a long run of unclosed `=?` never
//! triggers a rescan.

use super::charset;
use super::transfer;

/// Longest charset label (with `*lang`) we look for.
const MAX_LABEL: usize = 80;

/// Where each `?=` starts and where each whitespace byte is, in order.
struct Index {
    closes: Vec<usize>,
    spaces: Vec<usize>,
}

impl Index {
    fn new(raw: &[u8]) -> Self {
        Self {
            closes: (0..raw.len().saturating_sub(1))
                .filter(|&i| raw[i] == b'?' && raw[i + 1] == b'=')
                .collect(),
            spaces: (0..raw.len())
                .filter(|&i| raw[i].is_ascii_whitespace())
                .collect(),
        }
    }

    fn next(list: &[usize], from: usize) -> Option<usize> {
        list.get(list.partition_point(|&p| p < from)).copied()
    }
}

enum Piece {
    Text(Vec<u8>),
    Word { charset: String, bytes: Vec<u8> },
}

/// Decodes every encoded word in `raw` and the text around them to UTF-8.
pub fn decode(raw: &[u8]) -> String {
    // Most header values hold no encoded word: one piece of text.
    if !raw.windows(2).any(|w| w == b"=?") {
        return charset::undeclared(raw);
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let index = Index::new(raw);
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"=?")
            && let Some((charset, bytes, end)) = encoded_word(raw, i, &index)
        {
            let gap_is_blank = matches!(pieces.last(), Some(Piece::Text(t)) if t.iter().all(u8::is_ascii_whitespace));
            let after_word =
                pieces.len() >= 2 && matches!(pieces[pieces.len() - 2], Piece::Word { .. });
            if gap_is_blank && after_word {
                pieces.pop();
            }
            match pieces.last_mut() {
                Some(Piece::Word {
                    charset: c,
                    bytes: b,
                }) if c.eq_ignore_ascii_case(&charset) => b.extend_from_slice(&bytes),
                _ => pieces.push(Piece::Word { charset, bytes }),
            }
            i = end;
            continue;
        }
        match pieces.last_mut() {
            Some(Piece::Text(t)) => t.push(raw[i]),
            _ => pieces.push(Piece::Text(vec![raw[i]])),
        }
        i += 1;
    }
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => charset::undeclared(t),
            Piece::Word { charset, bytes } => charset::decode(Some(charset), bytes),
        })
        .collect()
}

/// Parses `=?charset[*lang]?B|Q?text?=` at `start`: (charset, bytes, end).
fn encoded_word(raw: &[u8], start: usize, index: &Index) -> Option<(String, Vec<u8>, usize)> {
    let after = start + 2;
    let window = &raw[after..raw.len().min(after + MAX_LABEL)];
    let q1 = window.iter().position(|&b| b == b'?')?;
    let label = &window[..q1];
    if label.is_empty() || label.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let encoding = *raw.get(after + q1 + 1)?;
    if raw.get(after + q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = after + q1 + 3;
    let close = Index::next(&index.closes, text_start)?;
    if Index::next(&index.spaces, text_start).is_some_and(|space| space < close) {
        return None;
    }
    let text = &raw[text_start..close];
    let bytes = match encoding {
        b'B' | b'b' => transfer::base64(text),
        b'Q' | b'q' => q_decode(text),
        _ => return None,
    };
    let label = String::from_utf8_lossy(label);
    let charset = label.split('*').next().unwrap_or_default().to_string();
    Some((charset, bytes, close + 2))
}

/// The "Q" encoding: quoted-printable with `_` for space.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hex = |k: usize| text.get(k).and_then(|&b| (b as char).to_digit(16));
        match text[i] {
            b'_' => out.push(b' '),
            b'=' if hex(i + 1).is_some() && hex(i + 2).is_some() => {
                out.push((hex(i + 1).unwrap_or(0) * 16 + hex(i + 2).unwrap_or(0)) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_encoded_words_lose_the_whitespace_between_them() {
        let cases = [
            ("=?UTF-8?B?w6TDtsO8?= =?UTF-8?B?LnBkZg==?=", "äöü.pdf"),
            ("=?UTF-8?Q?a?=\t \t=?UTF-8?Q?b?=", "ab"),
            ("=?UTF-8?Q?a?= =?ISO-8859-1?Q?=E9?=", "aé"),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn text_around_encoded_words_keeps_its_spaces() {
        assert_eq!(decode(b"Re: =?utf-8?q?caf=C3=A9?= ok"), "Re: café ok");
        assert_eq!(decode(b"plain  text"), "plain  text");
    }

    #[test]
    fn a_multibyte_character_split_across_words_is_joined() {
        // "é" is C3 A9; each word holds one byte of it.
        assert_eq!(decode(b"=?utf-8?B?ww==?= =?utf-8?B?qQ==?="), "é");
    }

    #[test]
    fn cjk_words_decode_through_their_charset() {
        let cases = [
            (
                "=?iso-2022-jp?B?GyRCRnxLXDhsJE4lRiU5JUgbKEI=?=",
                "日本語のテスト",
            ),
            (
                "=?ks_c_5601-1987?B?x9Gx uQ==?=",
                "=?ks_c_5601-1987?B?x9Gx uQ==?=",
            ),
            ("=?ks_c_5601-1987?B?x9GxuQ==?=", "한국"),
            ("=?gb2312?B?1tDOxA==?=", "中文"),
            ("=?x-sjis?B?k/qWew==?=", "日本"),
            ("=?utf-8*en?Q?hi?=", "hi"),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn malformed_words_stay_literal() {
        for input in [
            "=?",
            "=?utf-8?",
            "=?utf-8?x?abc?=",
            "=??q?a?=",
            "a =?utf-8?q?x",
        ] {
            assert_eq!(decode(input.as_bytes()), input);
        }
    }

    #[test]
    fn raw_latin1_header_bytes_read_as_windows_1252() {
        assert_eq!(decode(b"K\xf6ln"), "Köln");
    }
}
