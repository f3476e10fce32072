//! One line of a source's deposit stream (`POST /api/v1/source/deposits`,
//! NDJSON), parsed and checked for form before anything is looked up; the
//! FranceConnect pivot identity and its canonical form; the pairing code a
//! resident reads aloud at a counter.
//!
//! Pure: no I/O, time passed in. What needs the store (the link, the
//! resident's state, the category's fields) is checked by
//! `service::deposits`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Timestamp;

/// A line longer than this is refused without being parsed.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// A source's own record id: 1 to this many printable ASCII characters.
pub const MAX_RECORD_ID: usize = 128;
/// How far in the future an `observed_at` may be (clock skew).
pub const OBSERVED_AT_SKEW_SECS: i64 = 300;

/// Why one line of a deposit stream is refused. The stream goes on; the
/// line's answer carries the stable code (`as_str`), which is also in the
/// error catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineRefusal {
    /// Not JSON, or not an object.
    InvalidJson,
    /// Over `MAX_LINE_BYTES`.
    LineTooLong,
    /// A member missing or of the wrong form (`id`, `category`, `fields`,
    /// the subject), or both a handle and a pivot.
    InvalidDeposit,
    /// `observed_at` neither RFC 3339 nor seconds since the epoch, or in
    /// the future.
    InvalidObservedAt,
}

impl LineRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            LineRefusal::InvalidJson => "invalid_json",
            LineRefusal::LineTooLong => "line_too_long",
            LineRefusal::InvalidDeposit => "invalid_deposit",
            LineRefusal::InvalidObservedAt => "invalid_observed_at",
        }
    }
}

/// Whom a deposit is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The handle a link source obtained when the resident approved it.
    Handle(String),
    /// The pivot identity, for public-task sources that match by pivot.
    Pivot(PivotIdentity),
}

/// The FranceConnect pivot identity: what French administrations use to
/// match a person between services.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivotIdentity {
    pub family_name: String,
    pub given_names: String,
    /// `YYYY-MM-DD`.
    pub birthdate: String,
    /// The INSEE code of the birthplace (5 characters); empty for a person
    /// born abroad, as FranceConnect gives it.
    #[serde(default)]
    pub birthplace: String,
    /// The INSEE code of the birth country (`99100` for France).
    #[serde(default = "france")]
    pub birthcountry: String,
    /// `female` or `male`, as FranceConnect gives it.
    pub gender: String,
}

/// FranceConnect's code of France as a birth country.
const FRANCE: &str = "99100";

fn france() -> String {
    FRANCE.to_string()
}

impl PivotIdentity {
    /// The canonical form two services agree on whatever their spelling:
    /// upper case without accents, runs of spaces, hyphens and apostrophes
    /// made one space; fields joined by `|` (which the normalisation never
    /// leaves inside a field). `None` when a field cannot be a pivot's.
    pub fn canonical(&self) -> Option<String> {
        let family = canonical_name(&self.family_name)?;
        let given = canonical_name(&self.given_names)?;
        let birthdate = self.birthdate.trim();
        let b = birthdate.as_bytes();
        let date_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !date_ok {
            return None;
        }
        let country = self.birthcountry.trim();
        if country.len() != 5
            || !country.starts_with("99")
            || !country.bytes().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let place = self.birthplace.trim().to_ascii_uppercase();
        // INSEE codes: five digits, or Corsica's 2A/2B followed by three;
        // none for a person born abroad.
        let place_ok = if country == FRANCE {
            place.len() == 5
                && (place.bytes().all(|c| c.is_ascii_digit())
                    || ((place.starts_with("2A") || place.starts_with("2B"))
                        && place[2..].bytes().all(|c| c.is_ascii_digit())))
        } else {
            place.is_empty()
        };
        if !place_ok {
            return None;
        }
        let gender = match self.gender.trim() {
            "female" | "F" | "f" => "F",
            "male" | "M" | "m" => "M",
            _ => return None,
        };
        Some(format!(
            "{family}|{given}|{birthdate}|{place}|{country}|{gender}"
        ))
    }
}

/// A name in canonical form: decomposed (NFD) and stripped of its marks,
/// ligatures spelt out, upper case, runs of spaces, hyphens and apostrophes
/// made one space. `None` when it holds anything else (digits, `|`…).
fn canonical_name(s: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    let mut out = String::new();
    for c in s.nfd().filter(|c| !is_combining_mark(*c)) {
        match c {
            'œ' | 'Œ' => out.push_str("OE"),
            'æ' | 'Æ' => out.push_str("AE"),
            'ß' => out.push_str("SS"),
            c if c.is_alphabetic() && c != '\u{2BC}' => out.extend(c.to_uppercase()),
            ' ' | '-' | '\'' | '\u{2019}' | '\u{2BC}' | '\u{2010}' | '\u{2011}' | '\u{2013}' => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c if c.is_whitespace() => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            _ => return None,
        }
    }
    let out = out.trim_end().to_string();
    (!out.is_empty() && out.chars().count() <= 200).then_some(out)
}

/// One deposit, well formed (its category and fields are checked against
/// the register and the categories by the service).
#[derive(Clone, Debug, PartialEq)]
pub struct Deposit {
    /// The source's own id of the record: with the source, the key of
    /// idempotency.
    pub id: String,
    pub subject: Subject,
    pub category: String,
    pub fields: Map<String, Value>,
    pub observed_at: Timestamp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeposit {
    id: Value,
    #[serde(default)]
    handle: Option<Value>,
    #[serde(default)]
    pivot: Option<Value>,
    category: Value,
    fields: Value,
    observed_at: Value,
}

/// The source's record id as given on a line, when it can be read, so the
/// answer to a refused line can name it (printable ASCII only: it is echoed).
/// A line read once: its record id when one is readable (for the answer,
/// even when the line is refused) and the deposit or the refusal.
pub struct ReadLine {
    pub id: Option<String>,
    pub deposit: Result<Deposit, LineRefusal>,
}

/// Reads a line once, for every use the stream makes of it.
pub fn read_line(line: &[u8], now: Timestamp) -> ReadLine {
    let deposit = parse_line(line, now);
    let id = match &deposit {
        Ok(d) => Some(d.id.clone()),
        Err(_) => line_id(line),
    };
    ReadLine { id, deposit }
}

pub fn line_id(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let id = v.get("id")?.as_str()?;
    valid_record_id(id).then(|| id.to_string())
}

fn valid_record_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_RECORD_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses one line (without its line break) at `now`.
pub fn parse_line(line: &[u8], now: Timestamp) -> Result<Deposit, LineRefusal> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineRefusal::LineTooLong);
    }
    let value: Value = serde_json::from_slice(line).map_err(|_| LineRefusal::InvalidJson)?;
    if !value.is_object() {
        return Err(LineRefusal::InvalidJson);
    }
    let raw: RawDeposit = serde_json::from_value(value).map_err(|_| LineRefusal::InvalidDeposit)?;
    let id = raw
        .id
        .as_str()
        .filter(|id| valid_record_id(id))
        .ok_or(LineRefusal::InvalidDeposit)?
        .to_string();
    let subject = match (raw.handle, raw.pivot) {
        (Some(Value::String(h)), None)
            if !h.is_empty() && h.len() <= 128 && h.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Subject::Handle(h)
        }
        (None, Some(p)) => {
            Subject::Pivot(serde_json::from_value(p).map_err(|_| LineRefusal::InvalidDeposit)?)
        }
        _ => return Err(LineRefusal::InvalidDeposit),
    };
    let category = raw
        .category
        .as_str()
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or(LineRefusal::InvalidDeposit)?
        .to_string();
    let Value::Object(fields) = raw.fields else {
        return Err(LineRefusal::InvalidDeposit);
    };
    if fields.is_empty() {
        return Err(LineRefusal::InvalidDeposit);
    }
    let observed_at = match &raw.observed_at {
        Value::Number(n) => n.as_i64().ok_or(LineRefusal::InvalidObservedAt)?,
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| LineRefusal::InvalidObservedAt)?
            .timestamp(),
        _ => return Err(LineRefusal::InvalidObservedAt),
    };
    if observed_at < 0 || observed_at > now + OBSERVED_AT_SKEW_SECS {
        return Err(LineRefusal::InvalidObservedAt);
    }
    Ok(Deposit {
        id,
        subject,
        category,
        fields,
        observed_at,
    })
}

/// The alphabet of pairing codes: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V
/// pairs, so a code read aloud or copied by hand cannot be misread.
const PAIRING_ALPHABET: &[u8] = b"ACDEFGHJKMNPQRTWXY34679";
// Rejection sampling needs a limit below 256: the alphabet's size must
// not divide 256 (else `limit` would wrap to 0 and nothing be accepted).
const _: () = assert!(256 % PAIRING_ALPHABET.len() != 0);

/// Characters of a pairing code (two groups of four).
pub const PAIRING_LEN: usize = 8;
/// A pairing code or an authorisation code lives this long.
pub const LINK_CODE_SECS: i64 = 15 * 60;

/// The columns of an import file in CSV (`coffre import`) that are not
/// fields of the category: the record id, the category, when the source
/// observed the value, and whom it is about (a handle, or the pivot
/// identity's members prefixed with `pivot.`). Every other column is a
/// field of the category; an empty cell is a field left out.
pub const CSV_ID: &str = "id";
pub const CSV_CATEGORY: &str = "category";
pub const CSV_OBSERVED_AT: &str = "observed_at";
pub const CSV_HANDLE: &str = "handle";
pub const CSV_PIVOT_PREFIX: &str = "pivot.";

/// One CSV row of an import file as the deposit line it stands for (the
/// same JSON object a source streams), so it goes through the same parsing
/// and checks. A cell is typed by the category's field: an integer field's
/// cell is a number when it reads as one, a boolean's `true`/`false`, a
/// list's items are separated by `;` (as extracts write them); anything
/// else stays text, for validation to judge. `header` and `row` come from
/// the CSV reader; a row with more cells than the header is refused.
pub fn csv_row_as_line(
    header: &[&str],
    row: &[&str],
    categories: &super::category::Categories,
) -> Result<Vec<u8>, LineRefusal> {
    use super::category::FieldType;
    if row.len() > header.len() {
        return Err(LineRefusal::InvalidDeposit);
    }
    let cell = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i))
            .copied()
            .filter(|c| !c.is_empty())
    };
    let mut line = Map::new();
    for member in [CSV_ID, CSV_CATEGORY, CSV_HANDLE] {
        if let Some(v) = cell(member) {
            line.insert(member.into(), Value::String(v.into()));
        }
    }
    if let Some(at) = cell(CSV_OBSERVED_AT) {
        // Seconds since the epoch or RFC 3339, as in a stream.
        let value = at
            .parse::<i64>()
            .map_or_else(|_| Value::String(at.into()), Value::from);
        line.insert(CSV_OBSERVED_AT.into(), value);
    }
    let types = cell(CSV_CATEGORY)
        .and_then(|c| categories.def_named(c))
        .map(|d| &d.fields);
    let mut pivot = Map::new();
    let mut fields = Map::new();
    for (name, value) in header.iter().zip(row) {
        if value.is_empty() || [CSV_ID, CSV_CATEGORY, CSV_HANDLE, CSV_OBSERVED_AT].contains(name) {
            continue;
        }
        if let Some(member) = name.strip_prefix(CSV_PIVOT_PREFIX) {
            pivot.insert(member.into(), Value::String((*value).into()));
            continue;
        }
        let typed = match types.and_then(|t| t.get(*name)) {
            Some(FieldType::Integer { .. }) => value
                .parse::<i64>()
                .map_or_else(|_| Value::String((*value).into()), Value::from),
            Some(FieldType::Boolean) => match *value {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => Value::String(other.into()),
            },
            Some(FieldType::StringList { .. }) => Value::Array(
                value
                    .split(';')
                    .map(|item| Value::String(item.trim().into()))
                    .collect(),
            ),
            _ => Value::String((*value).into()),
        };
        fields.insert((*name).into(), typed);
    }
    if !pivot.is_empty() {
        line.insert("pivot".into(), Value::Object(pivot));
    }
    line.insert("fields".into(), Value::Object(fields));
    serde_json::to_vec(&Value::Object(line)).map_err(|_| LineRefusal::InvalidDeposit)
}

/// A pairing code, `XXXX-XXXX`, from a source of random bytes. Bytes at or
/// above the largest multiple of the alphabet's size are drawn again, so
/// every character is equally likely (23^8 ≈ 7.8e10 codes, living 15
/// minutes; a source's failed exchanges are rate-limited to 10 and then
/// one every 6 seconds, per token and per address).
pub fn pairing_code(mut random_byte: impl FnMut() -> u8) -> String {
    let n = PAIRING_ALPHABET.len();
    let limit = (256 / n * n) as u8;
    let mut out = String::with_capacity(PAIRING_LEN + 1);
    for i in 0..PAIRING_LEN {
        if i == PAIRING_LEN / 2 {
            out.push('-');
        }
        let b = loop {
            let b = random_byte();
            if b < limit {
                break b;
            }
        };
        out.push(PAIRING_ALPHABET[b as usize % n] as char);
    }
    out
}

/// A pairing code as typed back (any case, with or without the dash or
/// spaces) in its canonical form, or `None` if it cannot be one.
pub fn canonical_pairing_code(typed: &str) -> Option<String> {
    let chars: Vec<u8> = typed
        .bytes()
        .filter(|b| !matches!(b, b'-' | b' '))
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if chars.len() != PAIRING_LEN || !chars.iter().all(|b| PAIRING_ALPHABET.contains(b)) {
        return None;
    }
    let (a, b) = chars.split_at(PAIRING_LEN / 2);
    Some(format!(
        "{}-{}",
        String::from_utf8_lossy(a),
        String::from_utf8_lossy(b)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_795_867_200;

    fn pivot() -> serde_json::Value {
        serde_json::json!({"family_name": "Diallo", "given_names": "Awa Marie", "birthdate": "1984-03-02", "birthplace": "69123", "gender": "female"})
    }

    #[test]
    fn a_well_formed_line_parses_with_either_subject() {
        let line = serde_json::json!({"id": "m-1", "handle": "abc123", "category": "energy", "fields": {"kwh_year": 3200}, "observed_at": "2026-11-20T00:00:00Z"});
        let d = parse_line(line.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(d.subject, Subject::Handle("abc123".into()));
        assert_eq!(d.observed_at, 1_795_132_800);
        let line = serde_json::json!({"id": "m-2", "pivot": pivot(), "category": "energy", "fields": {"kwh_year": 1}, "observed_at": 1_700_000_000});
        let d = parse_line(line.to_string().as_bytes(), NOW).unwrap();
        assert!(matches!(d.subject, Subject::Pivot(_)));
    }

    #[test]
    fn each_malformed_line_has_its_code() {
        let ok = serde_json::json!({"id": "m-1", "handle": "abc", "category": "energy", "fields": {"kwh_year": 1}, "observed_at": 1});
        let with = |k: &str, v: serde_json::Value| {
            let mut o = ok.clone();
            o[k] = v;
            o.to_string()
        };
        let without = |k: &str| {
            let mut o = ok.clone();
            o.as_object_mut().unwrap().remove(k);
            o.to_string()
        };
        for (line, code) in [
            ("{not json".to_string(), LineRefusal::InvalidJson),
            ("[1,2]".to_string(), LineRefusal::InvalidJson),
            (without("id"), LineRefusal::InvalidDeposit),
            (with("id", "".into()), LineRefusal::InvalidDeposit),
            (with("id", "a b".into()), LineRefusal::InvalidDeposit),
            (
                with("id", "x".repeat(129).into()),
                LineRefusal::InvalidDeposit,
            ),
            (without("handle"), LineRefusal::InvalidDeposit),
            (with("pivot", pivot()), LineRefusal::InvalidDeposit),
            (with("handle", "../x".into()), LineRefusal::InvalidDeposit),
            (
                with("fields", serde_json::json!({})),
                LineRefusal::InvalidDeposit,
            ),
            (
                with("fields", serde_json::json!([1])),
                LineRefusal::InvalidDeposit,
            ),
            (with("extra", 1.into()), LineRefusal::InvalidDeposit),
            (
                with("observed_at", "yesterday".into()),
                LineRefusal::InvalidObservedAt,
            ),
            (
                with("observed_at", (NOW + 3600).into()),
                LineRefusal::InvalidObservedAt,
            ),
            (
                with("observed_at", (-5).into()),
                LineRefusal::InvalidObservedAt,
            ),
        ] {
            assert_eq!(
                parse_line(line.as_bytes(), NOW).unwrap_err(),
                code,
                "{line}"
            );
        }
        let long = with("category", "x".repeat(MAX_LINE_BYTES).into());
        assert_eq!(
            parse_line(long.as_bytes(), NOW).unwrap_err(),
            LineRefusal::LineTooLong
        );
        assert_eq!(
            line_id(with("id", "r-7".into()).as_bytes()).as_deref(),
            Some("r-7")
        );
        assert_eq!(line_id(b"{not json"), None);
    }

    #[test]
    fn pivots_agree_whatever_the_spelling() {
        let a: PivotIdentity = serde_json::from_value(pivot()).unwrap();
        let b = PivotIdentity {
            family_name: "  DIALLO ".into(),
            given_names: "awa-marie".into(),
            gender: "F".into(),
            ..a.clone()
        };
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            a.canonical().unwrap(),
            "DIALLO|AWA MARIE|1984-03-02|69123|99100|F"
        );
        let accents = PivotIdentity {
            family_name: "Lefèvre d'Açores".into(),
            ..a.clone()
        };
        assert_eq!(
            accents.canonical().unwrap(),
            "LEFEVRE D ACORES|AWA MARIE|1984-03-02|69123|99100|F"
        );
        for bad in [
            PivotIdentity {
                family_name: "".into(),
                ..a.clone()
            },
            PivotIdentity {
                family_name: "A|B".into(),
                ..a.clone()
            },
            PivotIdentity {
                birthdate: "02/03/1984".into(),
                ..a.clone()
            },
            PivotIdentity {
                birthplace: "Lyon".into(),
                ..a.clone()
            },
            PivotIdentity {
                gender: "x".into(),
                ..a.clone()
            },
        ] {
            assert_eq!(bad.canonical(), None, "{bad:?}");
        }
        let corsica = PivotIdentity {
            birthplace: "2a004".into(),
            ..a
        };
        assert!(corsica.canonical().unwrap().contains("|2A004|"));
    }

    #[test]
    fn pairing_codes_read_aloud_and_type_back() {
        let mut bytes = [255u8, 0, 1, 2, 3, 253, 4, 5, 6, 7].into_iter();
        let code = pairing_code(|| bytes.next().unwrap());
        assert_eq!(code, "ACDE-FGHJ", "255 and 253 are drawn again");
        assert_eq!(
            canonical_pairing_code("acde fghj").as_deref(),
            Some("ACDE-FGHJ")
        );
        assert_eq!(
            canonical_pairing_code("ACDEFGHJ").as_deref(),
            Some("ACDE-FGHJ")
        );
        assert_eq!(canonical_pairing_code("ACDE-FGH0"), None);
        assert_eq!(canonical_pairing_code("ACDE-FGH"), None);
        for b in 0..253u8 {
            let c = pairing_code(|| b);
            assert_eq!(canonical_pairing_code(&c), Some(c.clone()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod csv_tests {
    use super::*;
    use crate::domain::category::Categories;

    fn line(header: &[&str], row: &[&str]) -> Value {
        let categories = Categories::builtin().unwrap();
        serde_json::from_slice(&csv_row_as_line(header, row, &categories).unwrap()).unwrap()
    }

    #[test]
    fn a_csv_row_is_the_line_a_source_would_stream_typed_by_the_category() {
        let header = [
            "id",
            "category",
            "observed_at",
            "pivot.family_name",
            "pivot.given_names",
            "annual_kwh",
            "renovation_interest",
            "heating",
            "energy_label",
        ];
        let got = line(
            &header,
            &[
                "c-1",
                "energy",
                "1700000000",
                "Diallo",
                "Awa",
                "4200",
                "true",
                "gas",
                "",
            ],
        );
        assert_eq!(
            got,
            serde_json::json!({
                "id": "c-1", "category": "energy", "observed_at": 1_700_000_000,
                "pivot": {"family_name": "Diallo", "given_names": "Awa"},
                "fields": {"annual_kwh": 4200, "renovation_interest": true, "heating": "gas"}
            })
        );
        // A cell that does not read as its type stays text: validation
        // refuses it with the field's name, as for a stream.
        let got = line(
            &header,
            &[
                "c-2",
                "energy",
                "2023-11-14T22:13:20Z",
                "",
                "",
                "beaucoup",
                "oui",
                "",
                "",
            ],
        );
        assert_eq!(
            got["fields"],
            serde_json::json!({"annual_kwh": "beaucoup", "renovation_interest": "oui"})
        );
        assert_eq!(got["observed_at"], "2023-11-14T22:13:20Z");
        assert!(got.get("pivot").is_none());
        // Lists as extracts write them.
        let got = line(
            &["id", "category", "handle", "benefits"],
            &["c-3", "income", "h", "rsa; apl"],
        );
        assert_eq!(got["fields"]["benefits"], serde_json::json!(["rsa", "apl"]));
        assert_eq!(got["handle"], "h");
        // More cells than the header.
        let categories = Categories::builtin().unwrap();
        assert_eq!(
            csv_row_as_line(&["id"], &["a", "b"], &categories),
            Err(LineRefusal::InvalidDeposit)
        );
    }
}
