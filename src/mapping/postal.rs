use super::*;
use crate::message::Envelope;
pub fn map(
    envelope: &Envelope,
    raw: &[u8],
    _opts: &MappingOptions,
) -> Result<Mapped, MappingError> {
    use base64::Engine;
    Ok(Mapped {
        calls: vec![ApiCall {
            recipients: envelope.rcpt_to.clone(),
            body: serde_json::json!({"mail_from": envelope.mail_from, "rcpt_to": envelope.rcpt_to, "data": base64::engine::general_purpose::STANDARD.encode(raw)}),
        }],
        warnings: vec![],
    })
}
