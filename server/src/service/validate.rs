//! Limits on the plain fields of requests (ids, tokens, names, free text, figures) and the
//! checks the handlers run before any domain code sees a value. Tensor limits live with the
//! codec in `fedcsg_wire::limits`. Errors name the field and the rule.

use crate::error::ServerError;

/// Worker ids, job ids and round tokens: what the coordinator issues is far shorter.
pub const MAX_ID_LEN: usize = 256;
/// Worker and job names.
pub const MAX_NAME_LEN: usize = 128;
/// Free text a peer sends along (e.g. a worker's description of its data).
pub const MAX_DESCRIPTION_LEN: usize = 1024;

fn bad(why: String) -> ServerError {
    ServerError::InvalidArgument { why }
}

/// A required identifier: 1..=MAX_ID_LEN printable ASCII bytes without spaces.
pub fn id<'a>(value: &'a str, field: &str) -> Result<&'a str, ServerError> {
    if value.is_empty() {
        return Err(bad(format!("{field} is missing")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(bad(format!("{field} is longer than {MAX_ID_LEN} bytes")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "{field} must be printable ASCII without spaces"
        )));
    }
    Ok(value)
}

/// An identifier that may be left empty (meaning none).
pub fn optional_id<'a>(value: &'a str, field: &str) -> Result<Option<&'a str>, ServerError> {
    if value.is_empty() {
        Ok(None)
    } else {
        id(value, field).map(Some)
    }
}

/// Human-readable text of at most `max` bytes without control characters.
pub fn text<'a>(value: &'a str, field: &str, max: usize) -> Result<&'a str, ServerError> {
    if value.len() > max {
        return Err(bad(format!("{field} is longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(format!("{field} contains control characters")));
    }
    Ok(value)
}

/// A measured quantity (a loss, seconds): finite and not negative.
pub fn non_negative(value: f64, field: &str) -> Result<f64, ServerError> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(bad(format!("{field} must be finite and >= 0, got {value}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule refuses what it should and names the field; good values pass unchanged.
    #[test]
    fn rules_refuse_and_name_the_field() {
        assert_eq!(id("job-1", "job_id").unwrap(), "job-1");
        for bad in [
            "",
            "a b",
            "tab\there",
            "nul\0",
            "é",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            let e = id(bad, "job_id").unwrap_err().to_string();
            assert!(e.contains("job_id"), "{bad:?}: {e}");
        }
        assert_eq!(optional_id("", "t").unwrap(), None);
        assert!(optional_id("a b", "t").is_err());
        assert_eq!(
            text("Fashion-MNIST, 1/4", "d", 64).unwrap(),
            "Fashion-MNIST, 1/4"
        );
        assert!(
            text("line\nbreak", "d", 64)
                .unwrap_err()
                .to_string()
                .contains("control")
        );
        assert!(text("\u{1b}[31mred", "d", 64).is_err());
        assert!(
            text(&"x".repeat(65), "d", 64)
                .unwrap_err()
                .to_string()
                .contains("64")
        );
        assert_eq!(non_negative(0.0, "loss").unwrap(), 0.0);
        for bad in [-1e-9, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(
                non_negative(bad, "loss")
                    .unwrap_err()
                    .to_string()
                    .contains("loss")
            );
        }
    }
}
