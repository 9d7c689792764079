//! PLACEHOLDER until the mapping module lands (same public API).
pub mod postal;
pub mod postmark;

pub struct MappingOptions {
    pub default_stream: String,
    pub ignore_unsupported: bool,
    pub max_message_size: usize,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MappingError {
    #[error("unsupported feature: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Limit(String),
}

impl MappingError {
    pub fn smtp_reply(&self) -> (u16, &'static str, String) {
        match self {
            MappingError::Unsupported(f) => (550, "5.7.1", format!("Unsupported feature: {f}")),
            MappingError::Limit(l) => (554, "5.6.0", l.clone()),
        }
    }
}

pub struct ApiCall {
    pub recipients: Vec<String>,
    pub body: serde_json::Value,
}

pub struct Mapped {
    pub calls: Vec<ApiCall>,
    pub warnings: Vec<String>,
}
