use super::*;
use crate::message::Envelope;
pub fn map(envelope: &Envelope, raw: &[u8], opts: &MappingOptions) -> Result<Mapped, MappingError> {
    if raw.len() * 4 / 3 > opts.max_message_size {
        return Err(MappingError::Limit("too big".into()));
    }
    let msg = mail_parser::MessageParser::default().parse(raw);
    let subject = msg
        .as_ref()
        .and_then(|m| m.subject())
        .unwrap_or_default()
        .to_string();
    Ok(Mapped {
        calls: envelope.rcpt_to.chunks(50).map(|c| ApiCall { recipients: c.to_vec(), body: serde_json::json!({"Subject": subject, "Bcc": c.join(", "), "MessageStream": opts.default_stream}) }).collect(),
        warnings: vec![],
    })
}
