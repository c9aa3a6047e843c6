//! The page at `/`: one self-contained HTML document (its style and script inline, nothing
//! fetched but `/decisions`) that shows the decisions per outcome, filters them, and copies a
//! row's rule line. Its Content-Security-Policy allows exactly its own style and script, by
//! their SHA-256, and no markup built from strings (Trusted Types): a name is only ever text.

use std::sync::OnceLock;

use base64::Engine;
use ring::digest::{SHA256, digest};

/// The document, with `{style}` and `{script}` where they go.
const TEMPLATE: &str = include_str!("page/decisions.html");
/// Its style sheet.
const STYLE: &str = include_str!("page/decisions.css");
/// Its script.
const SCRIPT: &str = include_str!("page/decisions.js");

/// The page, and the policy it is served under.
pub(crate) struct Page {
    /// The document.
    pub html: String,
    /// The `Content-Security-Policy` header.
    pub policy: String,
}

/// The page, built once.
pub(crate) fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| Page {
        html: TEMPLATE.replacen("{style}", STYLE, 1).replacen("{script}", SCRIPT, 1),
        policy: format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'none'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
             require-trusted-types-for 'script'; trusted-types 'none'",
            sha256(SCRIPT),
            sha256(STYLE)
        ),
    })
}

/// A CSP hash source for an inline element whose text is `text`.
fn sha256(text: &str) -> String {
    let hash = digest(&SHA256, text.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(hash.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy names the hashes of exactly the inline style and script the document holds,
    /// and the document loads nothing from elsewhere.
    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let page = page();
        let inline = |open: &str, close: &str| {
            let start = page.html.find(open).expect(open) + open.len();
            page.html[start..].split(close).next().unwrap().to_string()
        };
        assert_eq!(inline("<script>", "</script>"), SCRIPT);
        assert_eq!(inline("<style>", "</style>"), STYLE);
        assert!(page.policy.contains(&format!("script-src {};", sha256(SCRIPT))), "{}", page.policy);
        assert!(page.policy.contains(&format!("style-src {};", sha256(STYLE))), "{}", page.policy);
        assert!(page.policy.starts_with("default-src 'none';"));
        assert_eq!(page.html.matches("<script").count(), 1);
        assert_eq!(page.html.matches("<style").count(), 1);
        for external in ["src=", "href=", "http:", "https:", "@import", "url("] {
            assert!(!page.html.contains(external), "the page refers to something outside: {external}");
        }
    }

    /// The script never turns strings into markup: values from `/decisions` are text.
    #[test]
    fn the_script_sets_text_never_markup() {
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("] {
            assert!(!SCRIPT.contains(sink), "the script uses {sink}");
        }
        assert!(SCRIPT.contains("textContent"));
    }
}
