//! The sync thread: a single-threaded runtime of its own, where the source
//! and the cache writer run. Downloading or reading a large snapshot body
//! (hundreds of megabytes at 100 000 projects) is work too, and here it
//! never occupies a runtime worker that serves requests; with one worker
//! (a sidecar limited to one CPU) it would stall every request meanwhile.
//!
//! Tasks spawned here run until they end or the [`SyncRuntime`] is
//! dropped or stopped, which also ends the thread.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct SyncRuntime {
    handle: Handle,
    /// Dropping or firing it ends the thread's runtime.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyncRuntime {
    /// Starts the thread (`env-sidecar-sync`) and its runtime.
    pub fn start() -> std::io::Result<SyncRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("env-sidecar-sync".into())
            .spawn(move || {
                // Spawned tasks run while this is driven; it returns once
                // told to stop (or the sender is dropped).
                let _ = runtime.block_on(stopped);
            })?;
        Ok(SyncRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Ends the runtime (cancelling what still runs on it) and waits for
    /// the thread.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for SyncRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
