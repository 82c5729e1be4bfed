//! The durable job queue: one SQLite table of videos, in the order they were asked for. A job
//! survives a crash or a restart: whatever was `in_progress` when the process stopped is queued
//! again when the store reopens (its output was never renamed into place, so nothing is half
//! written).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::error::{ServerError, ServerResult};
use crate::job::Job;

/// OpenAI's lifecycle: `queued → in_progress → completed | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl Status {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "in_progress" => Status::InProgress,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            _ => Status::Queued,
        }
    }
}

/// One row: a video job and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub status: Status,
    /// 0–100.
    pub progress: u32,
    pub model: String,
    pub prompt: String,
    /// As the client asked for it (OpenAI sends a string such as `"4"`).
    pub seconds: String,
    /// What is generated, `WxH` (after fitting to the server's limit).
    pub size: String,
    pub remixed_from: Option<String>,
    pub job: Job,
    /// `(code, message)` of a failed job.
    pub error: Option<(String, String)>,
    /// Adjustments made to the request (size fitted, input resized).
    pub notes: Vec<String>,
}

/// Sort order of [`Store::list`], by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// The queue, behind a mutex: every call is one short statement.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS videos (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seconds TEXT NOT NULL,
    size TEXT NOT NULL,
    remixed_from TEXT,
    job TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    notes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS videos_status ON videos (status, seq);
";

const COLUMNS: &str = "id, created_at, completed_at, status, progress, model, prompt, seconds, \
                       size, remixed_from, job, error_code, error_message, notes";

fn record(row: &Row<'_>) -> rusqlite::Result<Record> {
    let status: String = row.get(3)?;
    let job: String = row.get(10)?;
    let notes: String = row.get(13)?;
    let code: Option<String> = row.get(11)?;
    let message: Option<String> = row.get(12)?;
    Ok(Record {
        id: row.get(0)?,
        created_at: row.get(1)?,
        completed_at: row.get(2)?,
        status: Status::parse(&status),
        progress: row.get(4)?,
        model: row.get(5)?,
        prompt: row.get(6)?,
        seconds: row.get(7)?,
        size: row.get(8)?,
        remixed_from: row.get(9)?,
        job: serde_json::from_str(&job).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into())
        })?,
        error: code.zip(message),
        notes: serde_json::from_str(&notes).unwrap_or_default(),
    })
}

impl Store {
    /// Opens (or creates) the database at `path` and queues again every job a stopped process
    /// left `in_progress`.
    pub fn open(path: &Path) -> ServerResult<Self> {
        let conn = Connection::open(path).map_err(|e| ServerError::Store {
            detail: format!("opening {}: {e}", path.display()),
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        let requeued = conn.execute(
            "UPDATE videos SET status = 'queued', progress = 0 WHERE status = 'in_progress'",
            [],
        )?;
        if requeued > 0 {
            tracing::info!("{requeued} interrupted job(s) queued again");
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is one
        // statement), so the poison flag carries no information.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a queued job.
    pub fn insert(&self, r: &Record) -> ServerResult<()> {
        self.conn().execute(
            &format!("INSERT INTO videos ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
            params![
                r.id,
                r.created_at,
                r.completed_at,
                r.status.as_str(),
                r.progress,
                r.model,
                r.prompt,
                r.seconds,
                r.size,
                r.remixed_from,
                serde_json::to_string(&r.job)?,
                r.error.as_ref().map(|e| e.0.clone()),
                r.error.as_ref().map(|e| e.1.clone()),
                serde_json::to_string(&r.notes)?,
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> ServerResult<Option<Record>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM videos WHERE id = ?1"),
                [id],
                record,
            )
            .optional()?)
    }

    /// Up to `limit` records after the one with id `after` (exclusive) in `order`, and whether
    /// more follow. An `after` that names no record is an error, so a client paging through a
    /// list whose cursor was deleted learns it.
    pub fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> ServerResult<(Vec<Record>, bool)> {
        let conn = self.conn();
        let bound: Option<i64> = match after {
            Some(id) => Some(
                conn.query_row("SELECT seq FROM videos WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| ServerError::NotFound(id.to_string()))?,
            ),
            None => None,
        };
        let (cmp, dir, start) = match order {
            Order::Asc => (">", "ASC", i64::MIN),
            Order::Desc => ("<", "DESC", i64::MAX),
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM videos WHERE seq {cmp} ?1 ORDER BY seq {dir} LIMIT ?2"
        ))?;
        let mut rows: Vec<Record> = stmt
            .query_map(params![bound.unwrap_or(start), limit as i64 + 1], record)?
            .collect::<Result<_, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    /// Marks the oldest queued job `in_progress` and returns it.
    pub fn claim_next(&self) -> ServerResult<Option<Record>> {
        let conn = self.conn();
        let id: Option<String> = conn
            .query_row(
                "UPDATE videos SET status = 'in_progress', progress = 0 WHERE seq = \
                 (SELECT seq FROM videos WHERE status = 'queued' ORDER BY seq LIMIT 1) RETURNING id",
                [],
                |r| r.get(0),
            )
            .optional()?;
        drop(conn);
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    pub fn set_progress(&self, id: &str, progress: u32) -> ServerResult<()> {
        self.conn().execute(
            "UPDATE videos SET progress = ?2 WHERE id = ?1 AND status = 'in_progress'",
            params![id, progress.min(100)],
        )?;
        Ok(())
    }

    pub fn complete(&self, id: &str, at: i64, notes: &[String]) -> ServerResult<()> {
        self.conn().execute(
            "UPDATE videos SET status = 'completed', progress = 100, completed_at = ?2, notes = ?3 \
             WHERE id = ?1",
            params![id, at, serde_json::to_string(notes)?],
        )?;
        Ok(())
    }

    pub fn fail(&self, id: &str, at: i64, code: &str, message: &str) -> ServerResult<()> {
        self.conn().execute(
            "UPDATE videos SET status = 'failed', completed_at = ?2, error_code = ?3, \
             error_message = ?4 WHERE id = ?1",
            params![id, at, code, message],
        )?;
        Ok(())
    }

    /// Puts an interrupted job back at its place in the queue.
    pub fn requeue(&self, id: &str) -> ServerResult<()> {
        self.conn().execute(
            "UPDATE videos SET status = 'queued', progress = 0 WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Jobs waiting and running.
    pub fn pending(&self) -> ServerResult<(i64, i64)> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FILTER (WHERE status = 'queued'), \
             COUNT(*) FILTER (WHERE status = 'in_progress') FROM videos",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Ids of completed or failed jobs that finished before `cutoff` (Unix seconds).
    pub fn finished_before(&self, cutoff: i64) -> ServerResult<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM videos WHERE status IN ('completed', 'failed') AND completed_at < ?1",
        )?;
        let ids = stmt
            .query_map([cutoff], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Removes a record; false if there was none.
    pub fn delete(&self, id: &str) -> ServerResult<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM videos WHERE id = ?1", [id])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;

    fn rec(id: &str, t: i64) -> Record {
        Record {
            id: id.into(),
            created_at: t,
            completed_at: None,
            status: Status::Queued,
            progress: 0,
            model: "m".into(),
            prompt: format!("prompt {id}"),
            seconds: "4".into(),
            size: "64x64".into(),
            remixed_from: None,
            job: Job::text_for_tests(id),
            error: None,
            notes: vec![],
        }
    }

    #[test]
    fn queue_is_fifo_and_survives_a_restart_mid_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.sqlite");
        {
            let s = Store::open(&db).unwrap();
            for (i, id) in ["a", "b", "c"].iter().enumerate() {
                s.insert(&rec(id, i as i64)).unwrap();
            }
            let first = s.claim_next().unwrap().unwrap();
            assert_eq!(first.id, "a");
            assert_eq!(first.status, Status::InProgress);
            s.set_progress("a", 40).unwrap();
            assert_eq!(s.get("a").unwrap().unwrap().progress, 40);
            // The process dies here, with "a" in progress.
        }
        let s = Store::open(&db).unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!((a.status, a.progress), (Status::Queued, 0));
        assert_eq!(a.job, Job::text_for_tests("a"));
        assert_eq!(s.claim_next().unwrap().unwrap().id, "a");
        s.complete("a", 9, &["note".into()]).unwrap();
        assert_eq!(s.claim_next().unwrap().unwrap().id, "b");
        s.fail("b", 10, "generation_failed", "boom").unwrap();
        let b = s.get("b").unwrap().unwrap();
        assert_eq!(b.status, Status::Failed);
        assert_eq!(b.error, Some(("generation_failed".into(), "boom".into())));
        let a = s.get("a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.progress, a.completed_at),
            (Status::Completed, 100, Some(9))
        );
        assert_eq!(a.notes, vec!["note".to_string()]);
    }

    #[test]
    fn list_pages_both_ways_and_rejects_an_unknown_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("jobs.sqlite")).unwrap();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            s.insert(&rec(id, i as i64)).unwrap();
        }
        let ids = |v: Vec<Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let (page, more) = s.list(None, 2, Order::Desc).unwrap();
        assert_eq!((ids(page), more), (vec!["e".into(), "d".into()], true));
        let (page, more) = s.list(Some("d"), 2, Order::Desc).unwrap();
        assert_eq!((ids(page), more), (vec!["c".into(), "b".into()], true));
        let (page, more) = s.list(Some("b"), 2, Order::Desc).unwrap();
        assert_eq!((ids(page), more), (vec!["a".to_string()], false));
        let (page, more) = s.list(Some("c"), 10, Order::Asc).unwrap();
        assert_eq!((ids(page), more), (vec!["d".into(), "e".into()], false));
        assert!(s.delete("c").unwrap());
        assert!(!s.delete("c").unwrap());
        assert!(matches!(
            s.list(Some("c"), 2, Order::Asc),
            Err(ServerError::NotFound(id)) if id == "c"
        ));
    }
}
