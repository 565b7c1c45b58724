//! Spreading a round's independent jobs (scheduled clients, evaluation batches) over the machine's cores.
//!
//! The federated workloads are many small models: one client's step on a 17-token batch keeps about one core
//! busy however the matrix kernels are threaded. So the jobs themselves run side by side, on one rayon pool
//! of `threads` threads: every thread takes the next job in index order until none is left, and a thread
//! with no job left (more threads than jobs, or the last jobs of a round) steals the pieces that the busy
//! jobs' kernels offer (blocks of product columns, LayerNorm rows, differentiation chunks). Whole jobs are
//! never stolen: they are handed out by a counter, not queued in the pool, so one job never waits inside
//! another. With as many jobs as threads, each thread keeps to its own job, as with one single-threaded pool
//! per job. Every piece a kernel offers is fixed by its shape alone, so every result is the same whatever the
//! thread count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The cores a run may use: one rayon pool of that many threads runs its jobs ([`Workers::map`]).
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
    /// in index order to whichever thread is free, so a slow job does not hold up the others.
    pub fn map<R: Send>(&self, jobs: usize, job: impl Fn(usize) -> R + Sync) -> Vec<R> {
        if jobs == 0 {
            return Vec::new();
        }
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
        match pool(self.threads) {
            // Every thread of the pool runs the loop once; a thread that finds no job left returns and is
            // then free to steal the busy jobs' kernel pieces until the last job is done.
            Some(pool) => {
                pool.broadcast(|_| work());
            }
            // No pool (threads refused by the OS): the jobs run one after another here, their kernels on
            // the global pool.
            None => work(),
        }
        results
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|r| r.expect("every job ran: the broadcast returned after every thread's loop"))
            .collect()
    }
}

impl Workers {
    /// Runs one `job` on the pool, as a job of [`Workers::map`] runs: the pieces its kernels offer stay on the
    /// pool's threads. Called from a thread of no pool, the kernels would spread over the process-wide pool,
    /// which has a thread per core in every process (every Ray actor of a Flower simulation, say).
    pub fn install<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        match pool(self.threads) {
            Some(pool) => pool.install(job),
            None => job(),
        }
    }
}

/// The rayon pool of `threads` threads, made once per process for each size and reused by every round.
/// Pools made afresh each round would start their threads before the last round's had exited, and every
/// such thread takes a malloc arena of its own: the default run's peak memory grew by half that way.
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>> = Mutex::new(BTreeMap::new());
    let mut all = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pool) = all.get(&threads) {
        return Some(pool.clone());
    }
    // Its threads flush subnormals (`fedsoft_model::subnormals`) for as long as they live.
    let builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    let pool = Arc::new(builder.start_handler(|_| fedsoft_model::subnormals::flush_on_this_thread()).build().ok()?);
    all.insert(threads, pool.clone());
    Some(pool)
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
    fn every_job_runs_on_one_pool_of_all_the_threads() {
        // 4 threads over 2 jobs or 8: the jobs' kernels see a pool of 4 either way, and the pool is reused.
        let w = Workers::new(Some(4));
        assert_eq!(w.map(2, |_| rayon::current_num_threads()), vec![4, 4]);
        assert_eq!(w.map(8, |_| rayon::current_num_threads()), vec![4; 8]);
        assert!(Arc::ptr_eq(&pool(4).expect("a pool"), &pool(4).expect("a pool")));
        assert_eq!(Workers::new(Some(0)).threads(), Workers::new(None).threads());
    }

    #[test]
    fn a_thread_without_a_job_helps_the_busy_ones() {
        // Three jobs on 2 threads: the two short ones go first, so one thread runs the long third job while
        // the other has none left, and that one runs some of the job's parallel pieces (each long enough
        // that the job's own thread cannot run them all before the other wakes up).
        let w = Workers::new(Some(2));
        let threads_seen = w.map(3, |i| {
            use rayon::prelude::*;
            if i < 2 {
                return 0;
            }
            let ids: std::collections::BTreeSet<usize> = (0..64)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    rayon::current_thread_index().expect("a pool thread")
                })
                .collect();
            ids.len()
        });
        assert_eq!(threads_seen, vec![0, 0, 2]);
    }

    #[test]
    fn an_installed_job_runs_on_the_pool_of_the_threads_asked_for() {
        assert_eq!(Workers::new(Some(1)).install(rayon::current_num_threads), 1);
        assert_eq!(Workers::new(Some(3)).install(rayon::current_num_threads), 3);
        assert!(Workers::new(Some(3)).install(rayon::current_thread_index).is_some());
    }

    #[test]
    fn jobs_inside_jobs_finish() {
        // A job that maps jobs of its own on the same pool (evaluation inside a round, say) does not deadlock.
        let w = Workers::new(Some(2));
        let out = w.map(3, |i| w.map(3, |j| i * 10 + j).into_iter().sum::<usize>());
        assert_eq!(out, vec![3, 33, 63]);
    }
}
