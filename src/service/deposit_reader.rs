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

    /// One line's question of [`crate::storage::DepositStore::deposit_facts_of`],
    /// read with the other lines' questions of the moment.
    pub async fn read(&self, asked: FactsAsked<'_>) -> StorageResult<Option<DepositFacts>> {
        let stopped = || StorageError::Unavailable("deposit facts reader stopped".into());
        let (reply, answer) = oneshot::channel();
        let subject = match asked.subject {
            DepositSubject::Resident(r) => Subject::Resident(r.clone()),
            DepositSubject::Handle(h) => Subject::Handle(h.to_string()),
        };
        self.queue
            .send(Question {
                source_id: asked.source_id.to_string(),
                subject,
                source_record_id: asked.source_record_id.to_string(),
                category: asked.category.to_string(),
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
        // In a task of its own: a read that panics fails its questions
        // (their callers hear the reader stopped) and the reader goes on.
        let store = store.clone();
        let read = tokio::spawn(async move {
            match ask(&store, &batch).await {
                Ok(answers) => {
                    for (q, a) in batch.into_iter().zip(answers) {
                        let _ = q.reply.send(Ok(a));
                    }
                }
                // One question alone, each, so a failure that is one
                // line's (a stored row that does not decode) fails that
                // line only, as it would have alone.
                Err(_) => {
                    for q in batch {
                        let answer = ask(&store, std::slice::from_ref(&q))
                            .await
                            .map(|mut a| a.pop().flatten());
                        let _ = q.reply.send(answer);
                    }
                }
            }
        });
        if let Err(e) = read.await {
            tracing::error!(error = %e, "a deposit facts read failed");
        }
    }
}

/// One read for `batch`'s questions: one answer each, in their order.
async fn ask(store: &DynStore, batch: &[Question]) -> StorageResult<Vec<Option<DepositFacts>>> {
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
    let answers = store.deposit_facts_of(&asked).await?;
    if answers.len() != batch.len() {
        return Err(StorageError::Integrity(format!(
            "{} answers for {} questions",
            answers.len(),
            batch.len()
        )));
    }
    Ok(answers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A database that cannot serve (its pool closed under the reader)
    /// fails every question of the read with the database's own error, each
    /// asked again alone, and the reader goes on serving.
    #[tokio::test]
    async fn an_unavailable_database_fails_each_question_and_the_reader_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::open(&crate::config::DatabaseUrl::Sqlite {
            path: dir.path().join("d.db"),
        })
        .await
        .unwrap();
        let reader = std::sync::Arc::new(FactsReader::start(store.clone()));
        store.close().await;
        let the_database = |answer: StorageResult<Option<DepositFacts>>| match answer {
            Err(StorageError::Unavailable(e)) if !e.contains("reader stopped") => {}
            other => panic!("a question was answered {other:?} with no database"),
        };
        fn asked(subject: DepositSubject<'_>) -> FactsAsked<'_> {
            FactsAsked {
                source_id: "s1",
                subject,
                source_record_id: "m-1",
                category: "energy",
            }
        }
        let lines: Vec<_> = (0..10)
            .map(|n| {
                let reader = reader.clone();
                tokio::spawn(async move {
                    let handle = format!("h{n}");
                    reader.read(asked(DepositSubject::Handle(&handle))).await
                })
            })
            .collect();
        for line in lines {
            the_database(line.await.unwrap());
        }
        the_database(reader.read(asked(DepositSubject::Handle("h"))).await);
    }
}
