//! The API and the store: an answer waits for its commit; a failed commit stops the server.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::json;

use catchd::auth::User;
use catchd::bhr::model::UserId;
use catchd::store::{Driver, Error, Snapshot, Sqlite, Write};

use super::harness::*;

/// SQLite behind a gate: commits wait until the gate opens, or fail when told to.
struct Gated {
    inner: Sqlite,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Gate {
    Closed,
    Open,
    Fail,
}

impl Driver for Gated {
    fn load(&mut self) -> Result<Snapshot, Error> {
        self.inner.load()
    }
    fn apply(&mut self, batch: &[&[Write]]) -> Result<(), Error> {
        let (m, cv) = &*self.gate;
        let mut g = m.lock().unwrap();
        while *g == Gate::Closed {
            g = cv.wait(g).unwrap();
        }
        if *g == Gate::Fail {
            return Err(Error::Db("disk full".into()));
        }
        self.inner.apply(batch)
    }
    fn user_by_token(&mut self, hash: &[u8; 32]) -> Result<Option<User>, Error> {
        self.inner.user_by_token(hash)
    }
    fn user_by_name(&mut self, name: &str) -> Result<Option<User>, Error> {
        self.inner.user_by_name(name)
    }
    fn users(&mut self) -> Result<Vec<User>, Error> {
        self.inner.users()
    }
    fn next_user_id(&mut self) -> Result<UserId, Error> {
        self.inner.next_user_id()
    }
}

fn gated() -> (Api, Arc<(Mutex<Gate>, Condvar)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new((Mutex::new(Gate::Closed), Condvar::new()));
    let backend = Gated {
        inner: Sqlite::open(&dir.path().join("g.db")).unwrap(),
        gate: gate.clone(),
    };
    (Api::with_backend(backend), gate, dir)
}

fn set(gate: &(Mutex<Gate>, Condvar), to: Gate) {
    *gate.0.lock().unwrap() = to;
    gate.1.notify_all();
}

#[tokio::test]
async fn an_answer_waits_for_its_commit() {
    let (api, gate, _dir) = gated();
    let api = Arc::new(api);
    let writes = [
        (
            "/bhr/api/block",
            Who::Blocker,
            json!({"cidr": "192.0.2.1", "source": "s", "why": "w", "duration": "1h"}),
        ),
        (
            "/bhr/api/mblock",
            Who::Blocker,
            json!([{"cidr": "192.0.2.2", "source": "s", "why": "w", "duration": "1h"}]),
        ),
        (
            "/bhr/api/set_blocked_multi/m",
            Who::Manager,
            json!({"ids": [1]}),
        ),
        (
            "/bhr/api/unblock_now",
            Who::Person,
            json!({"cidr": "192.0.2.2", "why": "x"}),
        ),
        (
            "/bhr/api/set_unblocked_multi",
            Who::Manager,
            json!({"ids": [1]}),
        ),
        (
            "/bhr/api/whitelist/",
            Who::Person,
            json!({"cidr": "203.0.113.0/24", "why": "x"}),
        ),
    ];
    for (path, who, body) in writes {
        set(&gate, Gate::Closed);
        let task = {
            let api = api.clone();
            tokio::spawn(async move { api.post_json(path, who, &body).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "{path} answered before its commit");
        set(&gate, Gate::Open);
        let r = task.await.unwrap();
        assert!(r.status.is_success(), "{path}: {}", r.body);
    }
}

#[tokio::test]
async fn a_failed_commit_is_a_503_and_stops_the_server() {
    let (api, gate, _dir) = gated();
    set(&gate, Gate::Fail);
    let r = api
        .post_json(
            "/bhr/api/block",
            Who::Blocker,
            &json!({"cidr": "192.0.2.1", "source": "s", "why": "w", "duration": "1h"}),
        )
        .await
        .expect(503);
    assert_eq!(
        r.json(),
        json!({"detail": "The block store is unavailable; no changes are accepted."})
    );
    assert!(api.state.failure().unwrap().contains("disk full"));
    // Stopping completes (the server is being shut down).
    tokio::time::timeout(Duration::from_secs(5), api.state.stopping())
        .await
        .unwrap();
    // Later writes are refused too, without reaching the database.
    set(&gate, Gate::Open);
    api.post_json(
        "/bhr/api/block",
        Who::Blocker,
        &json!({"cidr": "192.0.2.9", "source": "s", "why": "w", "duration": "1h"}),
    )
    .await
    .expect(503);
}
