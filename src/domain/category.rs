//! Data categories (`policies/categories.toml`): what may be stored in the
//! vault, field by field, with types and limits.
//!
//! A value that does not fit is refused before anything is stored. Error
//! messages name the category and field, never the submitted value.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The register shipped with the binary (reviewed like code).
pub const BUILTIN_CATEGORIES: &str = include_str!("../../policies/categories.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldType {
    String { max_len: usize },
    Date,
    Integer { min: i64, max: i64 },
    Boolean,
    Enum { values: Vec<String> },
    Email,
    Phone,
    PostalCode,
    InseeCode,
    StringList { max_items: usize, max_len: usize },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryDef {
    pub label_fr: String,
    pub label_en: String,
    /// GDPR art. 9 special category.
    pub special: bool,
    /// How long a superseded version is kept after the rectification that
    /// replaced it (the retention job deletes it then).
    #[serde(default = "default_history_days")]
    pub history_days: u32,
    pub fields: BTreeMap<String, FieldType>,
}

fn default_history_days() -> u32 {
    365
}

/// A validated category name: only names present in the register exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(String);

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Category {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A category name read back from what was recorded (a consent, a
    /// record): it was checked against the register when it was written,
    /// and the register may have dropped it since, so only its form is
    /// checked here.
    pub fn recorded(name: &str) -> Option<Category> {
        is_identifier(name).then(|| Category(name.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct Categories {
    defs: BTreeMap<String, CategoryDef>,
}

/// Why a submitted record was refused. Codes are stable API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("unknown data category `{0}`")]
    UnknownCategory(String),
    #[error("category `{category}` has no field `{field}`")]
    UnknownField { category: String, field: String },
    #[error("field `{field}` of `{category}`: {reason}")]
    InvalidField {
        category: String,
        field: String,
        reason: String,
    },
    #[error("a record must be a JSON object with at least one field")]
    NotAnObject,
}

impl Categories {
    /// Parses and checks a categories file; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let defs: BTreeMap<String, CategoryDef> = super::parse_policy(text)?;
        for (name, def) in &defs {
            if !is_identifier(name) {
                return Err(format!(
                    "category `{name}`: names are lower-case identifiers"
                ));
            }
            if def.fields.is_empty() {
                return Err(format!("category `{name}` has no field"));
            }
            for (field, ty) in &def.fields {
                if !is_identifier(field) {
                    return Err(format!(
                        "field `{name}.{field}`: names are lower-case identifiers"
                    ));
                }
                if let FieldType::Integer { min, max } = ty
                    && min > max
                {
                    return Err(format!("field `{name}.{field}`: min > max"));
                }
            }
        }
        Ok(Self { defs })
    }

    pub fn builtin() -> Result<Self, String> {
        Self::parse(BUILTIN_CATEGORIES)
    }

    /// Every category of a list of names (a purpose's, a consent's), or the
    /// first unknown one.
    pub fn all_of(&self, names: &[String]) -> Result<Vec<Category>, RecordError> {
        names.iter().map(|n| self.category(n)).collect()
    }

    /// A category by name, or `unknown_category`.
    pub fn category(&self, name: &str) -> Result<Category, RecordError> {
        if self.defs.contains_key(name) {
            Ok(Category(name.to_string()))
        } else {
            Err(RecordError::UnknownCategory(truncate(name)))
        }
    }

    /// The definition of the category named `name`, if the register has it.
    pub fn def_named(&self, name: &str) -> Option<&CategoryDef> {
        self.defs.get(name)
    }

    pub fn def(&self, c: &Category) -> Option<&CategoryDef> {
        self.defs.get(&c.0)
    }

    /// How long superseded versions of `name` are kept, in days.
    pub fn history_days(&self, name: &str) -> u32 {
        self.defs
            .get(name)
            .map_or_else(default_history_days, |d| d.history_days)
    }

    /// Whether `name` is a GDPR art. 9 special category (false if unknown).
    pub fn is_special(&self, name: &str) -> bool {
        self.defs.get(name).is_some_and(|d| d.special)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &CategoryDef)> {
        self.defs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks a submitted record against its category; returns it with
    /// strings trimmed. Nothing is stored unless this succeeds.
    pub fn validate(
        &self,
        c: &Category,
        record: &Value,
    ) -> Result<Map<String, Value>, RecordError> {
        let def = self
            .defs
            .get(&c.0)
            .ok_or_else(|| RecordError::UnknownCategory(c.0.clone()))?;
        let Value::Object(obj) = record else {
            return Err(RecordError::NotAnObject);
        };
        if obj.is_empty() {
            return Err(RecordError::NotAnObject);
        }
        let mut out = Map::new();
        for (field, value) in obj {
            let ty = def
                .fields
                .get(field)
                .ok_or_else(|| RecordError::UnknownField {
                    category: c.0.clone(),
                    field: truncate(field),
                })?;
            let invalid = |reason: &str| RecordError::InvalidField {
                category: c.0.clone(),
                field: field.clone(),
                reason: reason.to_string(),
            };
            if value.is_null() {
                // An explicit null clears the field in the new version.
                continue;
            }
            out.insert(field.clone(), check(ty, value).map_err(|r| invalid(&r))?);
        }
        Ok(out)
    }
}

fn truncate(s: &str) -> String {
    // Unknown names are echoed to help the caller, but never at length.
    s.chars().take(40).collect()
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check(ty: &FieldType, v: &Value) -> Result<Value, String> {
    let text = || {
        v.as_str()
            .map(str::trim)
            .ok_or_else(|| "expected a string".to_string())
    };
    match ty {
        FieldType::String { max_len } => {
            let s = text()?;
            if s.chars().count() > *max_len {
                return Err(format!("at most {max_len} characters"));
            }
            if s.chars().any(|c| c.is_control() && c != '\n') {
                return Err("control characters are not allowed".into());
            }
            Ok(Value::String(s.to_string()))
        }
        FieldType::Date => {
            let s = text()?;
            if !valid_date(s) {
                return Err("expected a date YYYY-MM-DD".into());
            }
            Ok(Value::String(s.to_string()))
        }
        FieldType::Integer { min, max } => {
            let n = v.as_i64().ok_or("expected a whole number")?;
            if n < *min || n > *max {
                return Err(format!("expected a number from {min} to {max}"));
            }
            Ok(Value::from(n))
        }
        FieldType::Boolean => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| "expected true or false".into()),
        FieldType::Enum { values } => {
            let s = text()?;
            if !values.iter().any(|x| x == s) {
                return Err(format!("expected one of: {}", values.join(", ")));
            }
            Ok(Value::String(s.to_string()))
        }
        FieldType::Email => {
            let s = text()?;
            let ok = s.len() <= 254
                && s.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !s.chars().any(char::is_whitespace)
                        && domain.chars().filter(|c| *c == '@').count() == 0
                });
            if !ok {
                return Err("expected an e-mail address".into());
            }
            Ok(Value::String(s.to_string()))
        }
        FieldType::Phone => {
            let s = text()?;
            let compact: String = s
                .chars()
                .filter(|c| !matches!(c, ' ' | '.' | '-'))
                .collect();
            let digits = compact.strip_prefix('+').unwrap_or(&compact);
            let ok = digits.bytes().all(|b| b.is_ascii_digit())
                && if compact.starts_with('+') {
                    (8..=15).contains(&digits.len())
                } else {
                    digits.len() == 10 && digits.starts_with('0')
                };
            if !ok {
                return Err("expected a phone number (0X XX XX XX XX or +33…)".into());
            }
            Ok(Value::String(compact))
        }
        FieldType::PostalCode => {
            let s = text()?;
            if s.len() != 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err("expected a 5-digit postal code".into());
            }
            Ok(Value::String(s.to_string()))
        }
        FieldType::InseeCode => {
            let s = text()?;
            if !is_insee_code(s) {
                return Err("expected a 5-character INSEE code".into());
            }
            Ok(Value::String(s.to_string()))
        }
        FieldType::StringList { max_items, max_len } => {
            let items = v.as_array().ok_or("expected a list of strings")?;
            if items.len() > *max_items {
                return Err(format!("at most {max_items} items"));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let s = item
                    .as_str()
                    .map(str::trim)
                    .ok_or("expected a list of strings")?;
                if s.chars().count() > *max_len || s.chars().any(char::is_control) {
                    return Err(format!("items of at most {max_len} characters"));
                }
                out.push(Value::String(s.to_string()));
            }
            Ok(Value::Array(out))
        }
    }
}

fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1900..=2200).contains(&y) && (1..=days).contains(&d)
}

/// A commune's INSEE code: five digits, or 2A/2B and three digits
/// (Corsica).
pub fn is_insee_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && (b[..2].iter().all(u8::is_ascii_digit) || &b[..2] == b"2A" || &b[..2] == b"2B")
        && b[2..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_register_parses_and_has_the_brief_categories() {
        let c = Categories::builtin().unwrap();
        for name in [
            "identity",
            "contact",
            "household",
            "housing",
            "energy",
            "mobility",
            "income",
            "health",
        ] {
            c.category(name).unwrap();
        }
        let health = c.category("health").unwrap();
        assert!(c.def(&health).unwrap().special);
        let contact = c.def(&c.category("contact").unwrap()).unwrap();
        for f in ["email", "phone", "postal_address"] {
            assert!(contact.fields.contains_key(f));
        }
    }

    #[test]
    fn validation_refuses_without_echoing_values() {
        let c = Categories::builtin().unwrap();
        let contact = c.category("contact").unwrap();
        let ok = c
            .validate(
                &contact,
                &json!({"email": " awa@example.org ", "phone": "06 12 34 56 78"}),
            )
            .unwrap();
        assert_eq!(ok["email"], "awa@example.org");
        assert_eq!(ok["phone"], "0612345678");
        let e = c
            .validate(&contact, &json!({"email": "secret-value"}))
            .unwrap_err();
        assert!(matches!(e, RecordError::InvalidField { .. }));
        assert!(!e.to_string().contains("secret-value"));
        let e = c.validate(&contact, &json!({"mail": "x"})).unwrap_err();
        assert!(matches!(e, RecordError::UnknownField { .. }));
        assert!(matches!(
            c.category("nope"),
            Err(RecordError::UnknownCategory(_))
        ));
        let long = "x".repeat(301);
        assert!(
            c.validate(&contact, &json!({"postal_address": long}))
                .is_err()
        );
        let id = c.category("identity").unwrap();
        assert!(
            c.validate(&id, &json!({"birthdate": "2023-02-29"}))
                .is_err()
        );
        assert!(c.validate(&id, &json!({"birthdate": "2024-02-29"})).is_ok());
        // Multi-byte input where ASCII is expected is refused, never a panic.
        assert!(
            c.validate(&contact, &json!({"commune_insee": "€12"}))
                .is_err()
        );
        assert!(
            c.validate(&contact, &json!({"commune_insee": "2A004"}))
                .is_ok()
        );
    }

    #[test]
    fn a_bad_register_names_the_line() {
        let e = Categories::parse("[a]\nlabel_fr = 1\n").unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
    }
}
