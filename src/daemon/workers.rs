//! The daemon's workers, watched: no thread or task stops without the daemon knowing.
//!
//! Each worker (the core, the log scanner, a capture thread, a blocker, the bus, the
//! periodic tasks) is registered with a name and runs under a supervisor. When its body
//! returns an error or panics, the supervisor logs why, shows the worker as down in
//! `/metrics` (`catchd_<name>_up 0`), and then either starts it again after a back-off
//! (`Policy::Restart`) or stops the daemon with an error (`Policy::Fatal`: for workers
//! whose state cannot be rebuilt, such as the core that owns the engine).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens when a worker stops on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Start it again, after 1 s, then 2, 4 … up to 30 s between attempts.
    Restart,
    /// Stop the daemon with an error.
    Fatal,
}

/// The first and the longest wait before a restart.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// One worker's state, as `/metrics` shows it.
#[derive(Debug)]
pub struct Worker {
    /// The metric name part: `catchd_<name>_up`.
    pub name: &'static str,
    /// A label, such as `("ident", "fw")`.
    pub label: Option<(&'static str, String)>,
    up: AtomicBool,
    restarts: AtomicU64,
}

impl Worker {
    /// Whether it runs.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Times it was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        match &self.label {
            Some((k, v)) => format!("{} ({k} {v})", self.name),
            None => self.name.to_string(),
        }
    }
}

/// What a supervisor calls when a fatal worker stops: the reason.
pub type OnFatal = Arc<dyn Fn(&str) + Send + Sync>;

/// The registry of workers.
pub struct Workers {
    list: Mutex<Vec<Arc<Worker>>>,
    /// The first and the longest wait before a restart.
    backoff: (Duration, Duration),
    on_fatal: OnFatal,
    /// Set when the daemon stops: workers that end then are not restarted or reported.
    stopping: Arc<AtomicBool>,
}

impl Workers {
    /// An empty registry; `on_fatal` stops the daemon.
    pub fn new(on_fatal: OnFatal) -> Arc<Workers> {
        Workers::with_backoff(on_fatal, BACKOFF)
    }

    /// [`new`](Workers::new) with other restart waits (tests).
    pub fn with_backoff(on_fatal: OnFatal, backoff: (Duration, Duration)) -> Arc<Workers> {
        Arc::new(Workers {
            list: Mutex::new(Vec::new()),
            backoff,
            on_fatal,
            stopping: Arc::new(AtomicBool::new(false)),
        })
    }

    /// From now on, workers that end are ending because the daemon stops.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the daemon is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Registers a worker (up).
    pub fn add(&self, name: &'static str, label: Option<(&'static str, String)>) -> Arc<Worker> {
        let w = Arc::new(Worker {
            name,
            label,
            up: AtomicBool::new(true),
            restarts: AtomicU64::new(0),
        });
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w.clone());
        w
    }

    /// Every worker.
    pub fn all(&self) -> Vec<Arc<Worker>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes that a worker stopped on its own, and why; returns whether to start it again.
    fn stopped(&self, w: &Worker, why: &str, policy: Policy) -> bool {
        if self.stopping() {
            return false;
        }
        w.up.store(false, Ordering::Relaxed);
        match policy {
            Policy::Restart => {
                tracing::error!(
                    worker = %w.describe(),
                    "A worker stopped: {why}; starting it again."
                );
                true
            }
            Policy::Fatal => {
                tracing::error!(worker = %w.describe(), "A worker stopped: {why}; stopping.");
                (self.on_fatal)(&format!("the {} stopped: {why}", w.describe()));
                false
            }
        }
    }

    /// Waits before a restart, unless the daemon stops meanwhile (then `false`).
    fn pause(&self, backoff: &mut Duration) -> bool {
        let until = std::time::Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(self.backoff.1);
        while std::time::Instant::now() < until {
            if self.stopping() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.stopping()
    }

    /// Starts a thread running `body` until it returns `Ok` (a normal end); an error or a
    /// panic is handled by `policy` (a restart calls `body` again).
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub fn thread(
        self: &Arc<Self>,
        thread_name: &str,
        w: Arc<Worker>,
        policy: Policy,
        mut body: impl FnMut() -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || {
                let mut backoff = me.backoff.0;
                loop {
                    let why = match std::panic::catch_unwind(AssertUnwindSafe(&mut body)) {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e,
                        Err(p) => format!("panicked: {}", crate::shutdown::panic_text(&*p)),
                    };
                    if !me.stopped(&w, &why, policy) || !me.pause(&mut backoff) {
                        return;
                    }
                    w.restarts.fetch_add(1, Ordering::Relaxed);
                    w.up.store(true, Ordering::Relaxed);
                }
            })
    }

    /// Spawns a task on the current runtime running futures made by `make` until one ends
    /// with `Ok`; an error or a panic is handled by `policy`.
    pub fn task<F>(
        self: &Arc<Self>,
        w: Arc<Worker>,
        policy: Policy,
        mut make: impl FnMut() -> F + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        use futures_util::FutureExt as _;
        let me = self.clone();
        tokio::spawn(async move {
            let mut backoff = me.backoff.0;
            loop {
                let why = match AssertUnwindSafe(make()).catch_unwind().await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e,
                    Err(p) => format!("panicked: {}", crate::shutdown::panic_text(&*p)),
                };
                if !me.stopped(&w, &why, policy) {
                    return;
                }
                let wait = backoff;
                backoff = (backoff * 2).min(me.backoff.1);
                tokio::time::sleep(wait).await;
                if me.stopping() {
                    return;
                }
                w.restarts.fetch_add(1, Ordering::Relaxed);
                w.up.store(true, Ordering::Relaxed);
            }
        })
    }

    /// `catchd_<name>_up` per worker, and the restarts, for `/metrics`.
    pub fn collect(&self, m: &mut crate::telemetry::Metrics) {
        let all = self.all();
        let mut names: Vec<&'static str> = all.iter().map(|w| w.name).collect();
        names.sort_unstable();
        names.dedup();
        let labels = |w: &Worker| -> Vec<(&'static str, String)> {
            w.label.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        for name in names {
            let mut f = m.gauge(
                &format!("catchd_{name}_up"),
                &format!("whether the {name} worker runs"),
            );
            for w in all.iter().filter(|w| w.name == name) {
                let l = labels(w);
                let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
                f.sample(&l, f64::from(u8::from(w.up())));
            }
        }
        let mut f = m.counter(
            "catchd_worker_restarts_total",
            "times a worker was started again after it stopped",
        );
        for w in &all {
            let l = labels(w);
            let mut l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            l.insert(0, ("worker", w.name));
            f.sample(&l, crate::telemetry::count(w.restarts()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers() -> (Arc<Workers>, Arc<Mutex<Vec<String>>>) {
        let fatal = Arc::new(Mutex::new(Vec::new()));
        let f = fatal.clone();
        let ms = Duration::from_millis(5);
        (
            Workers::with_backoff(
                Arc::new(move |why| f.lock().unwrap().push(why.to_string())),
                (ms, ms * 4),
            ),
            fatal,
        )
    }

    #[test]
    fn a_panicking_worker_is_reported_and_started_again() {
        let (ws, fatal) = workers();
        let w = ws.add("scan", None);
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let t = ws
            .thread("t", w.clone(), Policy::Restart, move || {
                match r.fetch_add(1, Ordering::SeqCst) {
                    0 => panic!("a bad line"),
                    1 => Err("cannot read".into()),
                    _ => Ok(()),
                }
            })
            .unwrap();
        t.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(w.restarts(), 2);
        assert!(w.up());
        assert!(fatal.lock().unwrap().is_empty());
        let m = crate::telemetry::render(|m| ws.collect(m));
        assert!(m.contains("catchd_scan_up 1"), "{m}");
        assert!(
            m.contains("catchd_worker_restarts_total{worker=\"scan\"} 2"),
            "{m}"
        );
    }

    #[test]
    fn a_fatal_worker_stops_the_daemon() {
        let (ws, fatal) = workers();
        let w = ws.add("core", None);
        ws.thread("t", w.clone(), Policy::Fatal, || panic!("broken invariant"))
            .unwrap()
            .join()
            .unwrap();
        assert!(!w.up());
        let f = fatal.lock().unwrap();
        assert_eq!(f.len(), 1);
        assert!(
            f[0].contains("core") && f[0].contains("broken invariant"),
            "{f:?}"
        );
        let m = crate::telemetry::render(|m| ws.collect(m));
        assert!(m.contains("catchd_core_up 0"), "{m}");
    }

    #[test]
    fn workers_that_end_while_stopping_are_left_alone() {
        let (ws, fatal) = workers();
        let w = ws.add("bus", None);
        ws.stop();
        ws.thread(
            "t",
            w.clone(),
            Policy::Fatal,
            || Err("socket closed".into()),
        )
        .unwrap()
        .join()
        .unwrap();
        assert!(fatal.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn tasks_are_supervised_too() {
        let (ws, _) = workers();
        let w = ws.add("blocker", Some(("ident", "fw".into())));
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        ws.task(w.clone(), Policy::Restart, move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("oops");
                }
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let m = crate::telemetry::render(|m| ws.collect(m));
        assert!(m.contains("catchd_blocker_up{ident=\"fw\"} 1"), "{m}");
    }
}
