//! [`ShardedSampler`]: each rank's share of a data set, reshuffled every epoch, as PyTorch's
//! `DistributedSampler` draws it.

/// Which samples of a data set of `len` this rank trains on in an epoch.
///
/// Every rank draws the same permutation of `0..len` (seeded by `seed + epoch`), pads it by
/// repeating its start so that it divides evenly (or, with [`drop_last`](Self::drop_last),
/// drops the tail), and takes every `world_size`-th index from its rank on. So every rank runs
/// the same number of steps, and with one process it is an ordinary shuffled epoch.
///
/// ```ignore
/// let sampler = ShardedSampler::new(train_len).seed(42);      // rank and world from the launcher
/// for epoch in 0..epochs {
///     for batch in sampler.indices(epoch).chunks(local_batch) { /* ... */ }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedSampler {
    len: usize,
    rank: usize,
    world_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
}

impl ShardedSampler {
    /// This process's share: rank and world size from its launcher (srun, torchrun), or the
    /// whole data set in a notebook. Malformed launch variables count as one process here;
    /// joining the job (c10d's `Distributed::init`) reports them.
    pub fn new(len: usize) -> ShardedSampler {
        let launch = launch_env::Launch::from_env().unwrap_or_else(|_| launch_env::Launch::alone());
        ShardedSampler::for_rank(len, launch.rank, launch.world_size)
    }

    /// Rank `rank`'s share in a world of `world_size` (at least 1).
    ///
    /// # Panics
    /// When `rank` is not below `world_size`: two ranks would train on the same share.
    pub fn for_rank(len: usize, rank: usize, world_size: usize) -> ShardedSampler {
        let world_size = world_size.max(1);
        assert!(
            rank < world_size,
            "rank {rank} in a world of {world_size}: ranks are 0 to {}",
            world_size - 1
        );
        ShardedSampler {
            len,
            rank,
            world_size,
            seed: 0,
            shuffle: true,
            drop_last: false,
        }
    }

    /// The shuffle's seed (the same on every rank); 0 by default.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to shuffle each epoch (default true); without, rank r takes r, r + world, ...
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Drop the samples past the last full round instead of repeating some (default false).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// How many indices each rank gets per epoch.
    pub fn num_samples(&self) -> usize {
        if self.drop_last {
            self.len / self.world_size
        } else {
            self.len.div_ceil(self.world_size)
        }
    }

    /// This rank's indices for `epoch`, in order.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            shuffle(&mut order, self.seed.wrapping_add(epoch));
        }
        let total = self.num_samples() * self.world_size;
        if total > order.len() && !order.is_empty() {
            let pad: Vec<usize> = order
                .iter()
                .cycle()
                .take(total - order.len())
                .copied()
                .collect();
            order.extend(pad);
        }
        order.truncate(total);
        order
            .into_iter()
            .skip(self.rank)
            .step_by(self.world_size)
            .collect()
    }
}

/// Fisher-Yates with SplitMix64: the same order for the same seed on every machine.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        // Lemire's multiply-shift: unbiased enough for data order, and portable.
        let j = ((u128::from(next()) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::ShardedSampler;

    #[test]
    fn the_ranks_split_one_permutation_between_them() {
        let all = ShardedSampler::for_rank(10, 0, 1).seed(7).indices(3);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let shards: Vec<Vec<usize>> = (0..2)
            .map(|r| ShardedSampler::for_rank(10, r, 2).seed(7).indices(3))
            .collect();
        // Interleaved, the two shards are the one-process order: a global batch of 2k is the
        // same samples whether one rank or two draw it.
        let merged: Vec<usize> = shards[0]
            .iter()
            .zip(&shards[1])
            .flat_map(|(a, b)| [*a, *b])
            .collect();
        assert_eq!(merged, all);
    }

    #[test]
    fn epochs_reshuffle_and_seeds_repeat() {
        let s = ShardedSampler::for_rank(100, 1, 4).seed(1);
        assert_ne!(s.indices(0), s.indices(1));
        assert_eq!(s.indices(5), s.clone().indices(5));
        assert_eq!(s.indices(0).len(), 25);
    }

    #[test]
    fn uneven_sizes_pad_or_drop() {
        let padded: Vec<Vec<usize>> = (0..3)
            .map(|r| ShardedSampler::for_rank(7, r, 3).shuffle(false).indices(0))
            .collect();
        assert_eq!(padded, [vec![0, 3, 6], vec![1, 4, 0], vec![2, 5, 1]]);
        let dropped: Vec<Vec<usize>> = (0..3)
            .map(|r| {
                ShardedSampler::for_rank(7, r, 3)
                    .shuffle(false)
                    .drop_last(true)
                    .indices(0)
            })
            .collect();
        assert_eq!(dropped, [vec![0, 3], vec![1, 4], vec![2, 5]]);
        // Fewer samples than ranks: every rank still gets one.
        assert_eq!(ShardedSampler::for_rank(1, 2, 4).indices(0), [0]);
        assert!(std::panic::catch_unwind(|| ShardedSampler::for_rank(9, 2, 2)).is_err());
        assert!(ShardedSampler::for_rank(0, 0, 2).indices(0).is_empty());
    }
}
