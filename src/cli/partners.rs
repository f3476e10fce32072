//! `coffre partner`: registering partners (OAuth2 clients) with a secret
//! or a JWKS, deactivating and reactivating them; each act is audited
//! with the partner as its resource.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Fatal, open_store, operator_record};
use crate::Clock;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum PartnerCommand {
    /// Register a partner and print its client id and secret, once. Its
    /// purposes are those of policies/purposes.toml that name it as recipient.
    Add {
        /// Partner id as the register's `recipients` name it, e.g. labo-mobilite.
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// age X25519 recipient (age1…) that extracts will be encrypted to.
        #[arg(long)]
        age_recipient: Option<String>,
        /// A JWKS file with the partner's public keys: the partner then
        /// authenticates with `private_key_jwt` and gets no client secret.
        #[arg(long, value_name = "FILE")]
        jwks_file: Option<PathBuf>,
        /// Print `{"client_id", "client_secret"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deactivate a partner (contract ended, credentials leaked): its
    /// tokens, even unexpired ones, and its extract downloads are refused
    /// from the next request on, in every process.
    Deactivate {
        #[arg(long)]
        id: String,
    },
    /// Reactivate a deactivated partner, with the credentials it had.
    Activate {
        #[arg(long)]
        id: String,
    },
}

/// Reads and checks a partner's JWKS: public asymmetric keys only, each
/// usable for signature verification.
fn read_client_jwks(path: &std::path::Path) -> Result<String, Fatal> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fatal::config(format!("--jwks-file {}: {e}", path.display())))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
        .map_err(|e| Fatal::config(format!("--jwks-file {}: not a JWKS ({e})", path.display())))?;
    if set.keys.is_empty() {
        return Err(Fatal::config("--jwks-file: no key in the set"));
    }
    for key in &set.keys {
        let decoding = jsonwebtoken::DecodingKey::from_jwk(key)
            .map_err(|_| Fatal::config("--jwks-file: a key cannot verify signatures"))?;
        if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(Fatal::config(
                "--jwks-file: symmetric (oct) keys are refused; register public keys",
            ));
        }
    }
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Fatal::config(format!("--jwks-file: {e}")))?;
    for key in raw["keys"].as_array().into_iter().flatten() {
        if ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .any(|f| key.get(f).is_some())
        {
            return Err(Fatal::config(
                "--jwks-file: the file holds a private key; register the public part only",
            ));
        }
    }
    serde_json::to_string(&set).map_err(|e| Fatal::runtime(e.to_string()))
}

pub(super) async fn partner_add(
    config: &Config,
    id: &str,
    name: &str,
    age_recipient: Option<&str>,
    jwks_file: Option<&std::path::Path>,
    json: bool,
) -> Result<(), Fatal> {
    use std::str::FromStr;
    let client_jwks = match jwks_file {
        None => None,
        Some(path) => Some(read_client_jwks(path)?),
    };
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Fatal::config(
            "--id: lower-case letters, digits and '-' only",
        ));
    }
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Fatal::config("--name: 1 to 200 characters"));
    }
    if let Some(r) = age_recipient {
        age::x25519::Recipient::from_str(r)
            .map_err(|_| Fatal::config("--age-recipient: not an age X25519 recipient (age1…)"))?;
    }
    let mut suffix = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix)
        .map_err(|_| Fatal::runtime("system random generator failed"))?;
    let client_secret = crate::crypto::random_token()
        .map_err(|_| Fatal::runtime("system random generator failed"))?;
    let client_id = format!("{id}-{}", hex::encode(suffix));
    let typed = crate::domain::PartnerId::parse(id)
        .map_err(|_| Fatal::config("--id: lower-case letters, digits and '-' only"))?;
    let store = open_store(config).await?;
    let row = crate::storage::PartnerRow {
        id: typed.clone(),
        name: name.trim().to_string(),
        client_id: client_id.clone(),
        // With keys, no secret works: no digest equals "!".
        client_secret_hash: if client_jwks.is_some() {
            "!".to_string()
        } else {
            crate::crypto::sha256_hex(&client_secret)
        },
        age_recipient: age_recipient.map(str::to_string),
        active: true,
        client_jwks: client_jwks.clone(),
    };
    // Refused before it is recorded: the log keeps acts, not failed tries
    // (a concurrent add still fails on the key, below).
    let exists = store
        .find_partner(&typed)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?
        .is_some();
    if exists {
        store.close().await;
        return Err(Fatal::runtime(format!("partner `{id}` already exists")));
    }
    let clock = Clock::system();
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    audit
        .record(partner_act("partner.add", id, clock.now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))?;
    store
        .insert_partner(&row, clock.now())
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                Fatal::runtime(format!("partner `{id}` already exists"))
            }
            other => Fatal::runtime(other.to_string()),
        })?;
    store.close().await;
    if client_jwks.is_some() {
        if json {
            println!("{}", serde_json::json!({"client_id": client_id}));
        } else {
            println!("partner {id} registered for private_key_jwt (no secret).");
            println!("client_id={client_id}");
        }
    } else if json {
        println!(
            "{}",
            serde_json::json!({"client_id": client_id, "client_secret": client_secret})
        );
    } else {
        println!(
            "partner {id} registered. Keep the secret now: it is not stored and cannot be shown again."
        );
        println!("client_id={client_id}");
        println!("client_secret={client_secret}");
    }
    Ok(())
}

pub(super) async fn partner_set_active(
    config: Config,
    id: &str,
    active: bool,
) -> Result<(), Fatal> {
    let store = open_store(&config).await?;
    let result = partner_set_active_in(&config, &store, id, active).await;
    store.close().await;
    result?;
    if active {
        println!("partner {id} activated");
    } else {
        println!("partner {id} deactivated; its tokens and downloads are refused from now on");
    }
    Ok(())
}

async fn partner_set_active_in(
    config: &Config,
    store: &crate::storage::DynStore,
    id: &str,
    active: bool,
) -> Result<(), Fatal> {
    // An id that is no partner id names no partner.
    let typed = crate::domain::PartnerId::parse(id).ok();
    let known = match &typed {
        Some(typed) => store
            .find_partner(typed)
            .await
            .map_err(|e| Fatal::runtime(e.to_string()))?
            .is_some(),
        None => false,
    };
    let Some(typed) = typed.filter(|_| known) else {
        return Err(Fatal::runtime(format!("no partner `{id}`")));
    };
    let action = if active {
        "partner.activate"
    } else {
        "partner.deactivate"
    };
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    audit
        .record(partner_act(action, id, Clock::system().now()))
        .await
        .map_err(|e| Fatal::runtime(format!("refusing to act unaudited: {e}")))?;
    let changed = store
        .set_partner_active(&typed, active)
        .await
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    if !changed {
        return Err(Fatal::runtime(format!("no partner `{id}`")));
    }
    Ok(())
}

/// An operator's act on a partner, which the entry names as its resource
/// (`partner:{id}`, as an extract is `extract:{id}`): a partner id is not
/// personal data.
fn partner_act(action: &str, partner_id: &str, now: i64) -> crate::audit::AuditRecord {
    operator_record(action, None, now).category(format!("partner:{partner_id}"))
}
