//! The register of data sources (`policies/sources.toml`, BRIEF C11): the
//! public services and private operators that deposit residents' data into
//! the commons, each with its basis, the categories it may deposit, how it
//! names a resident, where a resident may be sent back after approving a
//! link, and how long its deposits are kept.
//!
//! Loaded and validated at start beside the register of processing; a bad
//! entry stops the start naming its line and its id. A source and a
//! purpose are separate roles (MyData's data source and data user): a
//! source deposits, it never reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::category::Categories;

pub const BUILTIN_SOURCES: &str = include_str!("../../policies/sources.toml");

/// Why a source may deposit about a resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceBasis {
    /// The resident linked the source to their space (and may revoke it).
    ResidentAuthorisation,
    /// One of the agglomération's own services, GDPR art. 6(1)(e); the
    /// resident may object (art. 21).
    PublicTask,
}

impl SourceBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceBasis::ResidentAuthorisation => "resident_authorisation",
            SourceBasis::PublicTask => "public_task",
        }
    }
}

/// How a source names the resident a deposit is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    /// A handle the source obtained when the resident approved the link:
    /// stable per (source, resident), unlinkable across sources.
    Link,
    /// The FranceConnect pivot identity; public-task sources only.
    Pivot,
}

impl Matching {
    pub fn as_str(self) -> &'static str {
        match self {
            Matching::Link => "link",
            Matching::Pivot => "pivot",
        }
    }
}

/// One entry of the register of sources.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub id: String,
    pub name_fr: String,
    pub name_en: String,
    /// What the source deposits and why, as the resident reads it before
    /// approving a link (and in the art. 14 notice).
    pub description_fr: String,
    pub description_en: String,
    /// Who is responsible for the data before it reaches the commons.
    pub controller: String,
    pub basis: SourceBasis,
    pub matching: Matching,
    /// The data categories it may deposit.
    pub categories: Vec<String>,
    /// Where a resident may be sent back after approving a link from the
    /// source's own site (exact match).
    pub redirect_uris: Vec<String>,
    pub retention_days: u32,
}

impl Source {
    pub fn may_deposit(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c == category)
    }

    /// Whether `uri` is one of the registered redirect URIs, compared
    /// exactly (no prefix, no normalisation: RFC 6749 §3.1.2.3's simple
    /// string comparison, which open redirects cannot slip through).
    pub fn redirect_allowed(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|u| u == uri)
    }

    pub fn name(&self, french: bool) -> &str {
        if french { &self.name_fr } else { &self.name_en }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile {
    #[serde(default)]
    source: Vec<Source>,
}

/// The register of sources, by id.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    sources: BTreeMap<String, Source>,
}

fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|at| text[..at].lines().count() + 1)
        .unwrap_or(0)
}

/// A redirect URI a source may register: absolute https, or http on the
/// loopback interface (development, RFC 8252 §7.3); no fragment, no user
/// information.
fn acceptable_redirect(uri: &str) -> Result<(), &'static str> {
    let rest = if let Some(rest) = uri.strip_prefix("https://") {
        rest
    } else if let Some(rest) = uri.strip_prefix("http://") {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        // `[::1]:8080`, `[::1]`, `127.0.0.1:8080`, `localhost`.
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().map_or("", |h| h),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        if !matches!(host, "127.0.0.1" | "::1" | "localhost") {
            return Err("http is for the loopback interface only; use https");
        }
        rest
    } else {
        return Err("must be an absolute https URL");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err("needs a host and no user information");
    }
    if uri.contains('#') {
        return Err("must not carry a fragment");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces");
    }
    Ok(())
}

impl Sources {
    /// Parses and validates a register of sources against the data
    /// categories. An empty file is an empty register.
    pub fn parse(text: &str, categories: &Categories) -> Result<Self, String> {
        let file: SourcesFile = super::parse_policy(text)?;
        let mut sources = BTreeMap::new();
        for s in file.source {
            let at = line_of(text, &format!("id = \"{}\"", s.id));
            let fail = |m: String| format!("line {at}: source `{}`: {m}", s.id);
            if s.id.is_empty()
                || s.id.len() > 64
                || !s
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(fail(
                    "ids are lower-case words joined by '-' (64 characters at most)".into(),
                ));
            }
            for text in [
                &s.name_fr,
                &s.name_en,
                &s.description_fr,
                &s.description_en,
                &s.controller,
            ] {
                if text.trim().is_empty() {
                    return Err(fail(
                        "names, descriptions (French and English) and controller are required"
                            .into(),
                    ));
                }
            }
            if s.categories.is_empty() {
                return Err(fail("names no data category".into()));
            }
            for c in &s.categories {
                let category = categories
                    .category(c)
                    .map_err(|_| fail(format!("unknown data category `{c}`")))?;
                if categories.def(&category).is_some_and(|d| d.special) {
                    return Err(fail(format!(
                        "`{c}` is a special category (GDPR art. 9): sources never deposit it"
                    )));
                }
            }
            if s.matching == Matching::Pivot && s.basis != SourceBasis::PublicTask {
                return Err(fail(
                    "pivot matching is for public_task sources only; others link".into(),
                ));
            }
            if s.matching == Matching::Pivot && !s.redirect_uris.is_empty() {
                return Err(fail(
                    "a pivot source links no resident: redirect_uris must be empty".into(),
                ));
            }
            for uri in &s.redirect_uris {
                acceptable_redirect(uri).map_err(|m| fail(format!("redirect_uri `{uri}` {m}")))?;
            }
            if s.retention_days == 0 {
                return Err(fail("retention_days must be positive".into()));
            }
            let id = s.id.clone();
            if sources.insert(id.clone(), s).is_some() {
                return Err(format!("line {at}: source `{id}` is declared twice"));
            }
        }
        Ok(Self { sources })
    }

    pub fn builtin(categories: &Categories) -> Result<Self, String> {
        Self::parse(BUILTIN_SOURCES, categories)
    }

    pub fn get(&self, id: &str) -> Option<&Source> {
        self.sources.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Source> {
        self.sources.values()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cats() -> Categories {
        Categories::builtin().unwrap()
    }

    fn one(fields: &str) -> String {
        format!(
            "[[source]]\nid = \"s\"\nname_fr = \"S\"\nname_en = \"S\"\n\
             description_fr = \"d\"\ndescription_en = \"d\"\ncontroller = \"C\"\n\
             retention_days = 30\n{fields}\n"
        )
    }

    #[test]
    fn the_builtin_register_is_valid_and_has_one_source_of_each_basis() {
        let s = Sources::builtin(&cats()).unwrap();
        let bases: Vec<_> = s.all().map(|s| (s.basis, s.matching)).collect();
        assert!(bases.contains(&(SourceBasis::PublicTask, Matching::Pivot)));
        assert!(bases.contains(&(SourceBasis::ResidentAuthorisation, Matching::Link)));
        assert!(s.get("energie-locale").unwrap().may_deposit("energy"));
        assert!(!s.get("energie-locale").unwrap().may_deposit("income"));
    }

    #[test]
    fn an_empty_file_is_an_empty_register() {
        assert_eq!(Sources::parse("", &cats()).unwrap().all().count(), 0);
    }

    #[test]
    fn each_bad_entry_is_refused_naming_its_line_and_id() {
        let link = "basis = \"resident_authorisation\"\nmatching = \"link\"";
        for (fields, words) in [
            (
                format!("{link}\ncategories = [\"nope\"]\nredirect_uris = []"),
                "unknown data category",
            ),
            (
                format!("{link}\ncategories = []\nredirect_uris = []"),
                "no data category",
            ),
            (
                format!("{link}\ncategories = [\"health\"]\nredirect_uris = []"),
                "special category",
            ),
            (
                "basis = \"resident_authorisation\"\nmatching = \"pivot\"\ncategories = [\"energy\"]\nredirect_uris = []".to_string(),
                "public_task sources only",
            ),
            (
                "basis = \"public_task\"\nmatching = \"pivot\"\ncategories = [\"energy\"]\nredirect_uris = [\"https://a.example/r\"]".to_string(),
                "must be empty",
            ),
            (
                format!("{link}\ncategories = [\"energy\"]\nredirect_uris = [\"http://evil.example/r\"]"),
                "loopback",
            ),
            (
                format!("{link}\ncategories = [\"energy\"]\nredirect_uris = [\"https://a.example/r#x\"]"),
                "fragment",
            ),
            (
                format!("{link}\ncategories = [\"energy\"]\nredirect_uris = [\"https://u@a.example/r\"]"),
                "user information",
            ),
            (
                format!("{link}\ncategories = [\"energy\"]\nredirect_uris = [\"/relative\"]"),
                "absolute",
            ),
        ] {
            let e = Sources::parse(&one(&fields), &cats()).unwrap_err();
            assert!(e.contains(words) && e.contains("source `s`") && e.starts_with("line 2"), "{fields}: {e}");
        }
        let twice = format!(
            "{}{}",
            one(&format!(
                "{link}\ncategories = [\"energy\"]\nredirect_uris = []"
            )),
            one(&format!(
                "{link}\ncategories = [\"energy\"]\nredirect_uris = []"
            ))
        );
        assert!(
            Sources::parse(&twice, &cats())
                .unwrap_err()
                .contains("twice")
        );
        let unknown_key = one(&format!(
            "{link}\ncategories = [\"energy\"]\nredirect_uris = []\nextra = 1"
        ));
        assert!(Sources::parse(&unknown_key, &cats()).is_err());
    }

    #[test]
    fn redirect_uris_compare_exactly() {
        let s = Sources::builtin(&cats()).unwrap();
        let e = s.get("energie-locale").unwrap();
        assert!(e.redirect_allowed("https://energie-locale.example/coffre/retour"));
        for other in [
            "https://energie-locale.example/coffre/retour/",
            "https://energie-locale.example/coffre/retour?x=1",
            "https://energie-locale.example/coffre/retou",
            "HTTPS://energie-locale.example/coffre/retour",
            "https://energie-locale.example.evil.example/coffre/retour",
        ] {
            assert!(!e.redirect_allowed(other), "{other}");
        }
        assert!(s.get("regie-eau").unwrap().redirect_uris.is_empty());
        for loopback in [
            "http://[::1]/r",
            "http://[::1]:8080/r",
            "http://localhost/r",
            "http://127.0.0.1:1/r",
        ] {
            assert!(acceptable_redirect(loopback).is_ok(), "{loopback}");
        }
        assert!(acceptable_redirect("http://[::2]/r").is_err());
    }
}
