//! The one rule for yes/no settings, shared by every configuration reader
//! (server, TLS, providers), so `on` means the same everywhere and a typo is
//! refused instead of silently read as "off".

/// Parses a yes/no setting: `1`, `true`, `yes`, `on` are yes; `0`, `false`,
/// `no`, `off` are no (any case, surrounding blanks ignored). Anything else,
/// blank included, is `None`: the caller reports it naming its variable (or,
/// for blank, takes its default).
///
/// ```
/// use hodei_core::switch::parse_switch;
/// assert_eq!(parse_switch(" On "), Some(true));
/// assert_eq!(parse_switch("0"), Some(false));
/// assert_eq!(parse_switch("enabled"), None);
/// ```
#[must_use]
pub fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// What the error of a refused yes/no value says it expected.
pub const EXPECTED: &str = "a yes/no value (1, true, yes, on / 0, false, no, off)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_yes_and_no_and_nothing_else() {
        for v in ["1", "true", "TRUE", "Yes", "on", " ON "] {
            assert_eq!(parse_switch(v), Some(true), "{v}");
        }
        for v in ["0", "false", "No", "OFF", " off"] {
            assert_eq!(parse_switch(v), Some(false), "{v}");
        }
        for v in ["", " ", "y", "enabled", "2", "truee"] {
            assert_eq!(parse_switch(v), None, "{v}");
        }
    }
}
