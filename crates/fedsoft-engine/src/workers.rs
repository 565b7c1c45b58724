//! Spreading a round's independent jobs (scheduled clients, evaluation batches) over the machine's cores.
//!
//! The federated workloads are many small models: one client's step on a 17-token batch keeps about one core
//! busy however the matrix kernels are threaded. So the jobs themselves run side by side: `threads` cores are
//! split into `min(threads, jobs)` workers, each with a rayon pool of its share of the threads that the
//! tensor kernels inside a job use. When there are at least as many jobs as threads every job runs
//! single-threaded, so its arithmetic, and therefore every result, is the same whatever the thread count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The cores a run may use, and how it divides them among jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    threads: usize,
}

impl Workers {
    /// `threads` cores; `None` or `0` means every core the operating system offers this process.
    pub fn new(threads: Option<usize>) -> Self {
        let all = std::thread::available_parallelism().map_or(1, usize::from);
        Workers { threads: threads.filter(|&t| t > 0).unwrap_or(all) }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(i)` for every `i` in `0..jobs` and returns the results in index order. Jobs are handed out
    /// in index order to whichever worker is free, so a slow job does not hold up the others.
    pub fn map<R: Send>(&self, jobs: usize, job: impl Fn(usize) -> R + Sync) -> Vec<R> {
        if jobs == 0 {
            return Vec::new();
        }
        let workers = self.threads.min(jobs).max(1);
        let share = (self.threads / workers).max(1);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs).map(|_| None).collect());
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    break;
                }
                let r = job(i);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            }
        };
        let pools = pools(workers, share);
        std::thread::scope(|scope| {
            for w in 0..workers {
                let pool = pools.get(w).cloned();
                scope.spawn(move || match pool {
                    Some(pool) => pool.install(work),
                    // No pool (threads refused by the OS): the job's kernels use the global pool instead.
                    None => work(),
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|r| r.expect("every job ran: the scope joined all workers"))
            .collect()
    }
}

/// `count` rayon pools of `share` threads each, made once per process and reused by every round. Pools made
/// afresh each round would start their threads before the last round's had exited, and every such thread
/// takes a malloc arena of its own: the default run's peak memory grew by half that way.
fn pools(count: usize, share: usize) -> Vec<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<BTreeMap<usize, Vec<Arc<rayon::ThreadPool>>>> = Mutex::new(BTreeMap::new());
    let mut all = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let list = all.entry(share).or_default();
    while list.len() < count {
        match rayon::ThreadPoolBuilder::new().num_threads(share).build() {
            Ok(pool) => list.push(Arc::new(pool)),
            Err(_) => break,
        }
    }
    list.iter().take(count).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_job_order_for_any_thread_count() {
        for threads in [1, 2, 3, 8] {
            let w = Workers::new(Some(threads));
            let out = w.map(17, |i| {
                // Uneven job lengths, so workers finish out of order.
                std::thread::sleep(std::time::Duration::from_micros(((17 - i) * 50) as u64));
                i * i
            });
            assert_eq!(out, (0..17).map(|i| i * i).collect::<Vec<_>>(), "threads = {threads}");
        }
        assert!(Workers::new(Some(4)).map(0, |i| i).is_empty());
    }

    #[test]
    fn each_worker_gets_its_share_of_the_threads() {
        // 4 threads over 2 jobs: two workers with 2 threads each; over 8 jobs: 4 single-threaded workers.
        let w = Workers::new(Some(4));
        assert_eq!(w.map(2, |_| rayon::current_num_threads()), vec![2, 2]);
        assert_eq!(w.map(8, |_| rayon::current_num_threads()), vec![1; 8]);
        assert_eq!(Workers::new(Some(0)).threads(), Workers::new(None).threads());
    }
}
