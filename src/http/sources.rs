//! Data sources over HTTP: a resident's links to them (`/api/v1/me/sources`)
//! and what a source does with its token (`/api/v1/source/…`). The rules
//! are in `service::sources`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::ApiJson;
use crate::http::audit::{RequestId, audited_json, with_entry};
use crate::http::session::CurrentUser;
use crate::service::sources::{self, LinkHandle, MySource, PairingCode, SourceCaller};

/// A data source authenticated by its bearer token (audience
/// `coffre-source`), active and still in the register.
pub struct Source(pub SourceCaller);

impl FromRequestParts<AppState> for Source {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        let Ok(RequestId(request_id)) = RequestId::from_request_parts(parts, state).await;
        let token = crate::http::partner::bearer(parts)?;
        Ok(Source(
            sources::verify_token(state, token, request_id, state.clock.now()).await?,
        ))
    }
}

/// The data sources of the register that may deposit about me, what each
/// may deposit, and my link to it.
#[utoipa::path(get, path = "/api/v1/me/sources", tag = "resident",
    responses((status = 200, body = Vec<MySource>), (status = 401, body = crate::error::ErrorBody)))]
pub async fn my_sources(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
) -> AppResult<Response> {
    Ok(audited_json(
        sources::my_sources(&state, &user.caller(&rid)).await?,
    ))
}

/// A pairing code to give a link source (at a counter, by phone): one use,
/// 15 minutes.
#[utoipa::path(post, path = "/api/v1/me/sources/{id}/links", tag = "resident",
    responses((status = 201, body = PairingCode),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, description = "`source_not_linkable`", body = crate::error::ErrorBody)))]
pub async fn start_pairing(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let done = sources::start_pairing(&state, &user.caller(&rid), &id, state.clock.now()).await?;
    Ok(with_entry(
        done.entry,
        (StatusCode::CREATED, axum::Json(done.value)),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct RevokeQuery {
    /// `true`: also erase every version this source deposited about me.
    pub erase: Option<bool>,
}

/// Revokes my link to a source: its later deposits about me are refused;
/// with `?erase=true`, what it deposited goes too.
#[utoipa::path(delete, path = "/api/v1/me/sources/{id}/links", tag = "resident", params(RevokeQuery),
    responses((status = 204),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`no_link`", body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<RevokeQuery>,
) -> AppResult<Response> {
    let erase = q.erase.unwrap_or(false);
    let done = sources::revoke(&state, &user.caller(&rid), &id, erase, state.clock.now()).await?;
    Ok(with_entry(done.entry, StatusCode::NO_CONTENT))
}

/// Objects (art. 21) to a public-task source's deposits about me.
#[utoipa::path(post, path = "/api/v1/me/sources/{id}/objection", tag = "resident",
    responses((status = 204),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, description = "`objection_not_applicable`", body = crate::error::ErrorBody)))]
pub async fn object(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let done = sources::object(&state, &user.caller(&rid), &id, state.clock.now()).await?;
    Ok(with_entry(done.entry, StatusCode::NO_CONTENT))
}

/// Lifts my objection to a public-task source.
#[utoipa::path(delete, path = "/api/v1/me/sources/{id}/objection", tag = "resident",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn lift_objection(
    State(state): State<AppState>,
    user: CurrentUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let done = sources::lift_objection(&state, &user.caller(&rid), &id).await?;
    Ok(with_entry(done.entry, StatusCode::NO_CONTENT))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkExchange {
    /// A pairing code the resident gave (`XXXX-XXXX`, any case, dash
    /// optional) or the authorisation code sent to the redirect URI.
    pub code: String,
}

/// A source exchanges a code for the resident's handle (one use; an
/// expired, reused or foreign code is `invalid_grant`).
#[utoipa::path(post, path = "/api/v1/source/links", tag = "source", request_body = LinkExchange,
    responses((status = 200, body = LinkHandle),
              (status = 401, description = "`unauthenticated`, `invalid_token`", body = crate::error::ErrorBody),
              (status = 422, description = "`invalid_grant`, `source_not_linkable`", body = crate::error::ErrorBody)))]
pub async fn exchange(
    State(state): State<AppState>,
    Source(source): Source,
    ApiJson(body): ApiJson<LinkExchange>,
) -> AppResult<Response> {
    Ok(audited_json(
        sources::exchange(&state, &source, &body.code, state.clock.now()).await?,
    ))
}

/// Deposits: `application/x-ndjson`, one deposit a line. The answer is a
/// stream too, one line a line in order (`{"line","id","status","code"?}`)
/// and then `{"summary":{…}}`; memory stays flat whatever the length (at
/// most 64 lines in flight, each at most 64 KB). Lines are deposited up to
/// 64 at a time, answered in their order; two lines about the same record
/// (or the same person and category) run one after the other. A stream cut
/// in the middle keeps what was answered before the cut; sent again, those
/// lines are `unchanged`. A failure of the log, the keys or the database,
/// or the source's deactivation, ends the answer with `{"error":{…}}`: no
/// line after it is answered (one already in flight may have been stored:
/// sent again, it is `unchanged`).
#[utoipa::path(post, path = "/api/v1/source/deposits", tag = "source",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "one JSON object a line: `{\"id\", \"handle\" | \"pivot\", \"category\", \"fields\", \"observed_at\"}`"),
    responses((status = 200, content_type = "application/x-ndjson",
               description = "one `LineAnswer` a line, then `{\"summary\": Summary}`"),
              (status = 401, description = "`unauthenticated`, `invalid_token`", body = crate::error::ErrorBody),
              (status = 415, body = crate::error::ErrorBody)))]
pub async fn deposits(
    State(state): State<AppState>,
    Source(source): Source,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> AppResult<Response> {
    use futures_util::StreamExt;
    let ndjson = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    if !ndjson {
        return Err(AppError::UnsupportedMediaType);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(32);
    let mut out = DepositStream {
        // The token was checked when the stream began; a stream may last
        // hours, so whether the source is still active is asked again as
        // it goes: a deactivated source stops depositing within
        // `RECHECK_LINES` lines or `RECHECK_SECS` seconds.
        recheck: Recheck {
            checked_at: state.clock.now(),
            lines: 0,
        },
        state,
        source,
        tx,
        summary: crate::service::deposits::Summary::default(),
        in_flight: futures_util::stream::FuturesOrdered::new(),
        busy: std::collections::HashMap::new(),
        failed: false,
    };
    tokio::spawn(async move {
        let max = crate::domain::deposit::MAX_LINE_BYTES;
        let mut input = body.into_data_stream();
        let mut line: Vec<u8> = Vec::new();
        let mut line_no: u64 = 0;
        let mut complete = true;
        'stream: loop {
            let chunk = match input.next().await {
                Some(Ok(c)) => c,
                // Cut: what was answered stays; the partial line is dropped.
                // Cut by the stream's limit, the source is told after the
                // lines answered (a client gone away reads nothing).
                Some(Err(e)) => {
                    // The lines before the cut are answered first.
                    let answered = out.drain(0).await;
                    if answered && cut_by_limit(&e) {
                        out.stopped(ErrorCode::PayloadTooLarge.code(), line_no + 1)
                            .await;
                    }
                    complete = false;
                    break;
                }
                None => break,
            };
            for piece in chunk.split_inclusive(|b| *b == b'\n') {
                let ends = piece.last() == Some(&b'\n');
                let body = if ends {
                    &piece[..piece.len() - 1]
                } else {
                    piece
                };
                // Past the limit the rest of the line is not kept: the line
                // is refused as too long once its end comes.
                if line.len() <= max {
                    let room = max + 1 - line.len();
                    line.extend_from_slice(&body[..body.len().min(room)]);
                }
                if ends {
                    line_no += 1;
                    let blank = line.iter().all(u8::is_ascii_whitespace);
                    if !blank && !out.answer(line_no, &line).await {
                        complete = false;
                        break 'stream;
                    }
                    line.clear();
                }
            }
        }
        if complete && !line.iter().all(u8::is_ascii_whitespace) {
            line_no += 1;
            complete = out.answer(line_no, &line).await;
        }
        // The lines still in flight are answered, in order, unless one
        // before them failed.
        complete = out.drain(0).await && complete;
        if complete {
            let summary = serde_json::json!({"summary": out.summary});
            out.send(&summary).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let mut res = Response::new(axum::body::Body::from_stream(stream));
    res.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(res)
}

/// How many lines of one stream are deposited at once. Lines are answered
/// in their order; two lines about the same record, or the same subject
/// and category, never run at once (the later waits), so a later line's
/// version is the later one.
///
/// 64: about twice the lines the audit log's writer commits in one batch
/// (~30), so that while one batch commits, the next one's lines read their
/// facts and are sealed, and the writer, the one serial stage, never waits
/// for them (BENCHMARKS row 7: with 32, batches of 15 alternated the same
/// way; with 16, a batch waited for its lines' reads). Memory: 64 × 64 KB
/// at most per stream.
const LINES_IN_FLIGHT: usize = 64;

type LineDone = (
    u64,
    Vec<String>,
    crate::error::AppResult<crate::service::deposits::LineAnswer>,
);

/// The answering side of one deposit stream.
struct DepositStream {
    state: AppState,
    source: SourceCaller,
    recheck: Recheck,
    tx: tokio::sync::mpsc::Sender<axum::body::Bytes>,
    summary: crate::service::deposits::Summary,
    /// The lines being deposited, in their order.
    in_flight:
        futures_util::stream::FuturesOrdered<futures_util::future::BoxFuture<'static, LineDone>>,
    /// What the lines in flight are about (record id; subject and
    /// category), with how many of them.
    busy: std::collections::HashMap<String, usize>,
    /// A line failed for a reason not its own: nothing more is answered.
    failed: bool,
}

impl DepositStream {
    /// Sends one line of the answer; false once nobody reads it.
    async fn send(&mut self, value: &impl serde::Serialize) -> bool {
        match serde_json::to_vec(value) {
            Ok(mut v) => {
                v.push(b'\n');
                self.tx.send(axum::body::Bytes::from(v)).await.is_ok()
            }
            Err(_) => false,
        }
    }

    /// The last line of a stream that stops early: why, and where.
    async fn stopped(&mut self, code: &str, line_no: u64) {
        let _ = self
            .send(&serde_json::json!({"error": {"code": code, "line": line_no}}))
            .await;
    }

    /// Starts depositing one complete line (answered in order as lines
    /// finish); false when the stream must stop (the source deactivated, a
    /// failure of the log, the keys or the database, or nobody reading).
    async fn answer(&mut self, line_no: u64, line: &[u8]) -> bool {
        let now = self.state.clock.now();
        if self.recheck.due(now) {
            // Asked once the lines before are answered: a deactivation
            // stops what comes after it.
            if !self.drain(0).await {
                return false;
            }
            if let Err(e) = sources::still_depositing(&self.state, &self.source).await {
                self.fail(&e, line_no).await;
                return false;
            }
            self.recheck.done(now);
        }
        // Read once: for the keys here and for the deposit.
        let read = crate::domain::deposit::read_line(line, now);
        let keys = line_keys(&read.deposit);
        // A line about what a line in flight is about waits for it.
        while keys.iter().any(|k| self.busy.contains_key(k)) {
            if !self.next_done().await {
                return false;
            }
        }
        if !self.drain(LINES_IN_FLIGHT - 1).await {
            return false;
        }
        for k in &keys {
            *self.busy.entry(k.clone()).or_default() += 1;
        }
        let (state, source) = (self.state.clone(), self.source.clone());
        // A task of its own, so the lines in flight run on every core (in
        // this stream's task they would share one thread). A stream that
        // stops (a failure, the client gone) aborts its lines still in
        // flight, as dropping them in its own task did: none outlives the
        // stream's ordering of lines about the same record.
        let line = AbortOnDrop(tokio::spawn(async move {
            crate::service::deposits::deposit_read_line(&state, &source, line_no, read, now).await
        }));
        self.in_flight.push_back(Box::pin(async move {
            let answer = line.await.unwrap_or_else(|e| {
                // Not the panic's text: it may quote a value.
                let how = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                Err(AppError::internal(format!(
                    "the deposit of line {line_no} {how}"
                )))
            });
            (line_no, keys, answer)
        }));
        true
    }

    /// Answers finished lines until at most `left` are in flight.
    async fn drain(&mut self, left: usize) -> bool {
        while self.in_flight.len() > left {
            if !self.next_done().await {
                return false;
            }
        }
        !self.failed
    }

    /// Answers the next line in order once it is done.
    async fn next_done(&mut self) -> bool {
        use futures_util::StreamExt;
        let Some((line_no, keys, answer)) = self.in_flight.next().await else {
            return !self.failed;
        };
        for k in keys {
            if let Some(n) = self.busy.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.busy.remove(&k);
                }
            }
        }
        if self.failed {
            // Stored or not, a line after a failure is not answered; sent
            // again, a stored one is `unchanged`.
            return false;
        }
        match answer {
            Ok(a) => {
                self.summary.count(&a);
                if !self.send(&a).await {
                    self.failed = true;
                }
            }
            Err(e) => self.fail(&e, line_no).await,
        }
        !self.failed
    }

    async fn fail(&mut self, e: &AppError, line_no: u64) {
        let (code, status) = e.code_and_status();
        if status.is_server_error() {
            tracing::error!(code, error = ?e, "deposit stream stopped");
        } else {
            tracing::info!(code, "deposit stream stopped");
        }
        self.failed = true;
        self.stopped(code, line_no).await;
    }
}

/// A line's task, aborted when the stream lets go of it unfinished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a line is about, for keeping two lines about the same thing in
/// order: its record id, and its subject with its category. A line that
/// does not parse is about nothing (it is refused).
fn line_keys(
    deposit: &Result<crate::domain::deposit::Deposit, crate::domain::deposit::LineRefusal>,
) -> Vec<String> {
    use crate::domain::deposit::Subject;
    match deposit {
        Ok(d) => {
            let subject = match &d.subject {
                Subject::Handle(h) => format!("h:{h}"),
                Subject::Pivot(p) => format!(
                    "p:{}|{}|{}",
                    p.family_name.to_lowercase(),
                    p.given_names.to_lowercase(),
                    p.birthdate
                ),
            };
            vec![format!("id:{}", d.id), format!("{subject}|{}", d.category)]
        }
        Err(_) => Vec::new(),
    }
}

/// How often a deposit stream asks again whether its source is active.
const RECHECK_LINES: u64 = 1000;
const RECHECK_SECS: i64 = 30;

/// When a deposit stream last asked whether its source is active.
struct Recheck {
    checked_at: crate::domain::Timestamp,
    lines: u64,
}

impl Recheck {
    /// Whether to ask again before the next line.
    fn due(&mut self, now: crate::domain::Timestamp) -> bool {
        self.lines += 1;
        self.lines > RECHECK_LINES || now - self.checked_at >= RECHECK_SECS
    }

    fn done(&mut self, now: crate::domain::Timestamp) {
        self.checked_at = now;
        self.lines = 1;
    }
}

/// Whether a body stopped because it went past its limit (the per-path
/// limit of `http::middleware`), rather than because the client went away.
fn cut_by_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}
