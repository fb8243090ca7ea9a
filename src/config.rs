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

/// Largest scenario or policy file read (a hand-written one is a few KiB; a manifest of many
/// ElasticGateways a few hundred).
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;
/// Largest CSV load read: a month at one sample a second is about 40 MiB.
pub const MAX_CSV_BYTES: u64 = 64 << 20;

/// Reads a text file of at most `max` bytes: a larger one (or an endless one, `/dev/zero`) is
/// refused after `max` bytes, not read whole into memory.
pub fn read_bounded(path: &std::path::Path, max: u64) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "larger than {} MiB: not a file this reads (is it the right path?)",
            max >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// Parses YAML (or JSON) into a raw value, or one error saying where the syntax breaks.
pub fn parse_value(text: &str) -> Result<serde_json::Value, FieldError> {
    let mut docs = parse_values(text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err(FieldError::new("(document)", "is empty")),
        n => Err(FieldError::new(
            "(document)",
            format!("holds {n} YAML documents (separated by ---); one is expected here"),
        )),
    }
}

/// Parses a stream of YAML documents (separated by `---`); empty documents are skipped.
pub fn parse_values(text: &str) -> Result<Vec<serde_json::Value>, FieldError> {
    // `.nan` and `.inf` come through as the strings they are, so that a number field holding
    // one is refused at its own path, not as a syntax error of the whole document.
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| {
            FieldError::new(
                "(document)",
                format!("not valid YAML: {}", first_line(&e.to_string())),
            )
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// A number field given `.nan` or `.inf` (which the parser passes on as text): said plainly.
fn non_finite(msg: &str) -> String {
    let text = ["\".nan\"", "\".inf\"", "\"-.inf\"", "\"+.inf\""]
        .iter()
        .find(|s| msg.starts_with(&format!("invalid type: string {s}")));
    match text {
        Some(s) => format!("must be a finite number, not {}", s.trim_matches('"')),
        None => msg.to_string(),
    }
}

/// The parser's message without the advice it appends for library users.
fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or(msg)
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
                non_finite(&e.inner().to_string()),
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
