//! Versioned schema migrations, tracked in SQLite's `user_version`; each runs once, in order,
//! inside a transaction.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: jobs, rounds, workers, id counters.
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        spec_json TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        initial_model TEXT NOT NULL,
        initial_sha256 TEXT NOT NULL,
        created_unix REAL NOT NULL
     );
     CREATE TABLE rounds (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        round INTEGER NOT NULL,
        record_json TEXT NOT NULL,
        model_file TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        committed_unix REAL NOT NULL,
        PRIMARY KEY (job_id, round)
     );
     CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        num_samples INTEGER NOT NULL,
        joined_unix REAL NOT NULL
     );",
    // 2: a round's strategy state file (server momentum, moments), committed with its model.
    "ALTER TABLE rounds ADD COLUMN strategy_file TEXT;
     ALTER TABLE rounds ADD COLUMN strategy_sha256 TEXT;",
];

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applying twice is a no-op and leaves the schema at the latest version.
    #[test]
    fn migrations_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        apply(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }
}
