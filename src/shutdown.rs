//! When a long-running command stops: a [`Shutdown`] every part of the process can wait
//! on, fired by SIGINT/SIGTERM ([`Shutdown::on_signals`]) or by its [`Trigger`] (tests, and
//! a daemon that must stop by itself).
//!
//! The servers take one as an argument (`daemon::run(config, clock, shutdown, …)`), so the
//! same code runs under a signal in production and under a test's hand in-process. It is
//! a `tokio::sync::watch` flag: it works across runtimes and threads, and waiting on it
//! after it fired returns at once.

use tokio::sync::watch;

/// Fires the [`Shutdown`] it was made with.
#[derive(Clone, Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Resolves once the process is to stop.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Trigger {
    /// Asks everything waiting on the shutdown to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown and the trigger that fires it.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// A shutdown fired by the first SIGINT or SIGTERM. The handlers are in place when
    /// this returns (a signal right after start-up is not lost); a thread waits for them.
    ///
    /// # Errors
    /// The handlers or their thread cannot be set up.
    pub fn on_signals() -> std::io::Result<(Trigger, Shutdown)> {
        use tokio::signal::unix::{SignalKind, signal};
        let (trigger, shutdown) = Shutdown::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let (mut term, mut int) = {
            let _enter = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        let fire = trigger.clone();
        std::thread::Builder::new()
            .name("catchd-signals".into())
            .spawn(move || {
                rt.block_on(async {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                });
                fire.fire();
            })?;
        Ok((trigger, shutdown))
    }

    /// Whether it has fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once it has fired (at once if it has).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means every trigger is gone: nothing can fire it any more.
        if rx.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The text of a panic's payload, for the message that says why a thread ended.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_for_every_waiter_even_late_ones() {
        let (t, s) = Shutdown::new();
        let early = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        assert!(!s.is_fired());
        t.fire();
        early.await.unwrap();
        s.wait().await;
        assert!(s.is_fired());
    }

    #[tokio::test]
    async fn without_a_trigger_it_never_fires() {
        let s = Shutdown::new().1;
        let r = tokio::time::timeout(std::time::Duration::from_millis(20), s.wait()).await;
        assert!(r.is_err());
    }
}
