//! `DataLoader`: batches from worker threads, in order, with a bounded prefetch.
//!
//! As PyTorch's `DataLoader(num_workers=N, pin_memory=True, persistent_workers=True)`, but with
//! threads: a worker builds a whole batch (decode, transform, stack) into one tensor, pinned
//! when the batch goes to a GPU, and hands it over without a copy or pickling. The loop gets
//! batches in order; at most `workers x prefetch` are built ahead, so memory stays bounded. The
//! copy to a CUDA device is asynchronous (from pinned memory), and images cross as bytes and
//! are normalized there.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::{Device, Tensor};

use crate::datasets::{Batch, BatchContext, Dataset};
use crate::error::DataError;

/// How often a loop waiting for a batch looks at the interrupt flag: the kernel's interrupt is
/// a counter that can only be read, so a wait is cut into slices this long.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);

/// The CPUs this job was given: `SLURM_CPUS_PER_TASK` under Slurm, else the CPUs this process
/// may run on (its affinity and cgroup quota), not the node's.
pub fn available_cpus() -> usize {
    let affinity = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .map_or(affinity, |n| n.min(affinity))
}

/// Batches of a [`Dataset`], shuffled per epoch, from worker threads.
///
/// ```ignore
/// let train = ImageFolder::new("data/train")?.transform(
///     Compose::new().then(RandomResizedCrop::new(224)).then(RandomHorizontalFlip::default())
///         .then(Normalize::imagenet()));
/// let loader = DataLoader::new(train).batch_size(64).shuffle(true).device(device);
/// for epoch in 0..epochs {
///     for (images, labels) in progress(&loader) { /* images: [64, 3, 224, 224] floats */ }
/// }
/// ```
pub struct DataLoader<D: Dataset + 'static> {
    dataset: Arc<D>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    workers: usize,
    prefetch: usize,
    device: Device,
    rank: usize,
    world_size: usize,
    skip_bad_files: bool,
    next_epoch: AtomicU64,
    pool: Mutex<Option<Pool>>,
    skipped: Mutex<Vec<DataError>>,
}

impl<D: Dataset + 'static> std::fmt::Debug for DataLoader<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataLoader({} samples, batch_size={}, shuffle={}, drop_last={}, workers={}, \
             device={:?}, rank {} of {}, {} batches per epoch)",
            self.dataset.len(),
            self.batch_size,
            self.shuffle,
            self.drop_last,
            self.workers,
            self.device,
            self.rank,
            self.world_size,
            self.len()
        )
    }
}

impl<D: Dataset + 'static> DataLoader<D> {
    /// Batches of 1, in order, on the CPU, from as many workers as this job has CPUs (see
    /// [`available_cpus`]); this process's share when it is one rank of several (srun,
    /// torchrun), as `DistributedSampler` draws it.
    pub fn new(dataset: D) -> DataLoader<D> {
        let launch = launch_env::Launch::from_env().unwrap_or_else(|_| launch_env::Launch::alone());
        DataLoader {
            dataset: Arc::new(dataset),
            batch_size: 1,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: available_cpus(),
            prefetch: 2,
            device: Device::Cpu,
            rank: launch.rank,
            world_size: launch.world_size.max(1),
            skip_bad_files: false,
            next_epoch: AtomicU64::new(0),
            pool: Mutex::new(None),
            skipped: Mutex::new(Vec::new()),
        }
    }

    /// Samples per batch (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// A new order every epoch, drawn from the seed and the epoch only.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Leave out the last batch when it is smaller than the others.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The seed of the shuffle and of the random transforms (0 by default).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Worker threads; 0 builds batches in the loop's own thread.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self.stop_workers();
        self
    }

    /// Batches each worker builds ahead (2 by default, as PyTorch's `prefetch_factor`).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Where batches go. For a CUDA device workers fill pinned memory and the copy is
    /// asynchronous (`non_blocking`); images are normalized there.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// This process's share as rank `rank` of `world_size` (set from the launcher by default).
    pub fn shard(mut self, rank: usize, world_size: usize) -> Result<Self, DataError> {
        let world_size = world_size.max(1);
        if rank >= world_size {
            return Err(DataError::invalid(format!(
                "rank {rank} in a world of {world_size}: ranks are 0 to {}",
                world_size - 1
            )));
        }
        (self.rank, self.world_size) = (rank, world_size);
        Ok(self)
    }

    /// Skip files that cannot be read or decoded (reported at the end of each epoch) instead
    /// of stopping with an error naming the file.
    pub fn skip_bad_files(mut self, skip: bool) -> Self {
        self.skip_bad_files = skip;
        self
    }

    /// The data set.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// Samples this rank gets per epoch (a share of the data set, padded as
    /// `DistributedSampler` does).
    pub fn num_samples(&self) -> usize {
        self.sampler().num_samples()
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.num_samples();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The files skipped in the last epoch (with [`skip_bad_files`](Self::skip_bad_files)).
    pub fn skipped(&self) -> Vec<String> {
        self.skipped
            .lock()
            .map(|s| s.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    fn sampler(&self) -> notebook_helpers::ShardedSampler {
        notebook_helpers::ShardedSampler::for_rank(self.dataset.len(), self.rank, self.world_size)
            .seed(self.seed)
            .shuffle(self.shuffle)
    }

    /// The indices of each batch of `epoch`, in order.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let indices = self.sampler().indices(epoch);
        let mut batches: Vec<Vec<usize>> = indices
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        batches
    }

    /// The batches of `epoch` (the shuffle depends on the seed and the epoch only).
    pub fn epoch(&self, epoch: u64) -> Epoch<'_, D> {
        self.next_epoch.store(epoch + 1, Ordering::Relaxed);
        if let Ok(mut skipped) = self.skipped.lock() {
            skipped.clear();
        }
        let shared = Arc::new(EpochShared {
            seed: self.seed,
            epoch,
            device: self.device,
            skip_bad_files: self.skip_bad_files,
            stop: AtomicBool::new(false),
        });
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        let mut jobs = self
            .batches(epoch)
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>();
        jobs.reverse();
        let jobs_tx = if self.workers > 0 {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let pool = pool.get_or_insert_with(|| Pool::start(self.dataset.clone(), self.workers));
            Some(pool.jobs.clone())
        } else {
            None
        };
        Epoch {
            loader: self,
            shared,
            pending: jobs,
            total: self.len(),
            in_flight: 0,
            next: 0,
            ready: BTreeMap::new(),
            results_tx,
            results_rx,
            jobs_tx,
            failed: false,
            reported: false,
        }
    }

    /// The next epoch's batches (epochs count from 0; [`epoch`](Self::epoch) sets the count).
    pub fn iter(&self) -> Epoch<'_, D> {
        let e = self.next_epoch.load(Ordering::Relaxed);
        self.epoch(e)
    }

    fn stop_workers(&mut self) {
        let pool = self.pool.get_mut().map(Option::take);
        if let Ok(Some(pool)) = pool {
            pool.stop();
        }
    }
}

impl<D: Dataset + 'static> Drop for DataLoader<D> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

impl<'a, D: Dataset + 'static> IntoIterator for &'a DataLoader<D> {
    type Item = (Tensor, Tensor);
    type IntoIter = Epoch<'a, D>;
    fn into_iter(self) -> Epoch<'a, D> {
        self.iter()
    }
}

/// Per-epoch settings the workers read.
struct EpochShared {
    seed: u64,
    epoch: u64,
    device: Device,
    skip_bad_files: bool,
    stop: AtomicBool,
}

/// A built batch: its number in the epoch, the batch or its error, and the files skipped.
type Built = (usize, Result<Batch, DataError>, Vec<DataError>);

struct Job {
    shared: Arc<EpochShared>,
    number: usize,
    indices: Vec<usize>,
    results: Sender<Built>,
}

/// Worker threads kept across epochs (`persistent_workers`), fed one job queue.
struct Pool {
    jobs: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start<D: Dataset + 'static>(dataset: Arc<D>, workers: usize) -> Pool {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..workers)
            .filter_map(|i| {
                let (dataset, queue) = (dataset.clone(), queue.clone());
                std::thread::Builder::new()
                    .name(format!("data-loader-{i}"))
                    .spawn(move || worker(&*dataset, &queue))
                    .ok()
            })
            .collect();
        Pool { jobs, threads }
    }

    fn stop(self) {
        drop(self.jobs);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn build(dataset: &dyn Dataset, job: &Job) -> (Result<Batch, DataError>, Vec<DataError>) {
    let skipped = Mutex::new(Vec::new());
    let ctx = BatchContext {
        seed: job.shared.seed,
        epoch: job.shared.epoch,
        device: job.shared.device,
        stop: &job.shared.stop,
        skip_bad_files: job.shared.skip_bad_files,
        skipped: &skipped,
    };
    let result = catch_unwind(AssertUnwindSafe(|| dataset.batch(&job.indices, &ctx)))
        .unwrap_or_else(|panic| Err(DataError::WorkerPanic(panic_message(&*panic))));
    (result, skipped.into_inner().unwrap_or_default())
}

fn worker(dataset: &dyn Dataset, queue: &Receiver<Job>) {
    // Each worker is one CPU's worth of work, as PyTorch's workers `set_num_threads(1)`: its
    // tensor operations (pinning, indexing) do not fan out over the other workers' CPUs.
    while let Ok(job) = queue.recv() {
        if job.shared.stop.load(Ordering::Relaxed) {
            continue;
        }
        let (result, skipped) = build(dataset, &job);
        // The epoch may be gone (the loop was left): its batches are dropped.
        let _ = job.results.send((job.number, result, skipped));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}

/// One epoch's batches, in order: `(inputs, targets)` on the loader's device, images
/// normalized when their transform says so.
///
/// Leaving the loop early (`break`, an error, an interrupt) stops the workers' work on this
/// epoch at once; the loader and its workers stay ready for the next.
pub struct Epoch<'a, D: Dataset + 'static> {
    loader: &'a DataLoader<D>,
    shared: Arc<EpochShared>,
    /// Batches not yet handed to a worker, the next last.
    pending: Vec<(usize, Vec<usize>)>,
    total: usize,
    in_flight: usize,
    next: usize,
    ready: BTreeMap<usize, Result<Batch, DataError>>,
    results_tx: Sender<Built>,
    results_rx: Receiver<Built>,
    jobs_tx: Option<Sender<Job>>,
    failed: bool,
    reported: bool,
}

impl<D: Dataset + 'static> Epoch<'_, D> {
    fn job(&self, number: usize, indices: Vec<usize>) -> Job {
        Job {
            shared: self.shared.clone(),
            number,
            indices,
            results: self.results_tx.clone(),
        }
    }

    /// Hands batches to the workers until `workers x prefetch` are being built or ready.
    fn dispatch(&mut self) {
        let Some(jobs) = &self.jobs_tx else { return };
        let limit = self.loader.workers * self.loader.prefetch;
        while self.in_flight + self.ready.len() < limit {
            let Some((number, indices)) = self.pending.pop() else {
                break;
            };
            if jobs.send(self.job(number, indices)).is_err() {
                break;
            }
            self.in_flight += 1;
        }
    }

    fn record_skipped(&self, skipped: Vec<DataError>) {
        if !skipped.is_empty()
            && let Ok(mut all) = self.loader.skipped.lock()
        {
            all.extend(skipped);
        }
    }

    /// The next batch on the CPU, or the error that stopped it.
    fn next_raw(&mut self) -> Option<Result<Batch, DataError>> {
        if self.failed || self.next >= self.total {
            return None;
        }
        // ■ stops the loop here, between batches, even when batches are ready; dropping the
        // epoch (as the panic unwinds) stops the workers' work on it.
        notebook_helpers::check_interrupt();
        if self.jobs_tx.is_none() {
            // No workers: build it here.
            let (number, indices) = self.pending.pop()?;
            let (result, skipped) = build(&*self.loader.dataset, &self.job(number, indices));
            self.record_skipped(skipped);
            self.next += 1;
            return Some(result);
        }
        self.dispatch();
        while !self.ready.contains_key(&self.next) {
            notebook_helpers::check_interrupt();
            match self.results_rx.recv_timeout(INTERRUPT_POLL) {
                Ok((number, result, skipped)) => {
                    self.in_flight -= 1;
                    self.record_skipped(skipped);
                    self.ready.insert(number, result);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Err(DataError::invalid("the data loader's workers stopped")));
                }
            }
        }
        let batch = self.ready.remove(&self.next)?;
        self.next += 1;
        self.dispatch();
        Some(batch)
    }

    /// The next batch on the loader's device, or the error that stopped the epoch (a file
    /// that cannot be decoded, a worker's panic).
    pub fn try_next(&mut self) -> Option<Result<(Tensor, Tensor), DataError>> {
        let batch = loop {
            match self.next_raw() {
                // Every file of this batch was skipped: on to the next.
                Some(Ok(batch)) if batch.is_empty() => continue,
                Some(Ok(batch)) => break batch,
                Some(Err(e)) => {
                    self.failed = true;
                    self.shared.stop.store(true, Ordering::Relaxed);
                    return Some(Err(e));
                }
                None => {
                    self.report_skipped();
                    return None;
                }
            }
        };
        let result = self.to_device(batch);
        if self.next >= self.total {
            self.report_skipped();
        }
        Some(result)
    }

    fn to_device(&self, batch: Batch) -> Result<(Tensor, Tensor), DataError> {
        let device = self.loader.device;
        notebook_helpers::progress_units(batch.len(), self.loader.dataset.unit());
        // From pinned memory the copies return at once and overlap the host's work.
        let non_blocking = device.is_cuda();
        let inputs = batch
            .inputs
            .f_to_device_(device, batch.inputs.kind(), non_blocking, false)?;
        let targets =
            batch
                .targets
                .f_to_device_(device, batch.targets.kind(), non_blocking, false)?;
        // Images still in bytes (for a GPU) are normalized on their device; for the CPU the
        // workers did it.
        let inputs = match self.loader.dataset.normalization() {
            Some(norm) if inputs.kind() == tch::Kind::Uint8 => norm.apply_to_batch(&inputs)?,
            _ => inputs,
        };
        Ok((inputs, targets))
    }

    /// Says once, at the end of the epoch, which files were skipped.
    fn report_skipped(&mut self) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let skipped = self.loader.skipped();
        if let Some(first) = skipped.first() {
            eprintln!(
                "data loader: skipped {} unreadable file(s) this epoch; the first: {first} \
                 (all of them: loader.skipped())",
                skipped.len()
            );
        }
    }
}

impl<D: Dataset + 'static> Iterator for Epoch<'_, D> {
    type Item = (Tensor, Tensor);

    /// The next batch. A file that cannot be decoded, or a worker's panic, stops the cell with
    /// an error naming it (use [`try_next`](Epoch::try_next) to handle it instead).
    fn next(&mut self) -> Option<(Tensor, Tensor)> {
        match self.try_next()? {
            Ok(batch) => Some(batch),
            Err(e) => panic!("data loader: {e}"),
        }
    }

    /// Exact, unless every file of a batch is skipped (`skip_bad_files`): then one fewer.
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.failed {
            0
        } else {
            self.total - self.next
        };
        (left, Some(left))
    }
}

impl<D: Dataset + 'static> Drop for Epoch<'_, D> {
    fn drop(&mut self) {
        // Workers skip this epoch's remaining jobs and leave a batch they are building.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}
