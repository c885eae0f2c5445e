//! The typed seams of a run's life: a [`Shutdown`] token that stages and connectors wait on
//! (instead of polling a shared flag), and a [`Readiness`] handle that a source sets when it has
//! work assigned and the health endpoint reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// A stop request that can be waited on. Cloning gives another handle on the same token;
/// [`Shutdown::child`] a token that is triggered with its parent but can also be triggered
/// alone (a run's own stop, triggered by a signal or by a failed stage).
///
/// A triggered token closes its channel: [`Shutdown::receiver`] becomes ready in a
/// `crossbeam_channel::select!`, so a stage blocks on its data and the token at once.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    /// Dropped when the token is triggered, which disconnects `rx`.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    children: Mutex<Vec<Weak<Inner>>>,
}

impl Inner {
    fn trigger(&self) {
        let was = self.tx.lock().expect("shutdown token").take();
        if was.is_none() {
            return;
        }
        drop(was);
        let children = std::mem::take(&mut *self.children.lock().expect("shutdown children"));
        for c in children.iter().filter_map(Weak::upgrade) {
            c.trigger();
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Shutdown {
    /// A token not triggered yet.
    pub fn new() -> Shutdown {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Shutdown {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                rx,
                children: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A token triggered when this one is (at once if it already is), and triggerable alone.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        {
            let mut children = self.inner.children.lock().expect("shutdown children");
            if self.inner.tx.lock().expect("shutdown token").is_some() {
                children.retain(|c| c.strong_count() > 0);
                children.push(Arc::downgrade(&child.inner));
                return child;
            }
        }
        child.trigger();
        child
    }

    /// Ask every holder to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.trigger();
    }

    pub fn is_triggered(&self) -> bool {
        matches!(self.inner.rx.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Ready (disconnected) once the token is triggered: for `select!` beside a data channel.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.rx
    }

    /// Wait up to `timeout` for the token; `true` when it was triggered (at once if already).
    /// The wait of a retry back-off: it ends early on shutdown.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        matches!(
            self.inner.rx.recv_timeout(timeout),
            Err(RecvTimeoutError::Disconnected)
        )
    }

    /// Wait until the token is triggered.
    pub fn wait(&self) {
        let _ = self.inner.rx.recv();
    }

    /// Trigger this token on the first SIGTERM or SIGINT; a second one exits the process at
    /// once with status 130.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let token = self.clone();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut seen = 0;
                for _ in signals.forever() {
                    seen += 1;
                    if seen > 1 {
                        std::process::exit(130);
                    }
                    token.trigger();
                }
            })?;
        Ok(())
    }
}

/// Whether a source has work assigned (a streaming source: it is in its consumer group), as the
/// readiness probe reports it. Set by the source's connector, read by the health endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_triggered_token_wakes_its_waiters_and_children() {
        let parent = Shutdown::new();
        let child = parent.child();
        assert!(!parent.is_triggered() && !child.is_triggered());
        let t = Instant::now();
        assert!(!child.wait_timeout(Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
        let waiter = {
            let c = child.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                c.wait();
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        parent.trigger();
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(5));
        assert!(parent.is_triggered() && child.is_triggered());
        assert!(child.wait_timeout(Duration::from_secs(60)));
        // A child of a triggered token is born triggered.
        assert!(parent.child().is_triggered());
    }

    #[test]
    fn a_child_stops_alone() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(child.is_triggered());
        assert!(!parent.is_triggered());
        let rx = child.receiver().clone();
        crossbeam_channel::select! {
            recv(rx) -> r => assert!(r.is_err()),
            default(Duration::from_secs(5)) => panic!("select did not see the token"),
        }
    }

    #[test]
    fn readiness_is_shared() {
        let r = Readiness::new();
        let seen = r.clone();
        assert!(!seen.is_ready());
        r.set(true);
        assert!(seen.is_ready());
    }
}
