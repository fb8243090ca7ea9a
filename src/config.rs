//! Reading YAML documents with errors that name the field at fault.

use std::fmt;

use serde::de::DeserializeOwned;

/// One problem in a document, at a field path such as `spec.metrics[0].query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Parses YAML (or JSON) into a raw value, or one error saying where the syntax breaks.
pub fn parse_value(text: &str) -> Result<serde_json::Value, FieldError> {
    serde_saphyr::from_str(text)
        .map_err(|e| FieldError::new("(document)", format!("not valid YAML: {e}")))
}

/// Deserialises `value` into `T`. A type error names its field; so does every field `T` does not
/// know (unless `allowed_unknown` accepts its path), since a typo would otherwise be ignored.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    allowed_unknown: impl Fn(&str) -> bool,
) -> Result<T, Vec<FieldError>> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
    let mut errors: Vec<FieldError> = unknown
        .into_iter()
        .filter(|p| !allowed_unknown(p))
        .map(|p| FieldError::new(p, "unknown field (not in the schema; a typo?)"))
        .collect();
    match parsed {
        Ok(v) if errors.is_empty() => Ok(v),
        Ok(_) => Err(errors),
        Err(e) => {
            let path = e.path().to_string();
            errors.push(FieldError::new(
                if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                e.inner().to_string(),
            ));
            Err(errors)
        }
    }
}

/// Formats errors one per line, for the terminal.
pub fn render(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
