//! The [`Mapper`]: the configured backend's request shape and mapping
//! options, built once from the config and shared (as `Arc<Mapper>`) by the
//! SMTP listener (`map_for` at `DATA`, the mapping kept for the first
//! attempt), the delivery engine (`map_for` before other attempts) and the
//! CLI (`queue show`). A pure value: no client, no secret.

use super::postmark::{SendDefaults, TrackLinks};
use super::{
    Mapped, MappingError, MappingOptions, POSTAL_MAX_MESSAGE_SIZE, POSTMARK_MAX_MESSAGE_SIZE,
};
use crate::config::{BackendKind, Config};
use crate::message::Envelope;

/// Which API's request shape a [`Mapper`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapperKind {
    /// Postmark `/email` (also what dry-run writes).
    Postmark,
    /// Postal `/api/v1/send/raw`.
    Postal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    kind: MapperKind,
    options: MappingOptions,
    defaults: SendDefaults,
    /// `postmark.trace_metadata`: [`map_for`](Mapper::map_for) stamps the
    /// spool id into Postmark's `Metadata`.
    trace_metadata: bool,
}

impl Mapper {
    pub fn new(kind: MapperKind, options: MappingOptions) -> Mapper {
        Mapper {
            kind,
            options,
            defaults: SendDefaults::default(),
            trace_metadata: false,
        }
    }

    /// The same mapper stamping each message's spool id into Postmark's
    /// `Metadata` at delivery (see [`map_for`](Mapper::map_for)).
    pub fn with_trace_metadata(self, trace_metadata: bool) -> Mapper {
        Mapper {
            trace_metadata,
            ..self
        }
    }

    /// The same mapper with Postmark send defaults (unused by Postal).
    pub fn with_defaults(self, defaults: SendDefaults) -> Mapper {
        Mapper { defaults, ..self }
    }

    /// The mapping of the configured backend (dry-run maps as Postmark).
    pub fn from_config(cfg: &Config) -> Mapper {
        let (kind, max_message_size) = match cfg.backend {
            BackendKind::Postal => (
                MapperKind::Postal,
                cfg.postal
                    .max_message_size
                    .unwrap_or(POSTAL_MAX_MESSAGE_SIZE),
            ),
            BackendKind::Postmark | BackendKind::DryRun => {
                (MapperKind::Postmark, POSTMARK_MAX_MESSAGE_SIZE)
            }
        };
        let pm = &cfg.postmark;
        Mapper::new(
            kind,
            MappingOptions {
                default_stream: pm.message_stream.clone(),
                ignore_unsupported: cfg.ignore_unsupported_features,
                max_message_size,
            },
        )
        .with_defaults(SendDefaults {
            tag: Some(pm.tag.clone()).filter(|t| !t.is_empty()),
            track_opens: pm.track_opens,
            track_links: pm.track_links.as_deref().and_then(TrackLinks::parse),
            metadata: pm.metadata.clone(),
        })
        .with_trace_metadata(pm.trace_metadata)
    }

    pub fn kind(&self) -> MapperKind {
        self.kind
    }

    pub fn options(&self) -> &MappingOptions {
        &self.options
    }

    /// The API calls for this message, or why the API would refuse it.
    pub fn map(&self, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError> {
        self.map_as(envelope, raw, None)
    }

    /// [`map`](Mapper::map) for a message whose sender has a default stream
    /// of their own (`[[users]] message_stream`): `stream` replaces the
    /// configured default; an `X-PM-Message-Stream` header still wins.
    pub fn map_as(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        stream: Option<&str>,
    ) -> Result<Mapped, MappingError> {
        self.map_traced(envelope, raw, stream, None)
    }

    /// What delivery sends for spool entry `id`: [`map_as`](Mapper::map_as),
    /// plus `Metadata["postrelay-id"] = id` on Postmark when
    /// `postmark.trace_metadata` is on (see `postmark::map_traced`).
    pub fn map_for(
        &self,
        id: &str,
        envelope: &Envelope,
        raw: &[u8],
        stream: Option<&str>,
    ) -> Result<Mapped, MappingError> {
        let trace = self.trace_metadata.then_some(id);
        self.map_traced(envelope, raw, stream, trace)
    }

    fn map_traced(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        stream: Option<&str>,
        trace: Option<&str>,
    ) -> Result<Mapped, MappingError> {
        let own;
        let options = match stream {
            Some(s) if s != self.options.default_stream => {
                own = MappingOptions {
                    default_stream: s.to_string(),
                    ..self.options.clone()
                };
                &own
            }
            _ => &self.options,
        };
        match self.kind {
            MapperKind::Postmark => {
                super::postmark::map_traced(envelope, raw, options, &self.defaults, trace)
            }
            MapperKind::Postal => super::postal::map(envelope, raw, options),
        }
    }

    /// Every check of [`map`](Mapper::map), returning only its warnings (the
    /// fuzz harness and tests; `DATA` maps with [`map_for`](Mapper::map_for)
    /// to keep the result). The calls share one body, so checking all of
    /// them costs one encoding of the message plus its recipient lists.
    pub fn check(&self, envelope: &Envelope, raw: &[u8]) -> Result<Vec<String>, MappingError> {
        self.check_as(envelope, raw, None)
    }

    /// [`check`](Mapper::check) with the sender's own default stream, as
    /// [`map_as`](Mapper::map_as).
    pub fn check_as(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        stream: Option<&str>,
    ) -> Result<Vec<String>, MappingError> {
        self.map_as(envelope, raw, stream).map(|m| m.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(kind: MapperKind) -> Mapper {
        Mapper::new(
            kind,
            MappingOptions {
                default_stream: "outbound".into(),
                ignore_unsupported: false,
                max_message_size: 1 << 20,
            },
        )
    }

    #[test]
    fn each_kind_builds_its_own_request_shape() {
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to: vec!["r@example.org".into()],
        };
        let raw = b"From: s@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let postmark = mapper(MapperKind::Postmark).map(&envelope, raw).unwrap();
        assert_eq!(postmark.calls[0].body()["Subject"], "hi");
        let postal = mapper(MapperKind::Postal).map(&envelope, raw).unwrap();
        assert_eq!(postal.calls[0].body()["mail_from"], "s@example.com");
    }

    #[test]
    fn check_refuses_what_map_refuses() {
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to: vec!["r@example.org".into()],
        };
        let raw = b"From: s@example.com\r\nX-PM-Tag: a\r\nX-PM-Tag: b\r\n\r\nbody\r\n";
        for kind in [MapperKind::Postmark, MapperKind::Postal] {
            let m = mapper(kind);
            assert_eq!(
                m.check(&envelope, raw).unwrap_err(),
                m.map(&envelope, raw).unwrap_err()
            );
        }
    }

    #[test]
    fn check_refuses_a_split_message_whose_later_call_is_too_large() {
        // 50 short recipients in the first call, long ones in the second:
        // only the second call's request crosses the limit.
        let mut rcpt_to: Vec<String> = (0..50).map(|i| format!("r{i}@x.org")).collect();
        rcpt_to.extend((0..5).map(|i| format!("{}{i}@x.org", "l".repeat(200))));
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to,
        };
        let raw = b"From: s@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let sizes: Vec<usize> = mapper(MapperKind::Postmark)
            .map(&envelope, raw)
            .unwrap()
            .calls
            .iter()
            .map(|c| c.encoded_len())
            .collect();
        assert!(sizes[1] > sizes[0], "{sizes:?}");
        let tight = Mapper::new(
            MapperKind::Postmark,
            MappingOptions {
                default_stream: "outbound".into(),
                ignore_unsupported: false,
                max_message_size: sizes[0],
            },
        );
        let err = tight.check(&envelope, raw).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("message size {} bytes", sizes[1])),
            "{err}"
        );
    }

    #[test]
    fn a_senders_own_stream_replaces_the_default_and_a_header_wins() {
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to: vec!["r@example.org".into()],
        };
        let plain = b"From: s@example.com\r\n\r\nbody\r\n".as_slice();
        let header =
            b"From: s@example.com\r\nX-PM-Message-Stream: broadcast\r\n\r\nbody\r\n".as_slice();
        let m = mapper(MapperKind::Postmark);
        let stream = |raw: &[u8], own: Option<&str>| {
            m.map_as(&envelope, raw, own).unwrap().calls[0].body()["MessageStream"].clone()
        };
        let table = [
            (plain, None, "outbound"),
            (plain, Some("billing"), "billing"),
            (header, None, "broadcast"),
            (header, Some("billing"), "broadcast"),
        ];
        for (raw, own, want) in table {
            assert_eq!(stream(raw, own), want, "{own:?}");
        }
        assert!(m.check_as(&envelope, plain, Some("billing")).is_ok());
    }

    #[test]
    fn send_defaults_come_from_the_postmark_config() {
        let mut cfg = Config::default();
        cfg.postmark.tag = "relay".into();
        cfg.postmark.track_links = Some("htmlonly".into());
        cfg.postmark.metadata = [("source".to_string(), "relay".to_string())].into();
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to: vec!["r@example.org".into()],
        };
        let raw = b"From: s@example.com\r\nX-PM-Metadata-source: app\r\n\r\nbody\r\n";
        let body = Mapper::from_config(&cfg).map(&envelope, raw).unwrap().calls[0].body();
        assert_eq!(body["Tag"], "relay");
        assert_eq!(body["TrackLinks"], "HtmlOnly");
        assert!(body.get("TrackOpens").is_none());
        assert_eq!(body["Metadata"], serde_json::json!({"source": "app"}));
    }

    #[test]
    fn trace_metadata_stamps_the_spool_id_only_when_configured() {
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to: vec!["r@example.org".into()],
        };
        let raw = b"From: s@example.com\r\nX-PM-Metadata-a: 1\r\n\r\nbody\r\n";
        let mut cfg = Config::default();
        let off = Mapper::from_config(&cfg).map_for("01ID", &envelope, raw, None);
        assert_eq!(
            off.unwrap().calls[0].body()["Metadata"],
            serde_json::json!({"a": "1"})
        );
        cfg.postmark.trace_metadata = true;
        let traced = Mapper::from_config(&cfg);
        let on = traced.map_for("01ID", &envelope, raw, None).unwrap();
        assert_eq!(
            on.calls[0].body()["Metadata"],
            serde_json::json!({"a": "1", "postrelay-id": "01ID"})
        );
        // Checking at DATA (no id yet) sends nothing extra.
        let checked = traced.map(&envelope, raw).unwrap();
        assert_eq!(
            checked.calls[0].body()["Metadata"],
            serde_json::json!({"a": "1"})
        );
    }

    #[test]
    fn the_trace_wins_over_the_messages_own_key_and_gives_way_to_a_full_metadata() {
        let envelope = Envelope {
            mail_from: "s@example.com".into(),
            rcpt_to: vec!["r@example.org".into()],
        };
        let traced = mapper(MapperKind::Postmark).with_trace_metadata(true);
        let own = b"From: s@example.com\r\nX-PM-Metadata-Postrelay-ID: mine\r\n\r\nbody\r\n";
        let m = traced.map_for("01ID", &envelope, own, None).unwrap();
        assert_eq!(
            m.calls[0].body()["Metadata"],
            serde_json::json!({"postrelay-id": "01ID"})
        );

        let mut full = String::from("From: s@example.com\r\n");
        for i in 0..10 {
            full.push_str(&format!("X-PM-Metadata-k{i}: v\r\n"));
        }
        full.push_str("\r\nbody\r\n");
        let m = traced
            .map_for("01ID", &envelope, full.as_bytes(), None)
            .unwrap();
        let metadata = m.calls[0].body()["Metadata"].clone();
        assert_eq!(metadata.as_object().unwrap().len(), 10);
        assert!(metadata.get("postrelay-id").is_none());
        assert!(
            m.warnings
                .iter()
                .any(|w| w.starts_with(crate::mapping::postmark::TRACE_SKIPPED)),
            "{:?}",
            m.warnings
        );
    }
}
