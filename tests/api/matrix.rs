//! The access matrix: every role × every route, with the expected allow or
//! deny (and the stable reason), on both backends. Then the relationships
//! casbin cannot see, asked of the one decision function directly: a
//! resident never reaches another resident's data, a partner never reads
//! without consent or legal basis, an aidant never outside a mandate.

use axum::http::Method;

use coffre::domain::Role;
use coffre::service::access::{AccessRequest, decide};

use crate::support::{TestApp, TestResponse, each_backend};

const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";
const JP: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000002";
const AIDANT: &str = "a1d00000-0000-4000-8000-000000000001";
const REFERENT: &str = "a1d00000-0000-4000-8000-000000000003";
const DPO: &str = "a1d00000-0000-4000-8000-000000000004";
const AUDITOR: &str = "a1d00000-0000-4000-8000-000000000005";
const ADMIN: &str = "ad000000-0000-4000-8000-00000000ad01";

/// How a caller presents itself.
#[derive(Clone)]
enum Caller {
    Anonymous,
    Cookie { cookie: String, csrf: String },
    Bearer(String),
}

/// What a route answers a role: `Ok` (2xx), or an error status and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Err(u16, &'static str),
}
use Expect::{Err as E, Ok as A};

const ROLES: [&str; 8] = [
    "anonymous",
    "resident",
    "aidant",
    "referent",
    "dpo",
    "auditor",
    "admin",
    "partner",
];

async fn call(
    app: &TestApp,
    who: &Caller,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> TestResponse {
    let mut headers: Vec<(&str, String)> = Vec::new();
    match who {
        Caller::Anonymous => {}
        Caller::Cookie { cookie, csrf } => {
            headers.push(("cookie", cookie.clone()));
            headers.push(("x-csrf-token", csrf.clone()));
        }
        Caller::Bearer(t) => headers.push(("authorization", format!("Bearer {t}"))),
    }
    if body.is_some() {
        headers.push(("content-type", "application/json".into()));
    }
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.send(method, path, &h, body.unwrap_or("").to_string())
        .await
}

async fn callers(app: &TestApp) -> Vec<(&'static str, Caller)> {
    // Admin has no demo persona: register one and open a session directly.
    app.store
        .insert_agent(
            &coffre::storage::AgentRow {
                id: crate::support::aid(ADMIN),
                role: coffre::domain::Role::Admin,
                display_name: "Admin".into(),
                structure_id: None,
                active: true,
                can_create_mandates: true,
            },
            None,
            app.clock.now(),
        )
        .await
        .unwrap();
    let admin_cookie =
        coffre::http::session::open_session(&app.state, ADMIN, Role::Admin, "demo", None)
            .await
            .unwrap();
    let admin_cookie = admin_cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me = call(
        app,
        &Caller::Cookie {
            cookie: admin_cookie.clone(),
            csrf: String::new(),
        },
        Method::GET,
        "/api/v1/me",
        None,
    )
    .await;
    let admin = Caller::Cookie {
        cookie: admin_cookie,
        csrf: me.json()["csrf_token"].as_str().unwrap().to_string(),
    };
    let session = |s: crate::support::Session| Caller::Cookie {
        cookie: s.cookie,
        csrf: s.csrf,
    };
    let token = app
        .partner_token(
            "demo-renov-energie",
            "demo-secret-renov-energie-not-for-production",
        )
        .await;
    vec![
        ("anonymous", Caller::Anonymous),
        ("resident", session(app.login(AWA).await)),
        ("aidant", session(app.login(AIDANT).await)),
        ("referent", session(app.login(REFERENT).await)),
        ("dpo", session(app.login(DPO).await)),
        ("auditor", session(app.login(AUDITOR).await)),
        ("admin", admin),
        ("partner", Caller::Bearer(token)),
    ]
}

#[tokio::test]
async fn every_role_on_every_route_gets_what_the_policy_says() {
    each_backend(|app| async move {
        let callers = callers(&app).await;
        // A pseudonym the partner may use, and a consent of the resident's.
        let partner = &callers[7].1;
        let list = call(&app, partner, Method::GET, "/api/v1/partner/residents?purpose=renovation-energetique", None).await;
        let pseudonym = list.json()["residents"][0].as_str().unwrap().to_string();
        let resident = &callers[1].1;
        let consents = call(&app, resident, Method::GET, "/api/v1/me/consents", None).await;
        let consent_id = consents.json()["consents"][0]["id"].as_str().unwrap().to_string();

        let unauth = E(401, "unauthenticated");
        let resident_only = E(403, "resident_only");
        let auditor_only = E(403, "auditor_only");
        let aidant_only = E(403, "aidant_only");
        let denied = E(403, "role_not_allowed");
        let dpo_only = [unauth, denied, denied, denied, A, denied, denied, unauth];
        let no_mandate = E(403, "no_active_mandate");
        let public = [A; 8];
        // One session role only (the resident), everyone else refused.
        let own = [unauth, A, resident_only, resident_only, resident_only, resident_only, resident_only, unauth];
        let partner_only = [unauth, unauth, unauth, unauth, unauth, unauth, unauth, A];
        let logged_in = [unauth, A, A, A, A, A, A, unauth];
        let give = r#"{"purpose":"agenda-culturel","decision":"given","categories":["culture"]}"#;
        let routes: Vec<(Method, String, Option<&str>, [Expect; 8])> = vec![
            (Method::GET, "/healthz".into(), None, public),
            (Method::GET, "/api/v1/purposes".into(), None, public),
            (Method::GET, "/api/v1/categories".into(), None, public),
            (Method::GET, "/.well-known/jwks.json".into(), None, public),
            (Method::GET, "/api/v1/audit/checkpoint".into(), None, public),
            (Method::GET, "/api/v1/audit/key".into(), None, public),
            (Method::GET, "/api/v1/audit/proofs/consistency?from=1&to=2".into(), None, public),
            (Method::GET, "/api/v1/me".into(), None, logged_in),
            (Method::GET, "/api/v1/me/data".into(), None, own),
            (Method::GET, "/api/v1/me/data/housing".into(), None, own),
            (Method::PUT, "/api/v1/me/data/culture".into(), Some(r#"{"interests":["musique"]}"#), own),
            (Method::GET, "/api/v1/me/consents".into(), None, own),
            (Method::POST, "/api/v1/me/consents".into(), Some(give), own),
            (Method::GET, format!("/api/v1/me/consents/{consent_id}/receipts"), None, own),
            (Method::GET, "/api/v1/me/accesses".into(), None, own),
            (
                Method::GET,
                "/api/v1/audit/entries?from=0&to=1".into(),
                None,
                [unauth, auditor_only, auditor_only, auditor_only, A, A, auditor_only, unauth],
            ),
            (Method::GET, "/api/v1/partner/me".into(), None, partner_only),
            (Method::GET, "/api/v1/partner/residents?purpose=renovation-energetique".into(), None, partner_only),
            (
                Method::GET,
                format!("/api/v1/partner/residents/{pseudonym}/data/housing?purpose=renovation-energetique"),
                None,
                partner_only,
            ),
            (Method::GET, "/api/v1/demarches".into(), None, public),
            (Method::GET, "/api/v1/me/mandates".into(), None, own),
            (
                Method::GET,
                "/api/v1/aidant/residents".into(),
                None,
                [unauth, aidant_only, A, A, aidant_only, aidant_only, aidant_only, unauth],
            ),
            (
                Method::GET,
                "/api/v1/aidant/mandates/expiring".into(),
                None,
                [unauth, aidant_only, A, A, aidant_only, aidant_only, aidant_only, unauth],
            ),
            // Awa gave the CCAS a mandate for housing (demo); Jean-Pierre did not.
            (
                Method::GET,
                format!("/api/v1/aidant/residents/{AWA}/data/housing?demarche=logement"),
                None,
                [unauth, aidant_only, A, A, aidant_only, aidant_only, aidant_only, unauth],
            ),
            (
                Method::GET,
                format!("/api/v1/aidant/residents/{JP}/data/housing?demarche=logement"),
                None,
                [unauth, aidant_only, no_mandate, no_mandate, aidant_only, aidant_only, aidant_only, unauth],
            ),
            (
                Method::GET,
                "/api/v1/referent/structure".into(),
                None,
                [unauth, aidant_only, E(403, "referent_only"), A, aidant_only, aidant_only, aidant_only, unauth],
            ),
            (Method::GET, "/registre".into(), None, public),
            (Method::GET, "/api/v1/me/rights".into(), None, own),
            (Method::GET, "/api/v1/me/recipients".into(), None, own),
            (Method::GET, "/api/v1/me/requests".into(), None, own),
            (Method::GET, "/api/v1/me/export".into(), None, own),
            (Method::GET, "/api/v1/dpo/requests".into(), None, dpo_only),
            (Method::GET, "/api/v1/dpo/register".into(), None, [unauth, denied, denied, denied, A, denied, A, unauth]),
            (Method::GET, "/api/v1/dpo/extracts".into(), None, dpo_only),
            (Method::GET, "/api/v1/partner/extracts".into(), None, partner_only),
            (Method::GET, "/api/v1/partner/notifications".into(), None, partner_only),
            // Last: withdrawal and erasure change what the rows above see.
            (Method::POST, format!("/api/v1/me/consents/{consent_id}/withdraw"), None, own),
            (Method::POST, "/api/v1/me/erasure".into(), None, own),
        ];
        let mut failures = Vec::new();
        for (method, path, body, expected) in routes {
            for (i, (role, caller)) in callers.iter().enumerate() {
                assert_eq!(ROLES[i], *role);
                let res = call(&app, caller, method.clone(), &path, body).await;
                let got = if res.status.is_success() {
                    A
                } else {
                    let code = res.json()["error"]["code"].as_str().unwrap_or("").to_string();
                    match expected[i] {
                        E(status, want) if status == res.status.as_u16() && want == code => expected[i],
                        _ => {
                            failures.push(format!("{method} {path} as {role}: {} {code}", res.status));
                            continue;
                        }
                    }
                };
                if got != expected[i] {
                    failures.push(format!("{method} {path} as {role}: got {got:?}, expected {:?}", expected[i]));
                }
            }
        }
        assert!(failures.is_empty(), "{}:\n{}", app.backend, failures.join("\n"));
    })
    .await;
}

#[tokio::test]
async fn the_decision_never_crosses_residents_mandates_or_consents() {
    each_backend(|app| async move {
        let ask = |actor: &'static str,
                   role: Role,
                   action: &'static str,
                   resident: &'static str| AccessRequest {
            resident_id: Some(resident),
            category: Some("housing"),
            ..AccessRequest::new(actor, role, action)
        };
        let refused = |r: Result<u64, coffre::error::AppError>| match r {
            Err(e) => e.code_and_status().0.to_string(),
            Ok(_) => "allowed".into(),
        };
        // A resident on another resident's data, even with an own action.
        let other = AccessRequest {
            own: true,
            ..ask(AWA, Role::Resident, "data.read", JP)
        };
        assert_eq!(refused(decide(&app.state, other).await), "not_own_data");
        // An aidant without an active mandate.
        assert_eq!(
            refused(
                decide(
                    &app.state,
                    AccessRequest {
                        structure_id: Some(&crate::support::sid(coffre::demo::STRUCTURE_CCAS)),
                        demarche: Some(coffre::domain::Demarche::Logement),
                        ..ask(AIDANT, Role::Aidant, "data.read", JP)
                    }
                )
                .await
            ),
            "no_active_mandate"
        );
        // The DPO and auditors never read a resident's data.
        assert_eq!(
            refused(decide(&app.state, ask(DPO, Role::Dpo, "data.read", AWA)).await),
            "role_not_allowed"
        );
        assert_eq!(
            refused(decide(&app.state, ask(AUDITOR, Role::Auditor, "data.read", AWA)).await),
            "role_not_allowed"
        );
        // A partner: a purpose it is not a recipient of; one needing a
        // consent the resident did not give; no purpose at all.
        let partner = |purpose: Option<&'static str>, resident: &'static str| AccessRequest {
            purpose_id: purpose,
            category: Some("mobility"),
            ..ask("labo-mobilite", Role::Partner, "data.read", resident)
        };
        assert_eq!(
            refused(decide(&app.state, partner(Some("renovation-energetique"), AWA)).await),
            "not_a_recipient"
        );
        assert_eq!(
            refused(decide(&app.state, partner(Some("etude-mobilite"), JP)).await),
            "no_valid_consent"
        );
        assert_eq!(
            refused(decide(&app.state, partner(None, AWA)).await),
            "purpose_required"
        );
        assert_eq!(
            refused(decide(&app.state, partner(Some("etude-mobilite"), AWA)).await),
            "allowed"
        );
        // Every one of these was recorded, allow or deny.
        let size = app.state.audit.size().await.unwrap();
        let entries: Vec<_> = app
            .store
            .audit_entries(0, size)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, leaf)| coffre::audit::AuditEntry::decode(&leaf).unwrap())
            .collect();
        let reasons: Vec<&str> = entries
            .iter()
            .rev()
            .take(8)
            .map(|e| e.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "consent",
                "purpose_required",
                "no_valid_consent",
                "not_a_recipient",
                "role_not_allowed",
                "role_not_allowed",
                "no_active_mandate",
                "not_own_data"
            ]
        );
    })
    .await;
}
