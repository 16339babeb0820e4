//! Batches log inserts: concurrent `POST …/logs` requests are written together in one
//! statement (group commit), each request still answered only after its row is stored.

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::{Db, DbError, NewLog};

/// Most entries written in one statement.
const MAX_BATCH: usize = 128;
/// Writers working in parallel.
const WRITERS: usize = 2;

type Reply = oneshot::Sender<Result<Option<Uuid>, String>>;

/// A handle to the batching writers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogWriter {
    tx: mpsc::Sender<(NewLog, Reply)>,
}

impl LogWriter {
    /// Starts the writers; they stop when every handle is dropped.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel::<(NewLog, Reply)>(4096);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            let (db, rx) = (db.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::with_capacity(MAX_BATCH);
                    {
                        let mut rx = rx.lock().await;
                        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                            return;
                        }
                    }
                    let (logs, replies): (Vec<NewLog>, Vec<Reply>) = batch.into_iter().unzip();
                    match db.insert_logs(&logs).await {
                        Ok(ids) => {
                            for (reply, id) in replies.into_iter().zip(ids) {
                                let _ = reply.send(Ok(id));
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(msg.clone()));
                            }
                        }
                    }
                }
            });
        }
        Self { tx }
    }

    /// Stores one entry; its id, or None when the ticket is not in the project.
    pub async fn write(&self, log: NewLog) -> Result<Option<Uuid>, DbError> {
        let (reply, answer) = oneshot::channel();
        let closed = || DbError::Sqlx(sqlx::Error::PoolClosed);
        self.tx.send((log, reply)).await.map_err(|_| closed())?;
        answer
            .await
            .map_err(|_| closed())?
            .map_err(|m| DbError::Sqlx(sqlx::Error::Protocol(m)))
    }
}
