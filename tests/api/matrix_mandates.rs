//! The access matrix with state (issue 19, "authorization with state"):
//! every route an aidant uses to act for a resident, under every state a
//! mandate can be in, and the partner routes under every kind of purpose of
//! the register — through HTTP, on both backends, one app per backend and
//! table.
//!
//! Each cell states what the route answers (status and stable code), what
//! the audit log gained (an allow, a refusal, or nothing at all), and that
//! a refused request changed nothing of the resident (records, consents,
//! mandates, renewal drafts), while an allowed write did. The states are set
//! up once, through the routes where one exists (a resident gives or
//! withdraws a consent, objects, restricts, erases; a référent revokes a
//! mandate, takes démarches back from the structure or removes an aidant; an
//! aidant switches structure) and by direct store calls where none does
//! (residents, structures, agents, mandates: their creation needs a
//! FranceConnect login); time is the test clock.
//!
//! `matrix.rs` walks every role through every route; `model.rs` checks the
//! decision function itself against a reference model. This file is the
//! level between: the same states, asked of the routes and the pages.

use axum::http::Method;
use coffre::audit::{AuditEntry, Decision};
use coffre::domain::mandate::totp;
use coffre::domain::{Demarche, Role};
use serde_json::{Value, json};

use crate::support::{Session, TestApp, TestResponse, each_backend};

const CAMILLE: &str = "a1d00000-0000-4000-8000-000000000001";
const KARIM: &str = "a1d00000-0000-4000-8000-000000000002";
const SOPHIE: &str = "a1d00000-0000-4000-8000-000000000003";
const CCAS: &str = coffre::demo::STRUCTURE_CCAS;
/// A structure whose référent took the mandate's démarches back from it
/// after the mandate was made, with its aidant and référent.
const NARROWED: &str = "matrix-narrowed";
const NARROWED_AIDANT: &str = "matrix-aidant-narrowed";
const NARROWED_REFERENT: &str = "matrix-referent-narrowed";
/// An aidant of the CCAS who also works for a second structure, and
/// switched to it.
const SECOND: &str = "matrix-second";
const SWITCHED_AIDANT: &str = "matrix-aidant-switched";
/// An aidant of another structure only.
const ELSEWHERE: &str = "matrix-elsewhere";
const ELSEWHERE_AIDANT: &str = "matrix-aidant-elsewhere";
/// An aidant of the CCAS who may act but not create mandates.
const NO_CREATE_AIDANT: &str = "matrix-aidant-no-create";

const DAY: i64 = 86_400;

// --- the aidant's routes --------------------------------------------------

/// One column: a route (or page) an aidant uses to act for a resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// `GET /api/v1/aidant/residents`: does it list the resident?
    List,
    /// `GET /api/v1/aidant/mandates/expiring`: does it list the resident?
    Expiring,
    /// `GET /aidant`: does the page list the resident?
    HomePage,
    /// `GET /api/v1/aidant/residents/{r}/data/housing?demarche=logement`
    Read,
    /// `GET /aidant/usagers/{r}?demarche=logement` (reads each category)
    ReadPage,
    /// `PUT /api/v1/aidant/residents/{r}/data/housing?demarche=logement`
    Write,
    /// `POST /aidant/usagers/{r}/housing?demarche=logement` (form)
    WritePage,
    /// `POST /api/v1/aidant/residents/{r}/consents?demarche=famille`, refused
    Refuse,
    /// The same, given (`cantine-scolaire`: all its categories in `famille`)
    Give,
    /// `GET /api/v1/mandates/{id}`
    Mandate,
    /// `GET /aidant/mandats/{id}`
    MandatePage,
    /// `GET /mandates/{id}/attestation`
    Attestation,
    /// `GET /api/v1/mandates/verify?attestation=…` (public)
    Verify,
    /// `POST /api/v1/mandates/{id}/renew`
    Renew,
    /// `POST /aidant/mandats/{id}/renouvellement` (form)
    RenewPage,
    /// `POST /api/v1/mandates/{id}/revoke` (`famille` only, with TOTP)
    Revoke,
    /// `POST /aidant/mandats/{id}/revocation` (the whole mandate, with TOTP)
    RevokePage,
}

/// In this order: reads before writes, revocations last (they end what
/// the columns before them use).
const ROUTES: [Route; 17] = [
    Route::List,
    Route::Expiring,
    Route::HomePage,
    Route::Read,
    Route::ReadPage,
    Route::Write,
    Route::WritePage,
    Route::Refuse,
    Route::Give,
    Route::Mandate,
    Route::MandatePage,
    Route::Attestation,
    Route::Verify,
    Route::Renew,
    Route::RenewPage,
    Route::Revoke,
    Route::RevokePage,
];

/// What goes with a request.
enum Payload {
    Empty,
    Json(Value),
    Form(String),
}

impl Route {
    fn page(self) -> bool {
        matches!(
            self,
            Route::HomePage
                | Route::ReadPage
                | Route::WritePage
                | Route::MandatePage
                | Route::Attestation
                | Route::RenewPage
                | Route::RevokePage
        )
    }

    fn lists(self) -> bool {
        matches!(self, Route::List | Route::Expiring | Route::HomePage)
    }

    /// When allowed, it changes the resident's state.
    fn writes(self) -> bool {
        matches!(
            self,
            Route::Write
                | Route::WritePage
                | Route::Refuse
                | Route::Give
                | Route::Renew
                | Route::RenewPage
                | Route::Revoke
                | Route::RevokePage
        )
    }

    fn success(self) -> u16 {
        match self {
            Route::Renew => 201,
            Route::WritePage | Route::RenewPage | Route::RevokePage => 303,
            _ => 200,
        }
    }

    /// The action of its entry when allowed, and when refused.
    fn actions(self) -> (&'static str, &'static str) {
        match self {
            Route::List | Route::Expiring | Route::HomePage => ("mandate.list", "mandate.list"),
            Route::Read | Route::ReadPage => ("data.read", "data.read"),
            Route::Write | Route::WritePage => ("data.write", "data.write"),
            // The decision is asked as `consent.give` whatever the answer.
            Route::Refuse => ("consent.refuse", "consent.give"),
            Route::Give => ("consent.give", "consent.give"),
            Route::Mandate | Route::MandatePage | Route::Attestation => {
                ("mandate.read", "mandate.read")
            }
            Route::Verify => ("-", "-"),
            Route::Renew | Route::RenewPage => ("mandate.renew", "mandate.renew"),
            Route::Revoke | Route::RevokePage => ("mandate.revoke", "mandate.revoke"),
        }
    }

    fn request(self, row: &Row, csrf: &str, code: &str) -> (Method, String, Payload) {
        let (r, m) = (&row.resident, &row.mandate);
        let form = |rest: &str| {
            let csrf: String = url::form_urlencoded::byte_serialize(csrf.as_bytes()).collect();
            Payload::Form(format!("csrf_token={csrf}{rest}"))
        };
        let consent = |decision: &str| {
            (
                Method::POST,
                format!("/api/v1/aidant/residents/{r}/consents?demarche=famille"),
                Payload::Json(json!({"purpose": "cantine-scolaire", "decision": decision})),
            )
        };
        match self {
            Route::List => (
                Method::GET,
                "/api/v1/aidant/residents".into(),
                Payload::Empty,
            ),
            Route::Expiring => (
                Method::GET,
                "/api/v1/aidant/mandates/expiring".into(),
                Payload::Empty,
            ),
            Route::HomePage => (Method::GET, "/aidant".into(), Payload::Empty),
            Route::Read => (
                Method::GET,
                format!("/api/v1/aidant/residents/{r}/data/housing?demarche=logement"),
                Payload::Empty,
            ),
            Route::ReadPage => (
                Method::GET,
                format!("/aidant/usagers/{r}?demarche=logement"),
                Payload::Empty,
            ),
            Route::Write => (
                Method::PUT,
                format!("/api/v1/aidant/residents/{r}/data/housing?demarche=logement"),
                Payload::Json(
                    json!({"tenure": "owner", "dwelling_type": "house", "surface_m2": 80}),
                ),
            ),
            Route::WritePage => (
                Method::POST,
                format!("/aidant/usagers/{r}/housing?demarche=logement"),
                form("&tenure=hosted&dwelling_type=flat&surface_m2=30"),
            ),
            Route::Refuse => consent("refused"),
            Route::Give => consent("given"),
            Route::Mandate => (Method::GET, format!("/api/v1/mandates/{m}"), Payload::Empty),
            Route::MandatePage => (Method::GET, format!("/aidant/mandats/{m}"), Payload::Empty),
            Route::Attestation => (
                Method::GET,
                format!("/mandates/{m}/attestation"),
                Payload::Empty,
            ),
            Route::Verify => {
                let jws: String = url::form_urlencoded::byte_serialize(
                    row.attestation.as_deref().unwrap_or_default().as_bytes(),
                )
                .collect();
                (
                    Method::GET,
                    format!("/api/v1/mandates/verify?attestation={jws}"),
                    Payload::Empty,
                )
            }
            Route::Renew => (
                Method::POST,
                format!("/api/v1/mandates/{m}/renew"),
                Payload::Json(json!({})),
            ),
            Route::RenewPage => (
                Method::POST,
                format!("/aidant/mandats/{m}/renouvellement"),
                form(""),
            ),
            Route::Revoke => (
                Method::POST,
                format!("/api/v1/mandates/{m}/revoke"),
                Payload::Json(json!({"demarche": "famille", "totp": code})),
            ),
            Route::RevokePage => (
                Method::POST,
                format!("/aidant/mandats/{m}/revocation"),
                form(&format!("&totp={code}")),
            ),
        }
    }
}

/// What one route answers in one state.
#[derive(Clone, Copy, Debug)]
enum Cell {
    /// Allowed, and logged as an allow (reason `mandate`) before anything
    /// was shown or changed; a list shows the resident.
    Ok,
    /// A list, allowed and logged, that does not show the resident.
    Unlisted,
    /// Refused with this status and stable code; the refusal is logged.
    Denied(u16, &'static str),
    /// Refused with this status and code, and nothing logged: nothing of
    /// the resident was disclosed or changed.
    Unlogged(u16, &'static str),
    /// The revocation was allowed and logged, but nothing was live:
    /// 409 `nothing_to_revoke`, nothing changed.
    NothingLive,
    /// The public verify route's answer for the attestation (not logged).
    Says(&'static str),
    /// No attestation exists to verify.
    Na,
}

/// One state: who acts, for whom, under which mandate, and what each route
/// answers them.
struct Row {
    state: &'static str,
    actor: &'static str,
    /// The actor's current structure.
    structure: &'static str,
    resident: String,
    /// The resident exists (an unknown id must not be told apart).
    known: bool,
    /// The mandate's id (a random one when there is none).
    mandate: String,
    attestation: Option<String>,
    cells: [Cell; 17],
}

/// A session opened directly (for people without a demo persona), with its
/// CSRF token.
async fn session(app: &TestApp, id: &str, role: Role) -> Session {
    let cookie = coffre::http::session::open_session(&app.state, id, role, "demo", None)
        .await
        .unwrap();
    let cookie = cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me = app
        .send(Method::GET, "/api/v1/me", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
    let csrf = me.json()["csrf_token"].as_str().unwrap().to_string();
    Session { cookie, csrf }
}

/// A resident with a housing record they wrote themself; their session.
async fn resident(app: &TestApp, id: &str) -> Session {
    app.store
        .insert_resident(&crate::support::resident_id(id), app.clock.now())
        .await
        .unwrap();
    let s = session(app, id, Role::Resident).await;
    let res = app
        .as_user(
            &s,
            Method::PUT,
            "/api/v1/me/data/housing",
            Some(json!({"tenure": "tenant", "dwelling_type": "flat", "surface_m2": 42})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    s
}

/// A mandate of `structure` made by `aidant` at the app's clock: its id and
/// signed attestation. Creating one through the routes needs the resident's
/// FranceConnect login, so this (like `support::mandate` for the CCAS) and
/// the TOTP enrolment in [`agent`] (a CLI command) are the only calls this
/// file makes past the routes and the store.
async fn mandate(
    app: &TestApp,
    structure: &str,
    aidant: &str,
    resident: &str,
    demarches: &[Demarche],
    days: i64,
) -> (String, String) {
    let structure = app
        .store
        .find_structure(&crate::support::sid(structure))
        .await
        .unwrap()
        .unwrap();
    let (m, attestation) = coffre::service::mandates::create(
        &app.state,
        coffre::service::mandates::NewMandate {
            aidant_id: &crate::support::aid(aidant),
            structure: &structure,
            resident_id: &crate::support::resident_id(resident),
            demarches,
            duration_days: days,
            renews: None,
        },
        app.clock.now(),
    )
    .await
    .unwrap();
    (m.id.into_string(), attestation)
}

async fn structure(app: &TestApp, id: &str, siret: &str, demarches: &str) {
    app.store
        .insert_structure(
            &coffre::storage::StructureRow {
                id: crate::support::sid(id),
                siret: siret.into(),
                name: format!("Structure {id}"),
                allowed_demarches: crate::support::demarches(demarches),
                active: true,
            },
            app.clock.now(),
        )
        .await
        .unwrap();
}

async fn agent(app: &TestApp, id: &str, role: Role, structure: &str, can_create: bool) {
    app.store
        .insert_agent(
            &coffre::storage::AgentRow {
                id: crate::support::aid(id),
                role,
                display_name: id.into(),
                structure_id: Some(crate::support::sid(structure)),
                active: true,
                can_create_mandates: can_create,
            },
            None,
            app.clock.now(),
        )
        .await
        .unwrap();
    if role == Role::Aidant {
        coffre::service::mandates::enroll_totp_secret(
            &app.state,
            &crate::support::aid(id),
            coffre::demo::DEMO_TOTP_SECRET,
            app.clock.now(),
        )
        .await
        .unwrap();
    }
}

/// Everything a route could change of a resident: their records
/// (versions), consents, mandates (each démarche's state) and the drafts
/// renewing them.
async fn fingerprint(app: &TestApp, pool: &sqlx::AnyPool, resident: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in app
        .store
        .current_records(&crate::support::resident_id(resident))
        .await
        .unwrap()
    {
        out.push(format!("record {} v{}", r.category, r.version));
    }
    for c in app
        .store
        .consents_of(&crate::support::resident_id(resident))
        .await
        .unwrap()
    {
        out.push(format!(
            "consent {} {} [{}] until {:?} seq {}",
            c.purpose,
            c.state,
            crate::support::joined(&c.categories),
            c.valid_until,
            c.seq
        ));
    }
    for m in app
        .store
        .mandates_of_resident(&crate::support::resident_id(resident))
        .await
        .unwrap()
    {
        for a in app.store.mandate_authorisations(&m.id).await.unwrap() {
            out.push(format!(
                "mandate {} {} revoked {:?} by {:?}",
                m.id, a.demarche, a.revoked_at, a.revoked_by
            ));
        }
        let drafts: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM mandate_drafts WHERE renews = '{}'",
            m.id
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push(format!("drafts renewing {}: {drafts}", m.id));
    }
    out
}

/// The entries appended since `from`, decoded.
async fn entries_since(app: &TestApp, from: u64) -> Vec<AuditEntry> {
    let to = app.state.audit.size().await.unwrap();
    if to <= from {
        return Vec::new();
    }
    app.store
        .audit_entries(from, to)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, leaf)| AuditEntry::decode(&leaf).unwrap())
        .collect()
}

/// The stable code of a refusal: the JSON error model, or the code the
/// refusal page shows.
fn refusal_code(res: &TestResponse, page: bool) -> String {
    if page {
        let text = res.text();
        text.split("<code>")
            .skip(1)
            .filter_map(|s| s.split("</code>").next())
            .find(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
            .unwrap_or("")
            .to_string()
    } else {
        serde_json::from_slice::<Value>(&res.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn lists_resident(res: &TestResponse, route: Route, resident: &str) -> bool {
    if route == Route::HomePage {
        res.text().contains(&format!("/aidant/usagers/{resident}?"))
    } else {
        res.json()["authorisations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["resident_id"] == resident)
    }
}

/// Checks one cell; `Err` says how it differs.
async fn check_cell(
    app: &TestApp,
    pool: &sqlx::AnyPool,
    session: &Session,
    row: &Row,
    route: Route,
) -> Result<(), String> {
    let cell = row.cells[route as usize];
    if let Cell::Na = cell {
        return Ok(());
    }
    // A TOTP code is accepted once: each step-up gets the next step.
    let mut code = String::new();
    if matches!(route, Route::Revoke | Route::RevokePage) {
        app.clock.advance(30);
        let step = totp::step_at(app.clock.now());
        code = totp::code(coffre::demo::DEMO_TOTP_SECRET, step);
    }
    let (method, path, payload) = route.request(row, &session.csrf, &code);
    let before = fingerprint(app, pool, &row.resident).await;
    let size = app.state.audit.size().await.unwrap();

    let mut headers = vec![
        ("cookie", session.cookie.as_str()),
        ("x-csrf-token", session.csrf.as_str()),
    ];
    let body = match payload {
        Payload::Empty => String::new(),
        Payload::Json(v) => {
            headers.push(("content-type", "application/json"));
            v.to_string()
        }
        Payload::Form(f) => {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
            f
        }
    };
    let res = app.send(method, &path, &headers, body).await;
    let status = res.status.as_u16();
    let after = fingerprint(app, pool, &row.resident).await;
    let logged = entries_since(app, size).await;

    // The answer.
    let (allowed_action, denied_action) = route.actions();
    let expected_log: Option<(Decision, &str, &str)> = match cell {
        Cell::Ok | Cell::Unlisted => {
            if status != route.success() {
                return Err(format!(
                    "{status} {}, expected {}",
                    refusal_code(&res, route.page()),
                    route.success()
                ));
            }
            if route.lists() {
                let listed = lists_resident(&res, route, &row.resident);
                if listed != matches!(cell, Cell::Ok) {
                    return Err(format!("lists the resident: {listed}"));
                }
            }
            if route == Route::Read && !res.json()["fields"].is_object() {
                return Err(format!("no record: {}", res.text()));
            }
            // The structure's list is decided on the agent's role (one
            // entry for the whole list); an act on a resident, on the
            // mandate.
            let basis = match route {
                Route::List | Route::Expiring | Route::HomePage => "role",
                _ => "mandate",
            };
            Some((Decision::Allow, allowed_action, basis))
        }
        Cell::Says(want) => {
            let got = serde_json::from_slice::<Value>(&res.body)
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_string))
                .unwrap_or_default();
            if status != 200 || got != want {
                return Err(format!("{status} {got}, expected 200 {want}"));
            }
            None
        }
        Cell::Na => return Ok(()),
        Cell::Denied(..) | Cell::Unlogged(..) | Cell::NothingLive => {
            let (want, want_code, log) = match cell {
                Cell::Denied(s, c) => (s, c, Some((Decision::Deny, denied_action, c))),
                Cell::Unlogged(s, c) => (s, c, None),
                _ => (
                    409,
                    "nothing_to_revoke",
                    Some((Decision::Allow, allowed_action, "mandate")),
                ),
            };
            let got = refusal_code(&res, route.page());
            if status != want || got != want_code {
                return Err(format!("{status} {got}, expected {want} {want_code}"));
            }
            // Nothing of the resident's data on a refusal.
            if res.text().contains("\"fields\"") || res.text().contains("name=\"tenure\"") {
                return Err("a refusal shows the resident's data".into());
            }
            log
        }
    };

    // Nothing changed, unless an allowed write was asked.
    let should_change = route.writes() && matches!(cell, Cell::Ok);
    if should_change == (before == after) {
        return Err(format!(
            "the resident's state {}: before {before:?}, after {after:?}",
            if should_change {
                "did not change"
            } else {
                "changed"
            }
        ));
    }

    // The log: the entry expected last, every entry the actor's, naming
    // this resident or none (and none at all when the id is unknown).
    let Some((decision, action, reason)) = expected_log else {
        return match logged.as_slice() {
            [] => Ok(()),
            _ => Err(format!("logged although nothing should be: {logged:?}")),
        };
    };
    let Some(last) = logged.last() else {
        return Err("nothing logged".into());
    };
    if (last.decision, last.action.as_str(), last.reason.as_str()) != (decision, action, reason) {
        return Err(format!(
            "logged {:?} {} {}, expected {decision:?} {action} {reason}",
            last.decision, last.action, last.reason
        ));
    }
    for e in &logged {
        let names = |who: &Option<String>| match who {
            None => true,
            Some(r) => row.known && r == &row.resident,
        };
        if e.actor_id != row.actor || !names(&e.resident_id) || !names(&e.on_behalf_of) {
            return Err(format!("entry {e:?}"));
        }
    }
    // An allowed act for the resident is on record as theirs, with the
    // structure acting.
    if decision == Decision::Allow && !route.lists() {
        let want = (Some(row.resident.as_str()), Some(row.structure));
        let got = (last.on_behalf_of.as_deref(), last.structure_id.as_deref());
        if got != want {
            return Err(format!("allowed entry {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

/// How a state's mandate comes about.
#[derive(Clone, Copy)]
enum Made {
    /// No mandate (the mandate routes are asked a random id).
    Nothing,
    /// No mandate, and no such resident either.
    NoResident,
    /// A mandate of the CCAS for these démarches and days.
    Ccas(&'static [Demarche], i64),
    /// A mandate of the CCAS the référent then revoked, through her route.
    CcasRevoked,
    /// A mandate of the structure whose référent then took the démarches
    /// back, through her route.
    Narrowed,
}

const BOTH: [Demarche; 2] = [Demarche::Logement, Demarche::Famille];

/// The structures, agents and acts the states need, at the app's clock.
async fn set_up_agents(app: &TestApp) {
    let all = Demarche::ALL.map(|d| d.as_str()).join(",");
    structure(app, NARROWED, "44306184100047", &all).await;
    structure(app, SECOND, "21310555400017", "logement,famille").await;
    structure(app, ELSEWHERE, "21340172201787", "logement,famille").await;
    agent(app, NARROWED_AIDANT, Role::Aidant, NARROWED, true).await;
    agent(app, NARROWED_REFERENT, Role::Referent, NARROWED, true).await;
    agent(app, SWITCHED_AIDANT, Role::Aidant, CCAS, true).await;
    app.store
        .add_agent_structure(
            &crate::support::aid(SWITCHED_AIDANT),
            &crate::support::sid(SECOND),
        )
        .await
        .unwrap();
    agent(app, ELSEWHERE_AIDANT, Role::Aidant, ELSEWHERE, true).await;
    agent(app, NO_CREATE_AIDANT, Role::Aidant, CCAS, false).await;
}

/// The acts that make the aidant-side states, through their routes: the
/// CCAS's référent removes Karim from it, the other référent takes the
/// démarches back, an aidant switches structure.
async fn act_on_agents(app: &TestApp) {
    let sophie = app.login(SOPHIE).await;
    let path = format!("/api/v1/referent/aidants/{KARIM}/deactivate");
    let res = app.as_user(&sophie, Method::POST, &path, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let referent = session(app, NARROWED_REFERENT, Role::Referent).await;
    let res = app
        .as_user(
            &referent,
            Method::PUT,
            "/api/v1/referent/structure/demarches",
            Some(json!({"demarches": ["papiers"]})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let switched = session(app, SWITCHED_AIDANT, Role::Aidant).await;
    let res = app
        .as_user(
            &switched,
            Method::PUT,
            "/api/v1/aidant/structure",
            Some(json!({"structure_id": SECOND})),
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.text());
}

/// The resident and mandate of one state.
async fn set_up_state(
    app: &TestApp,
    n: usize,
    made: Made,
) -> (String, bool, String, Option<String>) {
    let resident_id = format!("0d0d0000-0000-4000-8000-{n:012}");
    let known = !matches!(made, Made::NoResident);
    if known {
        resident(app, &resident_id).await;
    }
    let (structure, aidant, demarches, days): (_, _, &[Demarche], _) = match made {
        Made::Nothing | Made::NoResident => {
            return (resident_id, known, uuid::Uuid::new_v4().to_string(), None);
        }
        Made::Ccas(demarches, days) => (CCAS, CAMILLE, demarches, days),
        Made::CcasRevoked => (CCAS, CAMILLE, &BOTH, 31),
        Made::Narrowed => (NARROWED, NARROWED_AIDANT, &BOTH, 31),
    };
    let (id, attestation) = mandate(app, structure, aidant, &resident_id, demarches, days).await;
    if let Made::CcasRevoked = made {
        let sophie = app.login(SOPHIE).await;
        let path = format!("/api/v1/mandates/{id}/revoke");
        let res = app.as_user(&sophie, Method::POST, &path, None).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    (resident_id, known, id, Some(attestation))
}

#[tokio::test]
async fn every_aidant_route_under_every_mandate_state() {
    each_backend(|app| async move {
        let started = std::time::Instant::now();
        use Cell::{Denied as D, NothingLive as NL, Ok as A, Says as S, Unlisted as H, Unlogged as U};
        use Made::{Ccas, CcasRevoked, NoResident, Narrowed, Nothing};
        let na = Cell::Na;
        let nm = D(403, "no_active_mandate");
        let nf = U(404, "not_found");
        let si = D(403, "structure_inactive");
        let role = D(403, "role_not_allowed");
        let renew = |code| U(422, code);
        // Columns: lists (API, expiring, page) | read (API, page), write
        // (API, page) | consent refused, given | mandate (API, page),
        // attestation, verify | renew (API, page) | revoke (API, page).
        #[rustfmt::skip]
        let table: Vec<(&str, &str, &str, Made, [Cell; 17])> = vec![
            ("valid (the positive control)", CAMILLE, CCAS, Ccas(&BOTH, 31),
                [A, A, A,  A, A, A, A,  A, A,  A, A, A, S("valid"),  A, A,  A, A]),
            ("valid, the structure's référent (reads, no writes)", SOPHIE, CCAS, Ccas(&BOTH, 31),
                [A, A, A,  A, A, role, role,  role, role,  A, A, A, S("valid"),  A, A,  A, A]),
            ("none", CAMILLE, CCAS, Nothing,
                [H, H, H,  nm, nm, nm, nm,  nm, nm,  nf, nf, nf, na,  nf, nf,  nf, nf]),
            ("unknown resident id (told as none)", CAMILLE, CCAS, NoResident,
                [H, H, H,  nm, nm, nm, nm,  nm, nm,  nf, nf, nf, na,  nf, nf,  nf, nf]),
            ("another démarche (transports: no housing, no school)", CAMILLE, CCAS, Ccas(&[Demarche::Transports], 31),
                [A, A, A,  nm, nm, nm, nm,  nm, nm,  A, A, A, S("valid"),  A, A,  NL, A]),
            ("expired", CAMILLE, CCAS, Ccas(&BOTH, 1),
                [H, H, H,  nm, nm, nm, nm,  nm, nm,  A, A, A, S("expired"),  A, A,  NL, NL]),
            ("revoked (by the référent)", CAMILLE, CCAS, CcasRevoked,
                [H, H, H,  nm, nm, nm, nm,  nm, nm,  A, A, A, S("revoked"),  renew("demarches_required"), renew("demarches_required"),  NL, NL]),
            // Documented: live mandates keep their démarches until they end
            // or are revoked; only a renewal is refused.
            ("démarches taken back from the structure by its référent", NARROWED_AIDANT, NARROWED, Narrowed,
                [A, A, A,  A, A, A, A,  A, A,  A, A, A, S("valid"),  renew("demarche_not_allowed"), renew("demarche_not_allowed"),  A, A]),
            ("aidant removed from the structure by its référent", KARIM, CCAS, Ccas(&BOTH, 31),
                [si, si, U(403, "structure_inactive"),  si, si, si, si,  si, si,  si, si, nf, S("valid"),  si, si,  si, si]),
            ("aidant switched to another structure of theirs", SWITCHED_AIDANT, SECOND, Ccas(&BOTH, 31),
                [H, H, H,  nm, nm, nm, nm,  nm, nm,  nf, nf, nf, S("valid"),  nf, nf,  nf, nf]),
            ("aidant of another structure", ELSEWHERE_AIDANT, ELSEWHERE, Ccas(&BOTH, 31),
                [H, H, H,  nm, nm, nm, nm,  nm, nm,  nf, nf, nf, S("valid"),  nf, nf,  nf, nf]),
            ("aidant without the right to create mandates (acts, revokes, does not renew)", NO_CREATE_AIDANT, CCAS, Ccas(&BOTH, 31),
                [A, A, A,  A, A, A, A,  A, A,  A, A, A, S("valid"),  D(403, "cannot_create_mandates"), D(403, "cannot_create_mandates"),  A, A]),
        ];

        set_up_agents(&app).await;
        let mut rows = Vec::new();
        for (n, (state, actor, structure, made, cells)) in table.into_iter().enumerate() {
            let (resident, known, mandate, attestation) = set_up_state(&app, n + 1, made).await;
            rows.push(Row { state, actor, structure, resident, known, mandate, attestation, cells });
        }
        act_on_agents(&app).await;
        // The day-long mandate ends; the 31-day ones now expire within 30 days.
        app.clock.advance(2 * DAY);
        // Sessions opened now (the clock moved past the earlier ones).
        let mut sessions = std::collections::HashMap::new();
        for a in [CAMILLE, KARIM, SOPHIE] {
            sessions.insert(a, app.login(a).await);
        }
        for a in [NARROWED_AIDANT, SWITCHED_AIDANT, ELSEWHERE_AIDANT, NO_CREATE_AIDANT] {
            sessions.insert(a, session(&app, a, Role::Aidant).await);
        }

        // A cell is found by its route's place among the columns.
        assert!(ROUTES.iter().enumerate().all(|(i, r)| *r as usize == i));
        let pool = app.raw_pool().await;
        let mut failures = Vec::new();
        let mut cells = 0;
        for route in ROUTES {
            for row in &rows {
                if matches!(row.cells[route as usize], Cell::Na) {
                    continue;
                }
                cells += 1;
                if let Err(why) = check_cell(&app, &pool, &sessions[row.actor], row, route).await {
                    failures.push(format!("{route:?} × {}: {why}", row.state));
                }
            }
        }
        pool.close().await;
        eprintln!("MATRIX mandates {}: {cells} cells in {:?}", app.backend, started.elapsed());
        assert!(failures.is_empty(), "{}:\n{}", app.backend, failures.join("\n"));
    })
    .await;
}

// --- the partners' routes, across purpose kinds ---------------------------

/// A partner: its id, OAuth client id and secret.
type Partner = (&'static str, &'static str, &'static str);
/// One row of the partner table: the case, what the resident did, who
/// asks, for which purpose and category, what the read and the listing
/// answer.
type PartnerCase = (
    &'static str,
    Did,
    Partner,
    Option<&'static str>,
    &'static str,
    Answer,
    Answer,
);

const LABO: Partner = (
    "labo-mobilite",
    "demo-labo-mobilite",
    "demo-secret-labo-mobilite-not-for-production",
);
const RENOV: Partner = (
    "renov-energie",
    "demo-renov-energie",
    "demo-secret-renov-energie-not-for-production",
);
/// The recipient of the explicit-consent purpose; not a demo partner.
const OBSERVATOIRE: Partner = (
    "observatoire-sante",
    "matrix-observatoire-sante",
    "matrix-secret-observatoire-sante",
);
/// Consent, records (labo-mobilite).
const STUDY: &str = "etude-mobilite";
/// Public task, records (renov-energie).
const RENOVATION: &str = "renovation-energetique";
/// Consent, extracts only (labo-mobilite).
const RESEARCH: &str = "aide-decision-publique";
/// Explicit consent (art. 9), extracts only (observatoire-sante).
const HEALTH: &str = "sante-territoriale";
/// Consent, no recipient at all.
const AGENDA: &str = "agenda-culturel";

/// What the resident did, through their own routes, before partners ask.
#[derive(Clone, Copy, Debug)]
enum Did {
    Nothing,
    Give(&'static str),
    /// Gave, for these categories only.
    GiveOnly(&'static str, &'static [&'static str]),
    /// Gave, until a day from now (the clock then moves two days on).
    GiveForADay(&'static str),
    /// Gave explicit consent (art. 9).
    GiveExplicit(&'static str),
    Refuse(&'static str),
    GiveThenWithdraw(&'static str),
    GiveThenRestrict(&'static str),
    GiveThenErase(&'static str),
    /// Gave, then asked to object to it: refused (422
    /// `objection_not_applicable`: a consent is withdrawn, not objected to).
    GiveThenObject(&'static str),
    /// Objected (art. 21) to a purpose on another basis than consent.
    Object(&'static str),
    /// Restricted processing (art. 18).
    Restrict,
}

/// What a partner route answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// A read allowed and logged with this basis (`consent`,
    /// `legal_basis`), the record shown.
    Reads(&'static str),
    /// A listing, allowed and logged, that shows the resident's pseudonym.
    Shows,
    /// A listing, allowed and logged, without the resident.
    Hides,
    /// Refused 403 with this code, logged.
    Refused(&'static str),
    /// Refused with this status and code before any decision; no entry.
    Unlogged(u16, &'static str),
}

async fn consent(app: &TestApp, s: &Session, body: Value) -> Value {
    let res = app
        .as_user(s, Method::POST, "/api/v1/me/consents", Some(body))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

async fn resident_does(app: &TestApp, s: &Session, did: Did) {
    let give = |purpose: &str| json!({"purpose": purpose, "decision": "given"});
    let me = |path: &'static str, body: Option<Value>| async move {
        app.as_user(s, Method::POST, path, body).await
    };
    match did {
        Did::Nothing => {}
        Did::Give(p) => {
            consent(app, s, give(p)).await;
        }
        Did::GiveOnly(p, categories) => {
            let body = json!({"purpose": p, "decision": "given", "categories": categories});
            consent(app, s, body).await;
        }
        Did::GiveForADay(p) => {
            let until = app.clock.now() + DAY;
            let body = json!({"purpose": p, "decision": "given", "until": until});
            consent(app, s, body).await;
        }
        Did::GiveExplicit(p) => {
            let body = json!({"purpose": p, "decision": "given", "explicit": true});
            consent(app, s, body).await;
        }
        Did::Refuse(p) => {
            consent(app, s, json!({"purpose": p, "decision": "refused"})).await;
        }
        Did::GiveThenWithdraw(p) => {
            let id = consent(app, s, give(p)).await["consent"]["id"]
                .as_str()
                .unwrap()
                .to_string();
            let path = format!("/api/v1/me/consents/{id}/withdraw");
            let res = app.as_user(s, Method::POST, &path, None).await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
        Did::GiveThenRestrict(p) => {
            consent(app, s, give(p)).await;
            let res = me("/api/v1/me/restriction", Some(json!({"restricted": true}))).await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
        Did::GiveThenErase(p) => {
            consent(app, s, give(p)).await;
            let res = me("/api/v1/me/erasure", None).await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
        Did::GiveThenObject(p) => {
            consent(app, s, give(p)).await;
            me("/api/v1/me/objections", Some(json!({"purpose": p})))
                .await
                .assert_error(422, "objection_not_applicable");
        }
        Did::Object(p) => {
            let res = me("/api/v1/me/objections", Some(json!({"purpose": p}))).await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
        Did::Restrict => {
            let res = me("/api/v1/me/restriction", Some(json!({"restricted": true}))).await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
    }
}

/// One partner cell (a read, or a listing).
struct PartnerCell<'a> {
    partner: &'a str,
    token: &'a str,
    resident: &'a str,
    /// The resident is still a resident (not erased).
    active: bool,
    pseudonym: &'a str,
    purpose: Option<&'a str>,
    category: &'a str,
}

/// Checks a partner's read (`listing` false) or listing; `Err` says how it
/// differs.
async fn check_partner_cell(
    app: &TestApp,
    pool: &sqlx::AnyPool,
    c: &PartnerCell<'_>,
    listing: bool,
    answer: Answer,
) -> Result<(), String> {
    let purpose = c
        .purpose
        .map(|p| format!("purpose={p}&"))
        .unwrap_or_default();
    let path = if listing {
        format!("/api/v1/partner/residents?{purpose}limit=1000")
    } else {
        format!(
            "/api/v1/partner/residents/{}/data/{}?{purpose}",
            c.pseudonym, c.category
        )
    };
    let before = fingerprint(app, pool, c.resident).await;
    let size = app.state.audit.size().await.unwrap();
    let bearer = format!("Bearer {}", c.token);
    let res = app
        .send(Method::GET, &path, &[("authorization", &bearer)], "")
        .await;
    let after = fingerprint(app, pool, c.resident).await;
    let logged = entries_since(app, size).await;
    if before != after {
        return Err(format!("the resident changed: {before:?} → {after:?}"));
    }
    let status = res.status.as_u16();
    let action = if listing {
        "residents.list"
    } else {
        "data.read"
    };
    let expected: Option<(Decision, &str)> = match answer {
        Answer::Reads(basis) => {
            if status != 200 || !res.json()["fields"].is_object() {
                return Err(format!("{status} {}, expected a record", res.text()));
            }
            Some((Decision::Allow, basis))
        }
        Answer::Shows | Answer::Hides => {
            if status != 200 {
                return Err(format!("{status} {}, expected a listing", res.text()));
            }
            let shown = res.json()["residents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == c.pseudonym);
            if shown != matches!(answer, Answer::Shows) {
                return Err(format!("the listing shows the resident: {shown}"));
            }
            Some((Decision::Allow, "legal_basis"))
        }
        Answer::Refused(code) | Answer::Unlogged(_, code) => {
            let want = match answer {
                Answer::Unlogged(s, _) => s,
                _ => 403,
            };
            let got = refusal_code(&res, false);
            if status != want || got != code {
                return Err(format!("{status} {got}, expected {want} {code}"));
            }
            matches!(answer, Answer::Refused(_)).then_some((Decision::Deny, code))
        }
    };
    let Some((decision, reason)) = expected else {
        return match logged.as_slice() {
            [] => Ok(()),
            _ => Err(format!("logged although nothing should be: {logged:?}")),
        };
    };
    let [entry] = logged.as_slice() else {
        return Err(format!("expected one entry, got {logged:?}"));
    };
    let basis = c
        .purpose
        .and_then(|p| app.state.register.get(p))
        .map(|p| p.legal_basis.as_str().to_string());
    // The read names the resident it was about, if they still are one; a
    // listing names nobody.
    let named = (!listing && c.active).then(|| c.resident.to_string());
    let got = (
        entry.actor_id.as_str(),
        entry.action.as_str(),
        entry.decision,
        entry.reason.as_str(),
        entry.resident_id.clone(),
        entry.purpose.as_deref(),
        entry.legal_basis.clone(),
    );
    let want = (c.partner, action, decision, reason, named, c.purpose, basis);
    if got != want {
        return Err(format!("logged {got:?}, expected {want:?}"));
    }
    Ok(())
}

#[tokio::test]
async fn every_partner_route_under_every_purpose_kind() {
    each_backend(|app| async move {
        let started = std::time::Instant::now();
        use Answer::{Hides, Reads, Refused, Shows, Unlogged};
        use Did::*;
        let no_consent = Refused("no_valid_consent");
        let elsewhere = Refused("not_a_recipient");
        let extracts = Refused("extracts_only");
        // The register has consent, explicit consent (art. 9) and public
        // task purposes, on records or extracts only; none on legitimate
        // interest, legal obligation, vital interest or contract.
        #[rustfmt::skip]
        let table: Vec<PartnerCase> = vec![
            // case                                                 the resident did            partner       purpose            category     read                                      listing
            ("consent given",                                        Give(STUDY),                 LABO,         Some(STUDY),       "housing",   Reads("consent"),                         Shows),
            ("no consent",                                           Nothing,                     LABO,         Some(STUDY),       "housing",   no_consent,                               Hides),
            ("consent refused",                                      Refuse(STUDY),               LABO,         Some(STUDY),       "housing",   no_consent,                               Hides),
            ("consent withdrawn",                                    GiveThenWithdraw(STUDY),     LABO,         Some(STUDY),       "housing",   no_consent,                               Hides),
            ("consent expired",                                      GiveForADay(STUDY),          LABO,         Some(STUDY),       "housing",   no_consent,                               Hides),
            ("consent to other categories of the purpose only",      GiveOnly(STUDY, &["mobility"]), LABO,      Some(STUDY),       "housing",   no_consent,                               Shows),
            ("consent given, then processing restricted",            GiveThenRestrict(STUDY),     LABO,         Some(STUDY),       "housing",   Refused("processing_restricted"),         Hides),
            ("consent given, objection refused (withdraw instead)",  GiveThenObject(STUDY),       LABO,         Some(STUDY),       "housing",   Reads("consent"),                         Shows),
            ("consent given, then the resident erased",              GiveThenErase(STUDY),        LABO,         Some(STUDY),       "housing",   Refused("resident_not_found"),            Hides),
            ("consent given, category outside the purpose",          Give(STUDY),                 LABO,         Some(STUDY),       "identity",  Refused("category_outside_purpose"),      Shows),
            ("public task",                                          Nothing,                     RENOV,        Some(RENOVATION),  "housing",   Reads("legal_basis"),                     Shows),
            ("public task, objected (art. 21)",                      Object(RENOVATION),          RENOV,        Some(RENOVATION),  "housing",   Refused("objection"),                     Hides),
            ("public task, processing restricted (art. 18)",         Restrict,                    RENOV,        Some(RENOVATION),  "housing",   Refused("processing_restricted"),         Hides),
            ("public task, consent refused to another purpose",      Refuse(STUDY),               RENOV,        Some(RENOVATION),  "housing",   Reads("legal_basis"),                     Shows),
            ("public task, category outside the purpose",            Nothing,                     RENOV,        Some(RENOVATION),  "mobility",  Refused("category_outside_purpose"),      Shows),
            ("consent given, extracts only",                         Give(RESEARCH),              LABO,         Some(RESEARCH),    "housing",   extracts,                                 extracts),
            ("explicit consent given (art. 9), extracts only",       GiveExplicit(HEALTH),        OBSERVATOIRE, Some(HEALTH),      "health",    extracts,                                 extracts),
            ("public task not naming the partner",                   Nothing,                     LABO,         Some(RENOVATION),  "housing",   elsewhere,                                elsewhere),
            ("consent given, purpose not naming the partner",        Give(STUDY),                 RENOV,        Some(STUDY),       "housing",   elsewhere,                                elsewhere),
            ("consent given, purpose naming no partner",             Give(AGENDA),                LABO,         Some(AGENDA),      "contact",   elsewhere,                                elsewhere),
            ("unknown purpose",                                      Give(STUDY),                 LABO,         Some("no-such-purpose"), "housing", Refused("unknown_purpose"),           Refused("unknown_purpose")),
            ("no purpose",                                           Give(STUDY),                 LABO,         None,              "housing",   Unlogged(400, "missing_parameter"),       Unlogged(400, "missing_parameter")),
        ];

        // The explicit-consent purpose's recipient, registered as the CLI
        // would.
        let (id, client_id, secret) = OBSERVATOIRE;
        app.store
            .insert_partner(
                &coffre::storage::PartnerRow {
                    id: crate::support::pid(id),
                    name: "Observatoire régional de santé".into(),
                    client_id: client_id.into(),
                    client_secret_hash: coffre::crypto::sha256_hex(secret),
                    age_recipient: None,
                    active: true,
                    client_jwks: None,
                },
                app.clock.now(),
            )
            .await
            .unwrap();
        let mut residents = Vec::new();
        for (n, (_, did, ..)) in table.iter().enumerate() {
            let r = format!("0e0e0000-0000-4000-8000-{:012}", n + 1);
            let s = resident(&app, &r).await;
            resident_does(&app, &s, *did).await;
            residents.push(r);
        }
        // A day-long consent ends.
        app.clock.advance(2 * DAY);
        let mut tokens = std::collections::HashMap::new();
        for (id, client_id, secret) in [LABO, RENOV, OBSERVATOIRE] {
            tokens.insert(id, app.partner_token(client_id, secret).await);
        }

        let pool = app.raw_pool().await;
        let keys = app.keys.current();
        let mut failures = Vec::new();
        for ((case, did, (partner, ..), purpose, category, read, listing), resident) in
            table.into_iter().zip(&residents)
        {
            // The partner holds the resident's pseudonym (as if shown it by
            // an earlier listing), so each refusal is the decision's, not an
            // unknown pseudonym's.
            let pseudonym = keys.pseudonym(&format!("partner:{partner}"), resident.as_bytes());
            app.store
                .remember_pseudonyms(&crate::support::pid(partner), &[(crate::support::psd(&pseudonym), resident.clone())])
                .await
                .unwrap();
            let cell = PartnerCell {
                partner,
                token: &tokens[partner],
                resident,
                active: !matches!(did, GiveThenErase(_)),
                pseudonym: &pseudonym,
                purpose,
                category,
            };
            for (listing, answer) in [(false, read), (true, listing)] {
                if let Err(why) = check_partner_cell(&app, &pool, &cell, listing, answer).await {
                    let route = if listing { "listing" } else { "read" };
                    failures.push(format!("{route} × {case}: {why}"));
                }
            }
        }
        pool.close().await;
        eprintln!("MATRIX partners {}: {} cells in {:?}", app.backend, 2 * residents.len(), started.elapsed());
        assert!(failures.is_empty(), "{}:\n{}", app.backend, failures.join("\n"));
    })
    .await;
}
