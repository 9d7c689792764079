//! What EHLO advertises, as a value: the listener builds it from config and
//! the connection may change it (STARTTLS and AUTH come and go with the
//! stream's state). CHUNKING is never offered: `BDAT` is refused.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `SIZE n`: the largest message accepted.
    pub size: usize,
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub enhanced_status_codes: bool,
    pub starttls: bool,
    /// SASL mechanisms offered with `AUTH`; none means no `AUTH` line.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// The ESMTP set postrelay always offers, for messages up to `size` bytes.
    pub fn standard(size: usize) -> Capabilities {
        Capabilities {
            size,
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            enhanced_status_codes: true,
            starttls: false,
            auth: Vec::new(),
        }
    }

    /// The EHLO continuation lines, in a stable order.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.pipelining {
            lines.push("PIPELINING".to_string());
        }
        lines.push(format!("SIZE {}", self.size));
        if self.eight_bit_mime {
            lines.push("8BITMIME".into());
        }
        if self.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if self.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        if self.starttls {
            lines.push("STARTTLS".into());
        }
        if !self.auth.is_empty() {
            lines.push(format!("AUTH {}", self.auth.join(" ")));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_value_and_never_offer_chunking() {
        let standard = Capabilities::standard(1000);
        assert_eq!(
            standard.lines(),
            [
                "PIPELINING",
                "SIZE 1000",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES"
            ]
        );
        let tls_auth = Capabilities {
            starttls: true,
            auth: vec!["PLAIN".into(), "LOGIN".into()],
            pipelining: false,
            ..standard
        };
        let lines = tls_auth.lines();
        assert_eq!(lines.first().map(String::as_str), Some("SIZE 1000"));
        assert!(lines.contains(&"STARTTLS".to_string()));
        assert!(lines.contains(&"AUTH PLAIN LOGIN".to_string()));
        assert!(!lines.iter().any(|l| l.contains("CHUNKING")));
    }
}
