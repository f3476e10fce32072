//! `coffre import`: the agglomération's own services deposit a file into
//! the commons as their source, through the same use case as the deposit
//! stream (`service::deposits::deposit_line`): same checks, same audit
//! entry per line, same per-line report (NDJSON on stdout, then the
//! summary), safe to rerun (a line already deposited is `unchanged`).
//! A CSV file's rows are read with the `csv` crate and each becomes the
//! line a source would have streamed (`domain::deposit::csv_row_as_line`).

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use super::{Fatal, build_state, load_keys, open_store, record_operator_act};
use crate::config::Config;
use crate::domain::deposit::{MAX_LINE_BYTES, csv_row_as_line};
use crate::service::deposits::{LineAnswer, Summary, deposit_line, refuse_line};
use crate::service::sources::SourceCaller;
use crate::{AppState, Clock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    Ndjson,
    Csv,
}

impl ImportFormat {
    fn of(file: &std::path::Path) -> Self {
        match file.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => ImportFormat::Csv,
            _ => ImportFormat::Ndjson,
        }
    }
}

/// Where the answers go, with the summary and the progress bar.
struct Report<'a> {
    out: std::io::StdoutLock<'a>,
    summary: Summary,
    bar: indicatif::ProgressBar,
    lines: u64,
}

impl Report<'_> {
    fn answer(&mut self, answer: &LineAnswer, bytes_read: u64) -> Result<(), Fatal> {
        self.summary.count(answer);
        self.lines += 1;
        let json = serde_json::to_string(answer).map_err(|e| Fatal::runtime(e.to_string()))?;
        writeln!(self.out, "{json}").map_err(|e| Fatal::runtime(e.to_string()))?;
        self.bar.set_position(bytes_read);
        if self.lines.is_multiple_of(1000) {
            self.bar.set_message(format!("{} lines", self.lines));
        }
        Ok(())
    }
}

pub(super) async fn import_command(
    config: Config,
    source: String,
    file: PathBuf,
    format: Option<ImportFormat>,
) -> Result<(), Fatal> {
    let input = std::fs::File::open(&file)
        .map_err(|e| Fatal::config(format!("--file {}: {}", file.display(), e.kind())))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let format = format.unwrap_or_else(|| ImportFormat::of(&file));
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
    let mut report = Report {
        out: std::io::stdout().lock(),
        summary: Summary::default(),
        bar: super::progress::bar(size, "bytes"),
        lines: 0,
    };
    let result = match format {
        ImportFormat::Ndjson => import_ndjson(&state, &caller, &clock, input, &mut report).await,
        ImportFormat::Csv => import_csv(&state, &caller, &clock, input, &mut report).await,
    };
    report.bar.finish_and_clear();
    store.close().await;
    result?;
    writeln!(
        report.out,
        "{}",
        serde_json::json!({"summary": report.summary})
    )
    .map_err(|e| Fatal::runtime(e.to_string()))?;
    Ok(())
}

/// A failure of the log, the keys or the database stops the import: what
/// was answered before it stands, nothing after it was imported.
fn stopped(line: u64, e: &crate::error::AppError) -> Fatal {
    let (code, _) = e.code_and_status();
    Fatal::runtime(format!(
        "line {line}: {code}; nothing after it was imported"
    ))
}

async fn import_ndjson(
    state: &AppState,
    caller: &SourceCaller,
    clock: &Clock,
    input: std::fs::File,
    report: &mut Report<'_>,
) -> Result<(), Fatal> {
    let mut reader = std::io::BufReader::new(input);
    let mut line: Vec<u8> = Vec::new();
    let mut n: u64 = 0;
    let mut read_so_far: u64 = 0;
    let reading = |e: std::io::Error| Fatal::runtime(format!("reading --file: {}", e.kind()));
    loop {
        line.clear();
        // At most one byte past the limit is kept; the rest of an
        // over-long line is skipped, not held in memory.
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(reading)?;
        if read == 0 {
            return Ok(());
        }
        read_so_far += read as u64;
        n += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE_BYTES {
            read_so_far += skip_line(&mut reader).map_err(reading)?;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = deposit_line(state, caller, n, &line, clock.now())
            .await
            .map_err(|e| stopped(n, &e))?;
        report.answer(&answer, read_so_far)?;
    }
}

async fn import_csv(
    state: &AppState,
    caller: &SourceCaller,
    clock: &Clock,
    input: std::fs::File,
    report: &mut Report<'_>,
) -> Result<(), Fatal> {
    let since_record = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // A row's cell count is checked against the header per row, so a
        // bad row is one refused line, not the end of the import.
        .flexible(true)
        .from_reader(RecordBound {
            inner: std::io::BufReader::new(input),
            since_record: since_record.clone(),
        });
    let too_long = |after: u64| {
        Fatal::runtime(format!(
            "a CSV row after line {after} runs past {MAX_LINE_BYTES} bytes (an unclosed quote?); nothing after it was imported"
        ))
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| match e.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => too_long(0),
            _ => Fatal::config(format!("--file: no CSV header ({e})")),
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut row = csv::ByteRecord::new();
    let mut last_line = 1;
    loop {
        since_record.store(0, std::sync::atomic::Ordering::Relaxed);
        let more = match reader.read_byte_record(&mut row) {
            Ok(more) => more,
            // Only reading the file fails here (or a row past the limit):
            // a row the parser accepts (any bytes) is judged below.
            Err(e) => {
                return Err(match e.kind() {
                    csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        too_long(last_line)
                    }
                    _ => Fatal::runtime(format!("reading --file: {e}")),
                });
            }
        };
        if !more {
            return Ok(());
        }
        let (line, read_so_far) = row.position().map_or((0, 0), |p| {
            (p.line(), p.byte() + row.as_slice().len() as u64)
        });
        last_line = line;
        if row
            .iter()
            .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
        {
            continue;
        }
        let cells: Option<Vec<&str>> = row.iter().map(|c| std::str::from_utf8(c).ok()).collect();
        let converted = match cells {
            Some(cells) if row.as_slice().len() <= MAX_LINE_BYTES => {
                csv_row_as_line(&header, &cells, &state.categories)
            }
            Some(_) => Err(crate::domain::deposit::LineRefusal::LineTooLong),
            // Not UTF-8: no deposit can be read from it.
            None => Err(crate::domain::deposit::LineRefusal::InvalidDeposit),
        };
        let answer = match converted {
            Ok(json) => deposit_line(state, caller, line, &json, clock.now()).await,
            Err(refusal) => refuse_line(state, caller, line, refusal, clock.now()).await,
        }
        .map_err(|e| stopped(line, &e))?;
        report.answer(&answer, read_so_far)?;
    }
}

/// The file under the CSV parser, which holds a whole record in memory
/// before it can be judged: past the line limit (and the parser's own
/// read-ahead) since the current record began, reading fails, so a stray
/// quote cannot turn the rest of a file into one record held in memory.
struct RecordBound<R> {
    inner: R,
    /// Bytes read since the current record began (reset by the loop).
    since_record: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What the parser may read ahead of a record (its buffer is 8 KiB).
const CSV_READ_AHEAD: u64 = 64 * 1024;

impl<R: Read> Read for RecordBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let n = self.inner.read(buf)?;
        let total = self.since_record.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > MAX_LINE_BYTES as u64 + CSV_READ_AHEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a CSV record past the line limit",
            ));
        }
        Ok(n)
    }
}

/// Reads past the rest of a line (up to and including its line break)
/// without keeping it; returns how many bytes it skipped.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(skipped + at as u64 + 1);
            }
            None => {
                let n = buf.len();
                reader.consume(n);
                skipped += n as u64;
            }
        }
    }
}
