//! A gateway's view during a fault: a task resolving every project of the
//! control plane's truth, over and over, on every given data plane,
//! recording each answer that is not a `200` for a project that exists.
//! The truth is set before a publish removes a project and after the
//! sidecars serve an added one, so a miss is always the sidecar's fault.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ResolverLoop {
    truth: Arc<Mutex<BTreeSet<String>>>,
    misses: Arc<Mutex<Vec<String>>>,
    answered: Arc<AtomicU64>,
    /// Rounds completed (every project on every data plane once).
    rounds: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ResolverLoop {
    /// Starts resolving `truth` on each of `data` (data-plane addresses).
    pub fn start(data: Vec<SocketAddr>, truth: &[&str]) -> ResolverLoop {
        let truth = Arc::new(Mutex::new(
            truth
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<BTreeSet<_>>(),
        ));
        let misses = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (truth, misses, answered, rounds, stop) = (
                truth.clone(),
                misses.clone(),
                answered.clone(),
                rounds.clone(),
                stop.clone(),
            );
            async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.load(SeqCst) {
                    let projects: Vec<String> = truth.lock().unwrap().iter().cloned().collect();
                    for addr in &data {
                        for p in &projects {
                            let url = format!("http://{addr}/v1/resolve?project={p}");
                            let status = match client.get(&url).send().await {
                                Ok(r) => r.status().as_u16().to_string(),
                                Err(e) => format!("no answer: {e}"),
                            };
                            // Only a miss if the project was still in the
                            // truth when the answer came.
                            if status != "200" && truth.lock().unwrap().contains(p) {
                                misses.lock().unwrap().push(format!("{addr} {p}: {status}"));
                            }
                            answered.fetch_add(1, SeqCst);
                        }
                    }
                    rounds.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        ResolverLoop {
            truth,
            misses,
            answered,
            rounds,
            stop,
            task,
        }
    }

    /// Returns once a whole round has run after this call: the state the
    /// sidecars are in now was resolved.
    pub async fn round(&self) {
        let wanted = self.rounds.load(SeqCst) + 2;
        super::eventually("a round of resolves", || async {
            self.rounds.load(SeqCst) >= wanted
        })
        .await;
    }

    /// The projects that exist from now on.
    pub fn set_truth(&self, projects: &[&str]) {
        *self.truth.lock().unwrap() = projects.iter().map(|p| (*p).to_owned()).collect();
    }

    /// Runs one more round, stops, and asserts there was no miss.
    pub async fn finish(self) -> u64 {
        self.round().await;
        self.stop.store(true, SeqCst);
        self.task.await.unwrap();
        let misses = self.misses.lock().unwrap().clone();
        let answered = self.answered.load(SeqCst);
        assert!(misses.is_empty(), "{} misses: {misses:#?}", misses.len());
        answered
    }
}
