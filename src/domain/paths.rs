//! Paths of this site that the service may send a browser back to: after
//! a language switch, a failed form, or a login. Pure.

/// A path on this site, safe to redirect to: it starts with one `/` (never
/// `//host` or a scheme), holds visible ASCII only (browsers drop tabs and
/// line breaks from URLs, so `/\t/evil.example` would become
/// `//evil.example`), no backslash (read as a slash), and its path part
/// (before `?`) has no empty, `.` or `..` segment, no percent-encoded dot, slash
/// or backslash and no `;`, which a browser or a proxy could resolve into
/// another path than the one checked (`/moi/../api/…`).
pub fn local_path(p: &str) -> bool {
    let path = p.split_once('?').map_or(p, |(path, _)| path);
    let lowered = path.to_ascii_lowercase();
    p.starts_with('/')
        && !p.starts_with("//")
        && p.bytes().all(|b| b.is_ascii_graphic())
        && !p.contains('\\')
        && !p.contains("://")
        && !path.contains(';')
        && !path.contains("//")
        && !["%2e", "%2f", "%5c"].iter().any(|e| lowered.contains(e))
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// `path` if it is a page of the resident's space to come back to after a
/// login (e.g. a source's approval page with its query): a local path
/// (above) under `/moi`, at most 2,048 bytes. Anything else is none.
pub fn resident_return_path(path: &str) -> Option<String> {
    let under_moi = path == "/moi" || path.starts_with("/moi/") || path.starts_with("/moi?");
    (path.len() <= 2048 && under_moi && local_path(path)).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_of_this_site_are_local() {
        for good in [
            "/",
            "/registre",
            "/moi/sources?state=a&redirect_uri=https%3A%2F%2Fs.example%2F",
            "/moi/donnees?x=..%2F",
        ] {
            assert!(local_path(good), "{good}");
        }
        for bad in [
            "",
            "moi",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "/a\tb",
            "/moi/../api/v1/me/export",
            "/moi/./x",
            "/moi/..",
            "/moi/%2e%2e/dpo",
            "/moi/%2E%2E/dpo",
            "/moi/.%2e/dpo",
            "/moi%2f..%2fdpo",
            "/moi/%5c..",
            "/moi;x=1/../dpo",
            "/moi/x://y",
        ] {
            assert!(!local_path(bad), "{bad}");
        }
    }

    #[test]
    fn only_a_page_of_the_residents_space_is_a_return_path() {
        for good in [
            "/moi",
            "/moi/sources",
            "/moi?lang=en",
            "/moi/sources/x/autoriser?state=a&redirect_uri=https%3A%2F%2Fs.example%2F",
        ] {
            assert_eq!(resident_return_path(good).as_deref(), Some(good));
        }
        for bad in [
            "",
            "/",
            "moi",
            "/moiré",
            "//evil.example/moi",
            "/moi//evil.example",
            "/moi/\\evil",
            "https://evil.example/moi",
            "/moi/\n",
            "/moi/ x",
            "/dpo",
            "/aidant/moi",
            "/moi/../api/v1/me/export",
            "/moi/%2e%2e/dpo",
        ] {
            assert_eq!(resident_return_path(bad), None, "{bad:?}");
        }
        assert_eq!(
            resident_return_path(&format!("/moi/{}", "a".repeat(2100))),
            None
        );
    }
}
