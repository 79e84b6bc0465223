//! One-line messages for TOML files that do not parse or do not fit (spec files, the config).
//!
//! toml's own message spans several lines (it quotes the input) and, for a wrong type, does not
//! say which key held the value. The span does: it points into the line `key = value` under the
//! last `[section]` header, so the message can name `retry.max_attempts` the way validation
//! errors name their field.

/// `msg (line N)` prefixed with the dotted key the error is about, when one can be found.
pub fn describe(text: &str, err: &toml::de::Error) -> String {
    let msg = err
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .trim_end();
    let Some(span) = err.span() else {
        return msg.to_string();
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    match key_at(text, start) {
        Some(key) if !msg.contains(&format!("`{key}`")) => {
            format!("{key}: {msg} (line {line})")
        }
        _ => format!("{msg} (line {line})"),
    }
}

/// The dotted key whose value starts at byte `at`: `section.key`, or `key` before any header.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        name: Option<String>,
        retry: Option<Retry>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Retry {
        max_attempts: u32,
    }

    fn err(text: &str) -> String {
        describe(text, &toml::from_str::<Doc>(text).unwrap_err())
    }

    #[test]
    fn a_wrong_type_names_its_dotted_key_and_line() {
        let e = err("name = \"x\"\n\n[retry]\nmax_attempts = \"three\"\n");
        assert!(e.starts_with("retry.max_attempts: invalid type"), "{e}");
        assert!(e.ends_with("(line 4)"), "{e}");
        assert_eq!(e.lines().count(), 1);
        let e = err("name = 5\n");
        assert!(e.starts_with("name: invalid type"), "{e}");
    }

    #[test]
    fn a_syntax_error_keeps_one_line() {
        let e = err("[retry\n");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("(line 1)"), "{e}");
    }
}
