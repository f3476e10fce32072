//! The facts of a deposit stream's lines are read together: one task per
//! process gathers the questions the lines asked while its last read ran
//! and asks the store in one statement (`DepositStore::deposit_facts_of`).
//!
//! Why: each statement is a hand-off to the database's thread, and on
//! SQLite each read after another connection's commit drops that
//! connection's whole page cache; once a batch's writes took one statement
//! per table, the one read each line made was most of a stream's
//! statements (BENCHMARKS row 7).

use tokio::sync::{mpsc, oneshot};

use crate::domain::ResidentId;
use crate::storage::{
    DepositFacts, DepositSubject, DynStore, FactsAsked, StorageError, StorageResult,
};

/// Most questions one read carries.
const MAX_BATCH: usize = 64;

/// Whom a question is about, owned while it waits.
enum Subject {
    Resident(ResidentId),
    Handle(String),
}

struct Question {
    source_id: String,
    subject: Subject,
    source_record_id: String,
    category: String,
    reply: oneshot::Sender<StorageResult<Option<DepositFacts>>>,
}

/// The handle deposit lines read their facts through.
pub struct FactsReader {
    queue: mpsc::Sender<Question>,
}

impl FactsReader {
    /// Starts this process's reader task.
    pub fn start(store: DynStore) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(reader(store, rx));
        Self { queue }
    }

    /// [`crate::storage::DepositStore::deposit_facts`], read with the other
    /// lines' questions of the moment.
    pub async fn read(
        &self,
        source_id: &str,
        subject: DepositSubject<'_>,
        source_record_id: &str,
        category: &str,
    ) -> StorageResult<Option<DepositFacts>> {
        let stopped = || StorageError::Unavailable("deposit facts reader stopped".into());
        let (reply, answer) = oneshot::channel();
        let subject = match subject {
            DepositSubject::Resident(r) => Subject::Resident(r.clone()),
            DepositSubject::Handle(h) => Subject::Handle(h.to_string()),
        };
        self.queue
            .send(Question {
                source_id: source_id.to_string(),
                subject,
                source_record_id: source_record_id.to_string(),
                category: category.to_string(),
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn reader(store: DynStore, mut rx: mpsc::Receiver<Question>) {
    while let Some(first) = rx.recv().await {
        // Whatever was asked while the last read ran rides in this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let asked: Vec<FactsAsked<'_>> = batch
            .iter()
            .map(|q| FactsAsked {
                source_id: &q.source_id,
                subject: match &q.subject {
                    Subject::Resident(r) => DepositSubject::Resident(r),
                    Subject::Handle(h) => DepositSubject::Handle(h),
                },
                source_record_id: &q.source_record_id,
                category: &q.category,
            })
            .collect();
        let answers = store.deposit_facts_of(&asked).await;
        drop(asked);
        match answers {
            Ok(answers) if answers.len() == batch.len() => {
                for (q, a) in batch.into_iter().zip(answers) {
                    let _ = q.reply.send(Ok(a));
                }
            }
            Ok(answers) => {
                let e = format!("{} answers for {} questions", answers.len(), batch.len());
                for q in batch {
                    let _ = q.reply.send(Err(StorageError::Integrity(e.clone())));
                }
            }
            // Every question of the read gets its error (the database's,
            // for each line to fail as it would alone).
            Err(e) => {
                for q in batch {
                    let _ = q.reply.send(Err(same_error(&e)));
                }
            }
        }
    }
}

/// The read's error for each of its questions.
fn same_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::Unavailable(s) => StorageError::Unavailable(s.clone()),
        StorageError::Integrity(s) => StorageError::Integrity(s.clone()),
        other => StorageError::Other(other.to_string()),
    }
}
