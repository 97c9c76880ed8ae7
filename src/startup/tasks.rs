//! The hub's background tasks, each started from the one list in
//! [`Application::build`](super::Application::build) and watched: a task that
//! ends while the hub is not shutting down (returned or panicked) is reported
//! (logged, and counted in `fleethub_task_exits_total`) and stops the hub, so
//! its supervisor restarts a whole hub instead of leaving one that lacks, say,
//! its trail writer.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Starts background tasks that report their exit.
pub struct Tasks {
    shutdown: CancellationToken,
    /// The first task that ended unexpectedly.
    failed: Arc<OnceLock<&'static str>>,
}

impl Tasks {
    /// An unexpected exit cancels `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            failed: Arc::default(),
        }
    }

    /// Starts `task` as `name`. The handle resolves once it ended and was reported.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(task);
        let shutdown = self.shutdown.clone();
        let failed = Arc::clone(&self.failed);
        tokio::spawn(async move {
            if !report_exit(name, task.await, &shutdown) {
                let _ = failed.set(name);
                shutdown.cancel();
            }
        })
    }

    /// The first task that ended before shutdown, if any did.
    pub fn failed(&self) -> Option<&'static str> {
        self.failed.get().copied()
    }
}

/// Logs how the task ended; false when it was not expected to.
fn report_exit(
    name: &'static str,
    outcome: Result<(), JoinError>,
    shutdown: &CancellationToken,
) -> bool {
    match outcome {
        Ok(()) if shutdown.is_cancelled() => {
            tracing::debug!(task = name, "background task stopped");
            return true;
        }
        Ok(()) => tracing::error!(
            task = name,
            "background task stopped unexpectedly; stopping the hub"
        ),
        Err(e) => tracing::error!(
            task = name,
            error = %e,
            "background task failed; stopping the hub"
        ),
    }
    m::task_exited(name);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_stops_early_stops_the_hub() {
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(shutdown.clone());
        tasks.spawn("early", async {}).await.unwrap_or_default();
        assert!(shutdown.is_cancelled());
        assert_eq!(tasks.failed(), Some("early"));
    }

    #[tokio::test]
    async fn a_task_that_panics_stops_the_hub() {
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(shutdown.clone());
        let handle = tasks.spawn("panics", async { panic!("boom") });
        handle.await.unwrap_or_default();
        assert_eq!(tasks.failed(), Some("panics"));
    }

    #[tokio::test]
    async fn a_task_that_stops_at_shutdown_is_not_reported() {
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(shutdown.clone());
        let stop = shutdown.clone();
        let handle = tasks.spawn("polite", async move { stop.cancelled().await });
        shutdown.cancel();
        handle.await.unwrap_or_default();
        assert_eq!(tasks.failed(), None);
    }
}
