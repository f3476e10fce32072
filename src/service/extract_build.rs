//! Building an approved extract, in the background: the cohort read in
//! pages of 500, each resident's record opened and written out (records)
//! or counted into its cell (aggregates, whose memory grows with the number
//! of cells only), the CSV encrypted with age to the partner's recipient as
//! it is written, a signed manifest, and every resident included recorded
//! in the audit log.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use serde_json::{Value, json};

use crate::AppState;
use crate::audit::AuditRecord;
use crate::domain::category::FieldType;
use crate::domain::extract::{
    Cell, CsvRows, ExtractKind, ExtractState, MIN_CELL, generalise, text_of,
};
use crate::domain::stats::{OTHER, Published, protect};
use crate::domain::{ExtractId, Timestamp};
use crate::service::extracts::{
    ExtractSpec, FILE_RETENTION_SECS, PARTNER_EPSILON_BUDGET, audit, eligible_page, field_type,
    file_path, group_domain, group_key, passes_filters, still_recipient,
};

/// The refusal of a build that is not this one's to make.
const NOT_APPROVED: &str = "not approved";

/// Builds an approved extract at `now`. On failure the extract is marked
/// `failed` with the reason and no file is left.
pub async fn build(state: &AppState, id: &ExtractId, now: Timestamp) -> Result<(), String> {
    let tmp = crate::service::extracts::part_path(state, id);
    match build_inner(state, id, now, &tmp).await {
        Ok(()) => Ok(()),
        // Another build holds it (or it was never approved): not ours to
        // fail, nor its files to remove.
        Err(e) if e.starts_with(NOT_APPROVED) => Err(e),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let failed = state
                .store
                .extract_transition(
                    id,
                    ExtractState::Building,
                    ExtractState::Failed,
                    Some(&e),
                    now,
                )
                .await;
            // The file may already be in place when only its ready state
            // failed to commit: a failed extract keeps no file. (Its held
            // messages went with the transition.)
            if matches!(failed, Ok(true)) {
                let _ = std::fs::remove_file(file_path(state, id));
            }
            Err(e)
        }
    }
}

async fn build_inner(
    state: &AppState,
    id: &ExtractId,
    now: Timestamp,
    tmp: &std::path::Path,
) -> Result<(), String> {
    let s = |e: crate::storage::StorageError| e.to_string();
    let row = state
        .store
        .find_extract(id)
        .await
        .map_err(s)?
        .ok_or("no such extract")?;
    if !state
        .store
        .extract_transition(
            id,
            ExtractState::Approved,
            ExtractState::Building,
            None,
            now,
        )
        .await
        .map_err(s)?
    {
        return Err(format!("{NOT_APPROVED} (state {})", row.state));
    }
    let spec: ExtractSpec = serde_json::from_str(&row.spec).map_err(|e| e.to_string())?;
    let purpose = state
        .register
        .get(row.purpose.as_str())
        .ok_or("purpose left the register")?
        .clone();
    let partner = state
        .store
        .find_partner(&row.partner_id)
        .await
        .map_err(s)?
        .ok_or("partner gone")?;
    // A partner cut off after the approval, or taken off the purpose's
    // recipients, gets no file made for it.
    if !partner.active {
        return Err("partner deactivated".into());
    }
    still_recipient(state, partner.id.as_str(), &purpose.id).map_err(|code| {
        format!(
            "{}: the partner is no longer a recipient of the purpose",
            code.code()
        )
    })?;
    let recipient: age::x25519::Recipient = partner
        .age_recipient
        .as_deref()
        .ok_or("no age recipient")?
        .parse()
        .map_err(|_| "the partner's age recipient does not parse".to_string())?;
    let vault = state
        .vault()
        .map_err(|e| format!("{:?}", e.code_and_status().0))?;
    let keys = vault.keys().current();
    std::fs::create_dir_all(&state.config.extracts_dir).map_err(|e| e.to_string())?;
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| e.to_string())?
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| e.to_string())?;
    let mut out = encryptor
        .wrap_output(BufWriter::new(file))
        .map_err(|e| e.to_string())?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let csv = CsvRows::default();
    let mut write = |bytes: &[u8]| -> Result<(), String> {
        digest.update(bytes);
        out.write_all(bytes).map_err(|e| e.to_string())
    };

    let consent_based = purpose.legal_basis.needs_consent();
    let total = state
        .store
        .count_cohort(&purpose.id, consent_based, &purpose.notice_version, now)
        .await
        .map_err(s)?;
    let records = row.kind == ExtractKind::Records;
    if records {
        let mut header = vec!["pseudonym".to_string()];
        header.extend(spec.fields.iter().cloned());
        write(&csv.row(&header).map_err(|e| e.to_string())?)?;
    }
    // An aggregate is published over its public domain: every cell of the
    // product of its group-by fields' declared values, each with `autre`
    // (a value outside them, or none), with its noise even when nobody is
    // in it, so that no cell exists because someone was counted in it.
    let mut domains: Vec<Vec<String>> = Vec::new();
    if !records {
        for g in &spec.group_by {
            let mut values = group_domain(state, g)
                .ok_or_else(|| format!("undeclared_group_by: {g} declares no values"))?;
            values.push(OTHER.to_string());
            domains.push(values);
        }
    }
    let mut cells: BTreeMap<Vec<String>, Cell> = BTreeMap::new();
    if !records {
        let mut keys: Vec<Vec<String>> = vec![Vec::new()];
        for values in &domains {
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    values.iter().map(move |v| {
                        let mut k = k.clone();
                        k.push(v.clone());
                        k
                    })
                })
                .collect();
        }
        cells = keys.into_iter().map(|k| (k, Cell::default())).collect();
    }
    let read_categories = spec.categories.clone();
    let mut cohort: i64 = 0;
    // The sum of the counted residents' keys: part of every cell's noise
    // key, so that an empty cell's noise is not the same in every request
    // (a request matching nobody would show it, and a second one
    // isolating one person would then betray its only non-empty cell).
    let mut cohort_key: u128 = 0;
    let mut seen: i64 = 0;
    let mut after = String::new();
    let mut includes: Vec<AuditRecord> = Vec::new();
    let mut told: Vec<crate::storage::OutboxMessage> = Vec::new();
    // Each summed field's declared range, read once (not per resident):
    // contributions are clamped to it, and it is the noise's sensitivity.
    let ranges: BTreeMap<&str, Option<(i64, i64)>> = spec
        .fields
        .iter()
        .map(|f| {
            let (c, name) = f.split_once('.').unwrap_or(("", ""));
            let range = match field_type(state, c, name) {
                Some(FieldType::Integer { min, max }) => Some((*min, *max)),
                _ => None,
            };
            (f.as_str(), range)
        })
        .collect();
    // The consent must cover every category asked for.
    while let Some((eligible, candidates)) =
        eligible_page(state, &purpose, &spec.categories, now, &mut after)
            .await
            .map_err(s)?
    {
        seen += candidates as i64;
        // The page's keys and records in one query, only the categories asked.
        let opened = vault
            .read_page(&eligible, &read_categories)
            .await
            .map_err(|e| e.to_string())?;
        for resident in &eligible {
            let current: &[crate::service::vault::RecordView] =
                opened.get(resident).map(Vec::as_slice).unwrap_or(&[]);
            let value = |name: &str| -> Option<Value> {
                let (c, f) = name.split_once('.')?;
                current
                    .iter()
                    .find(|r| r.category == c)?
                    .fields
                    .get(f)
                    .cloned()
            };
            // An aggregate opens every eligible resident's record: each is
            // logged whether the filters keep them or not, so that the
            // log's public growth follows the purpose's cohort, not a
            // partner's filters (which could isolate one person).
            if !records {
                includes.push(
                    AuditRecord::new(partner.id.as_str(), "partner", "extract.aggregate", now)
                        .resident(resident.as_str())
                        .category(spec.categories.join(","))
                        .purpose(&purpose.id)
                        .legal_basis(purpose.legal_basis.as_str())
                        .allow(&format!("extract:{}", row.id)),
                );
            }
            if !passes_filters(&spec, &value) {
                continue;
            }
            cohort += 1;
            if records {
                let mut line = vec![keys.pseudonym(
                    &format!("partner:{}", partner.id),
                    resident.as_str().as_bytes(),
                )];
                for f in &spec.fields {
                    let text = value(f).map(|v| text_of(&v)).unwrap_or_default();
                    line.push(if spec.generalise {
                        generalise(f, &text)
                    } else {
                        text
                    });
                }
                write(&csv.row(&line).map_err(|e| e.to_string())?)?;
            } else {
                let key: Vec<String> = group_key(&spec, &value)
                    .into_iter()
                    .zip(&domains)
                    .map(|(v, values)| {
                        if values.contains(&v) {
                            v
                        } else {
                            OTHER.to_string()
                        }
                    })
                    .collect();
                // The cell-key method: each contribution adds a keyed
                // digest of who (and what) it is to its cell's key.
                // Fails closed: a digest that did not parse must not
                // become a constant every cell would share.
                let record_key = |label: &str, data: &[u8]| -> Result<u128, String> {
                    let h = keys.pseudonym(label, data);
                    h.get(..32)
                        .and_then(|x| u128::from_str_radix(x, 16).ok())
                        .ok_or_else(|| "noise_failed: record digest".to_string())
                };
                // The table's contents: who is counted, in which cell, with
                // which summed values (below), so that one resident moving
                // or changing a value changes every cell's noise.
                cohort_key = cohort_key.wrapping_add(record_key(
                    "dp-table",
                    format!("{}\n{}", resident.as_str(), key.join("\u{1f}")).as_bytes(),
                )?);
                let cell = cells.entry(key).or_default();
                cell.count += 1;
                let counted = record_key("dp-record", resident.as_str().as_bytes())?;
                cell.key = cell.key.wrapping_add(counted);
                for f in &spec.fields {
                    if let Some(n) = value(f).and_then(|v| v.as_f64()) {
                        // Within the field's declared range, as the noise's
                        // sensitivity assumes (a range narrowed after the
                        // value was written must not widen a contribution).
                        let n = match ranges.get(f.as_str()).copied().flatten() {
                            Some((min, max)) => n.clamp(min as f64, max as f64),
                            None => n,
                        };
                        *cell.sums.entry(f.clone()).or_default() += n;
                        let k = record_key(
                            "dp-record-value",
                            format!("{}\n{f}\n{n}", resident.as_str()).as_bytes(),
                        )?;
                        let slot = cell.sum_keys.entry(f.clone()).or_default();
                        *slot = slot.wrapping_add(k);
                        cohort_key = cohort_key.wrapping_add(k);
                    }
                }
            }
            // A records extract discloses the resident's values (under a
            // pseudonym): the resident sees it among their accesses
            // (recorded with the page, below: a few group commits for many
            // entries), and art. 19 tells them once the file exists (held
            // until then). An aggregate only counts them (logged above): not
            // a disclosure that art. 19 notices follow, and a partner's
            // pseudonym of each counted resident must not reach it through
            // such notices.
            if records {
                let mut message = crate::storage::OutboxMessage::new(
                    crate::domain::notice::NoticeEvent::ExtractIncluded,
                    resident,
                    row.id.as_str(),
                    &partner.name,
                    now,
                );
                // Time-ordered (UUIDv7): the outbox's key index grows at its
                // end instead of taking a million random inserts (measured:
                // 30 of a 1 M-resident extract's 111 s), and the id, the
                // mail's Message-ID, names no resident nor their rank.
                message.id = uuid::Uuid::now_v7().to_string();
                told.push(message);
                includes.push(
                    AuditRecord::new(partner.id.as_str(), "partner", "extract.include", now)
                        .resident(resident.as_str())
                        .category(spec.categories.join(","))
                        .purpose(&purpose.id)
                        .legal_basis(purpose.legal_basis.as_str())
                        .allow(&format!("extract:{}", row.id)),
                );
            }
        }
        // All of the page's entries at once: the audit writer commits them
        // in a few group commits instead of one durable commit each.
        futures_util::future::try_join_all(
            std::mem::take(&mut includes)
                .into_iter()
                .map(|r| state.audit.record(r)),
        )
        .await
        .map_err(|e| e.to_string())?;
        state
            .store
            .outbox_hold(&std::mem::take(&mut told))
            .await
            .map_err(s)?;
        state
            .store
            .extract_progress(id, seen, total.max(seen), state.clock.now())
            .await
            .map_err(s)?;
    }
    let mut suppression = json!(null);
    let mut noise = json!(null);
    if !records {
        // Every aggregate is noisy (its ε charged at approval): an older
        // request stored without one is not built.
        let epsilon = spec
            .epsilon
            .ok_or_else(|| "noise_failed: an aggregate without ε".to_string())?;
        let dp = |e: crate::crypto::dp::DpError| format!("noise_failed: {e}");
        let mut header = spec.group_by.clone();
        header.push("count".into());
        header.extend(spec.fields.iter().map(|f| format!("sum({f})")));
        write(&csv.row(&header).map_err(|e| e.to_string())?)?;
        // ε is split between the counts and each sum: each is released
        // with OpenDP's exact discrete Laplace noise of scale (its
        // sensitivity × shares) / ε (crypto::dp).
        let shares = 1 + spec.fields.len() as u64;
        let count_scale = crate::crypto::dp::laplace_scale(shares, epsilon).map_err(dp)?;
        // Cell-key stability (Eurostat's cell-key method): the noise of a
        // cell is keyed by the cell, its contents, the whole table's
        // contents (the cohort), measure and scale. The same residents (and
        // values) asked again, by any request, get the noise drawn the
        // first time, so repeated requests cannot be averaged out; one
        // resident more or less anywhere is another key for every cell, so
        // two tables on changed data never subtract to an exact difference,
        // nor does an empty cell repeat its noise. (Each request is still
        // charged its ε.)
        let cell_of = |key: &Vec<String>,
                       measure: &str,
                       contents: u128,
                       scale: &dashu::rational::RBig| {
            json!({"fields": spec.group_by, "cell": key, "measure": measure, "contents": format!("{contents:032x}"), "cohort": format!("{cohort_key:032x}"), "scale": scale.to_string()})
        };
        let draw = crate::service::noise::stable_noise;
        let mut noisy_counts: BTreeMap<Vec<String>, i64> = BTreeMap::new();
        let mut noisy_sums: BTreeMap<(Vec<String>, String), i64> = BTreeMap::new();
        for (key, cell) in &cells {
            let exact = i64::try_from(cell.count).unwrap_or(i64::MAX);
            let noise = draw(
                state,
                &keys,
                cell_of(key, "count", cell.key, &count_scale),
                &count_scale,
                now,
            )
            .await?;
            noisy_counts.insert(key.clone(), exact.saturating_add(noise));
            for f in &spec.fields {
                // A field that is no longer an integer with a range has
                // no known sensitivity: no release.
                let Some((min, max)) = ranges.get(f.as_str()).copied().flatten() else {
                    return Err(format!("noise_failed: {f} has no integer range"));
                };
                let bound = min.unsigned_abs().max(max.unsigned_abs());
                let sensitivity = shares
                    .checked_mul(bound)
                    .ok_or_else(|| format!("noise_failed: {f}'s range is too wide"))?;
                let scale = crate::crypto::dp::laplace_scale(sensitivity, epsilon).map_err(dp)?;
                let sum = cell.sums.get(f).copied().unwrap_or(0.0);
                let contents = cell.sum_keys.get(f).copied().unwrap_or(0);
                let noise =
                    draw(state, &keys, cell_of(key, f, contents, &scale), &scale, now).await?;
                noisy_sums.insert(
                    (key.clone(), f.clone()),
                    (sum.round() as i64).saturating_add(noise),
                );
            }
        }
        // The one post-processing of every aggregate number (as the open
        // statistics'): non-negative counts, "< 11" under the threshold,
        // secondary suppression on the noisy values, a total that is the
        // sum of the cells. A cell not published as a count has its sums
        // withheld with the same mark.
        let protected = protect(&noisy_counts);
        for (key, published) in &protected.cells {
            let mut line = key.clone();
            line.push(published.text());
            for f in &spec.fields {
                line.push(match published {
                    Published::Count(_) => noisy_sums
                        .get(&(key.clone(), f.clone()))
                        .copied()
                        .unwrap_or(0)
                        .to_string(),
                    other => other.text(),
                });
            }
            write(&csv.row(&line).map_err(|e| e.to_string())?)?;
        }
        suppression = json!({
            "min_cell": MIN_CELL,
            "suppressed": protected.cells.iter().any(|(_, p)| !matches!(p, Published::Count(_))),
            "rule": "after noise: a count under 11 is published as \"< 11\"; secondary suppression (\"s\") so that no such cell is recoverable from the total; a cell's sums are withheld with its count",
            "cells": protected.cells.len(),
            "total": protected.total,
        });
        noise = json!({
            "mechanism": "discrete_laplace",
            "library": "OpenDP (CKS20 exact sampler; random bits from OpenSSL RAND_bytes)",
            "epsilon": epsilon,
            "split": "equally between the counts and each sum",
            "domain": "every combination of the group-by fields' declared values, each with \"autre\", published even when empty",
            "partner_budget": PARTNER_EPSILON_BUDGET
        });
    }
    out.finish()
        .and_then(|mut w| w.flush().map(|_| ()))
        .map_err(|e| e.to_string())?;
    let sha = hex::encode(digest.finish().as_ref());
    std::fs::rename(tmp, file_path(state, id)).map_err(|e| e.to_string())?;
    let built = state
        .audit
        .record(
            audit(
                partner.id.as_str(),
                "partner",
                "extract.build",
                &row,
                now,
                "",
            )
            .allow(&format!("cohort:{cohort}")),
        )
        .await
        .map_err(|e| e.to_string())?;
    let manifest = json!({
        "extract_id": row.id,
        "partner": partner.id,
        "purpose": purpose.id,
        "notice_version": purpose.notice_version,
        "legal_basis": purpose.legal_basis.as_str(),
        "kind": row.kind.as_str(),
        "categories": spec.categories,
        "fields": spec.fields,
        "group_by": spec.group_by,
        "filters": spec.filters,
        "generalised": spec.generalise,
        // An aggregate's exact cohort would undo its protection: with the
        // published cells it gives the total of the suppressed ones, and
        // it is a noiseless count beside noisy ones. Records show it anyway.
        "cohort_size": if records { json!(cohort) } else { json!(null) },
        "suppression": suppression,
        "noise": noise,
        "audit_leaf_index": built,
        "plaintext_sha256": sha,
        "built_at": now,
        "format": "text/csv; charset=utf-8, encrypted with age to the partner's X25519 recipient",
    });
    let jws = crate::crypto::jws::sign(&keys, &manifest).map_err(|e| e.to_string())?;
    // The file is in place; the extract is ready only if it is still
    // ours to finish (not failed meanwhile as interrupted): else the file
    // goes, and the build fails.
    if !state
        .store
        .extract_ready(
            id,
            &manifest.to_string(),
            &jws,
            now + FILE_RETENTION_SECS,
            now,
        )
        .await
        .map_err(s)?
    {
        let _ = std::fs::remove_file(file_path(state, id));
        return Err(format!("{NOT_APPROVED}: no longer building"));
    }
    tracing::info!(extract = %id, cohort, "extract ready");
    Ok(())
}
