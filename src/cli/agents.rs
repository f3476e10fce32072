//! `coffre agent` and `coffre structure`: registering agents (aidants,
//! référents, DPO, auditors, admins) and the structures habilitées they
//! work for; adding a structure, enrolling TOTP, deactivating an agent.

use clap::Subcommand;

use super::{Fatal, build_state, load_keys, open_store, operator_record, record_operator_act};
use crate::config::Config;
use crate::{AppState, Clock};

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Register an agent who will log in through the agents' OpenID
    /// provider with this e-mail. The role is coffre's, never the
    /// provider's. The e-mail is kept only as a keyed digest.
    Add {
        /// The e-mail the agents' provider will vouch for.
        #[arg(long)]
        email: String,
        /// aidant, referent, dpo, auditor or admin.
        #[arg(long)]
        role: String,
        /// How to greet the agent (shown to residents as the aidant's name).
        #[arg(long)]
        name: String,
        /// The structure (id or SIRET) an aidant or référent works for.
        #[arg(long)]
        structure: Option<String>,
        /// The aidant may act under mandates but not create them.
        #[arg(long)]
        no_mandates: bool,
        /// Print `{"id"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a structure (id or SIRET) to an aidant's or référent's; they
    /// pick their current one at `PUT /api/v1/aidant/structure`.
    Join {
        #[arg(long)]
        email: String,
        #[arg(long)]
        structure: String,
    },
    /// Give an agent a new TOTP secret (their step-up for mandates) and
    /// print its `otpauth://` URI once, for an authenticator or a card.
    Totp {
        #[arg(long)]
        email: String,
    },
    /// Deactivate an agent: their sessions end and every act is refused.
    Deactivate {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum StructureCommand {
    /// Register a structure habilitée (CCAS, France Services…).
    Add {
        /// 14 digits, valid check digit.
        #[arg(long)]
        siret: String,
        #[arg(long)]
        name: String,
        /// Comma-separated démarches the structure's aidants may take on
        /// (papiers, famille, social, travail, logement, transports, argent,
        /// justice, etranger, loisirs).
        #[arg(long)]
        demarches: String,
        /// Print `{"id"}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn agent_add(
    config: Config,
    email: &str,
    role: &str,
    name: &str,
    structure: Option<&str>,
    can_create_mandates: bool,
    json: bool,
) -> Result<(), Fatal> {
    use crate::domain::Role;
    let email = email.trim();
    let valid_email = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !email.chars().any(char::is_whitespace);
    if !valid_email {
        return Err(Fatal::config("--email: not an e-mail address"));
    }
    let role = Role::parse(role)
        .filter(|r| r.is_agent())
        .ok_or_else(|| Fatal::config("--role: aidant, referent, dpo, auditor or admin"))?;
    if name.trim().is_empty() || name.len() > 100 {
        return Err(Fatal::config("--name: 1 to 100 characters"));
    }
    let store = open_store(&config).await?;
    let structure_id = match structure {
        None if matches!(role, Role::Aidant | Role::Referent) => {
            return Err(Fatal::config(
                "--structure: required for an aidant or a référent",
            ));
        }
        None => None,
        Some(s) => {
            let found = store
                .list_structures()
                .await
                .map_err(|e| Fatal::runtime(e.to_string()))?
                .into_iter()
                .find(|r| r.id == s || r.siret == s)
                .ok_or_else(|| Fatal::config(format!("--structure: no structure `{s}`")))?;
            Some(found.id)
        }
    };
    let keys = load_keys(&config)?;
    let state = build_state(config, store.clone(), Clock::system(), false, Ok(keys)).await?;
    let digest = crate::service::login::agent_email_digest(&state, email)
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let id = crate::domain::AgentId::from_uuid(uuid::Uuid::new_v4());
    record_operator_act(&state, "agent.add", None).await?;
    store
        .insert_agent(
            &crate::storage::AgentRow {
                id: id.clone(),
                role,
                display_name: name.trim().to_string(),
                structure_id,
                active: true,
                can_create_mandates,
            },
            Some(&digest),
            state.clock.now(),
        )
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                Fatal::runtime("an agent with this e-mail already exists")
            }
            other => Fatal::runtime(other.to_string()),
        })?;
    store.close().await;
    if json {
        println!("{}", serde_json::json!({"id": id, "role": role.as_str()}));
    } else {
        println!("agent {id} registered as {}", role.as_str());
    }
    Ok(())
}

/// The agent with this e-mail, with a state ready to act for the CLI.
pub(super) async fn agent_by_email(
    config: Config,
    email: &str,
) -> Result<(AppState, crate::storage::AgentRow), Fatal> {
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let state = build_state(config, store, Clock::system(), false, Ok(keys)).await?;
    let digest = crate::service::login::agent_email_digest(&state, email)
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let agent = state
        .store
        .find_agent_by_email_digest(&digest)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .ok_or_else(|| Fatal::runtime("no agent with this e-mail"))?;
    Ok((state, agent))
}

pub(super) async fn agent_join(config: Config, email: &str, structure: &str) -> Result<(), Fatal> {
    let (state, agent) = agent_by_email(config, email).await?;
    let found = state
        .store
        .list_structures()
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .into_iter()
        .find(|s| s.id == structure || s.siret == structure)
        .ok_or_else(|| Fatal::config(format!("--structure: no structure `{structure}`")))?;
    record_operator_act(&state, "agent.join", None).await?;
    state
        .store
        .add_agent_structure(&agent.id, &found.id)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    state.store.close().await;
    println!("agent {} now also works for {}", agent.id, found.id);
    Ok(())
}

pub(super) async fn agent_totp(config: Config, email: &str) -> Result<(), Fatal> {
    let (state, agent) = agent_by_email(config, email).await?;
    record_operator_act(&state, "agent.totp", None).await?;
    // The TOTP key is wrapped under the current KEK, which must be known
    // to the database (as `serve` does at start).
    state
        .vault()
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .register_kek_versions(state.clock.now())
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let secret = crate::service::mandates::enroll_totp(&state, &agent.id, state.clock.now())
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    state.store.close().await;
    println!(
        "{}",
        crate::service::mandates::otpauth_uri("coffre", &agent.display_name, &secret)
    );
    Ok(())
}

pub(super) async fn agent_deactivate(config: Config, email: &str) -> Result<(), Fatal> {
    let (state, agent) = agent_by_email(config, email).await?;
    record_operator_act(&state, "agent.deactivate", None).await?;
    state
        .store
        .set_agent_active(&agent.id, false, state.clock.now())
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    state.store.close().await;
    println!("agent {} deactivated; their sessions ended", agent.id);
    Ok(())
}

pub(super) async fn structure_add(
    config: &Config,
    siret: &str,
    name: &str,
    demarches: &str,
    json: bool,
) -> Result<(), Fatal> {
    let siret = crate::domain::Siret::parse(siret.trim())
        .map_err(|m| Fatal::config(format!("--siret: {m}")))?;
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Fatal::config("--name: 1 to 200 characters"));
    }
    let ds = crate::domain::mandate::parse_demarches(demarches.split(','))
        .map_err(|m| Fatal::config(format!("--demarches: {m}")))?;
    if ds.is_empty() {
        return Err(Fatal::config("--demarches: at least one"));
    }
    let store = open_store(config).await?;
    let clock = Clock::system();
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    audit
        .record(operator_record("structure.add", None, clock.now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))?;
    let id = crate::domain::StructureId::from_uuid(uuid::Uuid::new_v4());
    store
        .insert_structure(
            &crate::storage::StructureRow {
                id: id.clone(),
                siret: siret.as_str().to_string(),
                name: name.trim().to_string(),
                allowed_demarches: ds,
                active: true,
            },
            clock.now(),
        )
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                Fatal::runtime("a structure with this SIRET already exists")
            }
            other => Fatal::runtime(other.to_string()),
        })?;
    store.close().await;
    if json {
        println!("{}", serde_json::json!({"id": id}));
    } else {
        println!("structure {id} registered");
    }
    Ok(())
}
