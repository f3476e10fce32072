//! `coffre import`: the agglomération's own services deposit a file into
//! the commons as their source, through the same use case as the deposit
//! stream (`service::deposits::deposit_line`): same checks, same audit
//! entry per line, same per-line report (NDJSON on stdout, then the
//! summary), safe to rerun (a line already deposited is `unchanged`).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use super::{Fatal, build_state, load_keys, open_store, record_operator_act};
use crate::Clock;
use crate::config::Config;
use crate::domain::deposit::MAX_LINE_BYTES;
use crate::service::deposits::{Summary, deposit_line};
use crate::service::sources::SourceCaller;

pub(super) async fn import_command(
    config: Config,
    source: String,
    file: PathBuf,
) -> Result<(), Fatal> {
    let input = std::fs::File::open(&file)
        .map_err(|e| Fatal::config(format!("--file {}: {}", file.display(), e.kind())))?;
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let clock = Clock::system();
    let state = build_state(config, store.clone(), clock.clone(), false, Ok(keys)).await?;
    if state.sources.get(&source).is_none() {
        store.close().await;
        return Err(Fatal::config(format!(
            "--source: `{source}` is not in sources.toml"
        )));
    }
    record_operator_act(&state, "source.import", None).await?;
    let caller = SourceCaller {
        source_id: source,
        request_id: None,
    };
    let progress = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut reader = std::io::BufReader::new(input);
    let mut out = std::io::stdout().lock();
    let mut summary = Summary::default();
    let mut line: Vec<u8> = Vec::new();
    let mut n: u64 = 0;
    let result = loop {
        line.clear();
        // At most one byte past the limit is kept; the rest of an
        // over-long line is skipped, not held in memory.
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(Fatal::runtime(format!("reading --file: {}", e.kind()))),
        }
        n += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE_BYTES
            && let Err(e) = skip_line(&mut reader)
        {
            break Err(Fatal::runtime(format!("reading --file: {}", e.kind())));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = match deposit_line(&state, &caller, n, &line, clock.now()).await {
            Ok(a) => a,
            Err(e) => {
                let (code, _) = e.code_and_status();
                break Err(Fatal::runtime(format!(
                    "line {n}: {code}; nothing after it was imported"
                )));
            }
        };
        summary.count(&answer);
        let written = serde_json::to_string(&answer)
            .map_err(|e| Fatal::runtime(e.to_string()))
            .and_then(|json| writeln!(out, "{json}").map_err(|e| Fatal::runtime(e.to_string())));
        if let Err(e) = written {
            break Err(e);
        }
        if progress && n.is_multiple_of(1000) {
            let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprint!("\r{n} lines, {rate:.0}/s");
        }
    };
    if progress {
        eprintln!();
    }
    store.close().await;
    result?;
    writeln!(out, "{}", serde_json::json!({"summary": summary}))
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    Ok(())
}

/// Reads past the rest of a line (up to and including its line break)
/// without keeping it.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}
