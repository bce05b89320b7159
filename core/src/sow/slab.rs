//! Slabs: the arenas SOW records live in.
//!
//! A topic's records are stored in slabs of `slab_size` bytes, one `Box<[u8]>` each, allocated when
//! the topic is created (the first) and when the existing ones are full (the rest). Inside a slab,
//! records occupy 8-byte-aligned blocks whose first 4 bytes hold the block's capacity; free space
//! is a first-fit list of extents, coalesced on release. A record that grows beyond its block is
//! relocated; when a slab has enough free bytes but no extent large enough it is compacted (blocks
//! slide to the front and the caller is told where each one went). A record larger than a slab
//! gets a dedicated slab of its own size, released with the record.
//!
//! This module knows blocks, not records: it never reads a record's fields.

use std::collections::BTreeMap;

/// Alignment of every block, in bytes (keeps the record header's u64 fields aligned).
pub const BLOCK_ALIGN_BYTES: usize = 8;
/// A block keeps its size after an in-place update unless this many bytes or more can be freed.
pub const SHRINK_MIN_BYTES: usize = 64;
/// Bytes at the start of every block holding its capacity.
const CAPACITY_BYTES: usize = 4;

/// Where a record lives: slab number and byte offset of its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRef {
    /// Index of the slab in its pool.
    pub slab: u32,
    /// Offset of the block in the slab.
    pub offset: u32,
}

/// Rounds a block size up to [`BLOCK_ALIGN_BYTES`].
pub fn block_bytes(record_bytes: usize) -> usize {
    record_bytes.div_ceil(BLOCK_ALIGN_BYTES) * BLOCK_ALIGN_BYTES
}

/// One arena with a free list.
#[derive(Debug)]
pub struct Slab {
    bytes: Box<[u8]>,
    /// Free extents: offset → length, non-overlapping, never adjacent (coalesced).
    free: BTreeMap<u32, u32>,
    free_bytes: usize,
    dedicated: bool,
}

impl Slab {
    /// A zeroed slab of `size_bytes` (a multiple of [`BLOCK_ALIGN_BYTES`]), all free.
    pub fn new(size_bytes: usize, dedicated: bool) -> Slab {
        assert!(
            size_bytes > 0 && size_bytes.is_multiple_of(BLOCK_ALIGN_BYTES),
            "slab size {size_bytes}"
        );
        assert!(u32::try_from(size_bytes).is_ok(), "slab offsets are 32-bit");
        let mut free = BTreeMap::new();
        free.insert(0, size_bytes as u32);
        Slab {
            bytes: vec![0; size_bytes].into_boxed_slice(),
            free,
            free_bytes: size_bytes,
            dedicated,
        }
    }

    /// Size of the slab in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes not in any block.
    pub fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Whether this slab was made for one oversized record.
    pub fn is_dedicated(&self) -> bool {
        self.dedicated
    }

    /// Whether no block is allocated.
    pub fn is_empty(&self) -> bool {
        self.free_bytes == self.bytes.len()
    }

    /// Number of free extents (fragmentation indicator).
    pub fn free_extents(&self) -> usize {
        self.free.len()
    }

    /// Allocates a block for `record_bytes` (first fit); `None` when no extent is large enough.
    pub fn allocate(&mut self, record_bytes: usize) -> Option<u32> {
        assert!(record_bytes >= CAPACITY_BYTES);
        let capacity = block_bytes(record_bytes);
        if capacity > self.free_bytes {
            return None;
        }
        let (&offset, &length) = self
            .free
            .iter()
            .find(|(_, &length)| length as usize >= capacity)?;
        self.free.remove(&offset);
        if length as usize > capacity {
            self.free
                .insert(offset + capacity as u32, length - capacity as u32);
        }
        self.free_bytes -= capacity;
        self.set_capacity(offset, capacity);
        Some(offset)
    }

    /// Capacity of the block at `offset`.
    pub fn capacity_at(&self, offset: u32) -> usize {
        let at = offset as usize;
        u32::from_le_bytes(
            self.bytes[at..at + CAPACITY_BYTES]
                .try_into()
                .expect("4 bytes"),
        ) as usize
    }

    fn set_capacity(&mut self, offset: u32, capacity: usize) {
        let at = offset as usize;
        self.bytes[at..at + CAPACITY_BYTES].copy_from_slice(&(capacity as u32).to_le_bytes());
    }

    /// Returns the block at `offset` to the free list, merging it with free neighbours.
    pub fn release(&mut self, offset: u32) {
        let capacity = self.capacity_at(offset);
        assert!(capacity >= BLOCK_ALIGN_BYTES && offset as usize + capacity <= self.bytes.len());
        assert!(
            !self.free.contains_key(&offset),
            "block at {offset} released twice"
        );
        let mut start = offset;
        let mut length = capacity as u32;
        if let Some((&previous, &previous_length)) = self.free.range(..offset).next_back() {
            assert!(
                previous + previous_length <= offset,
                "free extent overlaps block at {offset}"
            );
            if previous + previous_length == offset {
                self.free.remove(&previous);
                start = previous;
                length += previous_length;
            }
        }
        if let Some(next_length) = self.free.remove(&(offset + capacity as u32)) {
            length += next_length;
        }
        self.free.insert(start, length);
        self.free_bytes += capacity;
    }

    /// Lets the block at `offset` keep only what `record_bytes` needs when that frees at least
    /// [`SHRINK_MIN_BYTES`]; returns false (and changes nothing) when the record does not fit.
    pub fn fit_in_place(&mut self, offset: u32, record_bytes: usize) -> bool {
        let capacity = self.capacity_at(offset);
        let needed = block_bytes(record_bytes);
        if needed > capacity {
            return false;
        }
        if capacity - needed >= SHRINK_MIN_BYTES {
            self.set_capacity(offset, needed);
            let tail = offset + needed as u32;
            self.set_capacity(tail, capacity - needed);
            self.release(tail);
        }
        true
    }

    /// The block at `offset`, capacity word included.
    pub fn block(&self, offset: u32) -> &[u8] {
        let at = offset as usize;
        &self.bytes[at..at + self.capacity_at(offset)]
    }

    /// The block at `offset`, writable; the caller must leave the first 4 bytes alone.
    pub fn block_mut(&mut self, offset: u32) -> &mut [u8] {
        let at = offset as usize;
        let capacity = self.capacity_at(offset);
        &mut self.bytes[at..at + capacity]
    }

    /// Offsets of every allocated block, in address order.
    pub fn blocks(&self) -> impl Iterator<Item = u32> + '_ {
        let mut at = 0u32;
        std::iter::from_fn(move || loop {
            if at as usize >= self.bytes.len() {
                return None;
            }
            if let Some(&free) = self.free.get(&at) {
                at += free;
                continue;
            }
            let offset = at;
            at += self.capacity_at(offset) as u32;
            return Some(offset);
        })
    }

    /// Slides every block to the front so the free space is one extent; `moved(old, new, block)`
    /// is called for each block that moved.
    pub fn compact(&mut self, mut moved: impl FnMut(u32, u32, &[u8])) {
        let size = self.bytes.len() as u32;
        let mut read = 0u32;
        let mut write = 0u32;
        while read < size {
            if let Some(&free) = self.free.get(&read) {
                read += free;
                continue;
            }
            let capacity = self.capacity_at(read) as u32;
            assert!(capacity > 0, "allocated block at {read} has no capacity");
            if read != write {
                self.bytes
                    .copy_within(read as usize..(read + capacity) as usize, write as usize);
                moved(
                    read,
                    write,
                    &self.bytes[write as usize..(write + capacity) as usize],
                );
            }
            read += capacity;
            write += capacity;
        }
        self.free.clear();
        if write < size {
            self.free.insert(write, size - write);
        }
        assert_eq!(
            self.free_bytes,
            (size - write) as usize,
            "free accounting drifted"
        );
    }
}

/// Slab usage figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlabUsage {
    /// Slabs allocated (dedicated ones included).
    pub slabs: usize,
    /// Of which dedicated to one oversized record.
    pub dedicated_slabs: usize,
    /// Bytes in allocated blocks.
    pub bytes_used: usize,
    /// Bytes free.
    pub bytes_free: usize,
}

/// A topic's slabs.
#[derive(Debug)]
pub struct SlabPool {
    slab_size_bytes: usize,
    slabs: Vec<Option<Slab>>,
    /// The slab that satisfied the last allocation (tried first).
    hint: usize,
}

impl SlabPool {
    /// A pool with its first slab allocated.
    pub fn new(slab_size_bytes: usize) -> SlabPool {
        let slab_size_bytes = slab_size_bytes / BLOCK_ALIGN_BYTES * BLOCK_ALIGN_BYTES;
        SlabPool {
            slab_size_bytes,
            slabs: vec![Some(Slab::new(slab_size_bytes, false))],
            hint: 0,
        }
    }

    /// Size of a regular slab.
    pub fn slab_size_bytes(&self) -> usize {
        self.slab_size_bytes
    }

    /// Allocates a block for `record_bytes`, compacting a slab or adding one when needed;
    /// `moved(old, new, block)` is told about blocks compaction moved.
    pub fn allocate(
        &mut self,
        record_bytes: usize,
        mut moved: impl FnMut(RecordRef, RecordRef, &[u8]),
    ) -> RecordRef {
        let capacity = block_bytes(record_bytes);
        if capacity > self.slab_size_bytes {
            let slab = self.add_slab(Slab::new(capacity, true));
            let offset = self.slabs[slab]
                .as_mut()
                .expect("just added")
                .allocate(record_bytes);
            return RecordRef {
                slab: slab as u32,
                offset: offset.expect("a dedicated slab fits its record"),
            };
        }
        let hint = self.hint;
        let order =
            std::iter::once(hint).chain((0..self.slabs.len()).filter(|&index| index != hint));
        let mut compactable = None;
        for index in order {
            let Some(slab) = self.slabs.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if slab.is_dedicated() || slab.free_bytes() < capacity {
                continue;
            }
            if let Some(offset) = slab.allocate(record_bytes) {
                self.hint = index;
                return RecordRef {
                    slab: index as u32,
                    offset,
                };
            }
            compactable.get_or_insert(index);
        }
        let index = match compactable {
            Some(index) => {
                let slab = self.slabs[index].as_mut().expect("compactable slab exists");
                let slab_number = index as u32;
                slab.compact(|old, new, block| {
                    moved(
                        RecordRef {
                            slab: slab_number,
                            offset: old,
                        },
                        RecordRef {
                            slab: slab_number,
                            offset: new,
                        },
                        block,
                    )
                });
                index
            }
            None => self.add_slab(Slab::new(self.slab_size_bytes, false)),
        };
        self.hint = index;
        let offset = self.slabs[index]
            .as_mut()
            .expect("slab exists")
            .allocate(record_bytes);
        RecordRef {
            slab: index as u32,
            offset: offset.expect("a compacted or new slab fits the record"),
        }
    }

    fn add_slab(&mut self, slab: Slab) -> usize {
        match self.slabs.iter().position(Option::is_none) {
            Some(index) => {
                self.slabs[index] = Some(slab);
                index
            }
            None => {
                self.slabs.push(Some(slab));
                self.slabs.len() - 1
            }
        }
    }

    fn slab(&self, record: RecordRef) -> &Slab {
        self.slabs[record.slab as usize]
            .as_ref()
            .expect("record refers to a live slab")
    }

    fn slab_mut(&mut self, record: RecordRef) -> &mut Slab {
        self.slabs[record.slab as usize]
            .as_mut()
            .expect("record refers to a live slab")
    }

    /// Frees a block; a dedicated slab goes with its record.
    pub fn release(&mut self, record: RecordRef) {
        let slab = self.slab_mut(record);
        slab.release(record.offset);
        if slab.is_dedicated() && slab.is_empty() {
            self.slabs[record.slab as usize] = None;
        }
    }

    /// Whether `record_bytes` fits the block in place (shrinking it when worthwhile). A record in
    /// a dedicated slab that now fits a regular slab does not stay: it moves so the slab can go.
    pub fn fit_in_place(&mut self, record: RecordRef, record_bytes: usize) -> bool {
        let regular_size = self.slab_size_bytes;
        let slab = self.slab_mut(record);
        if slab.is_dedicated() && block_bytes(record_bytes) <= regular_size {
            return false;
        }
        slab.fit_in_place(record.offset, record_bytes)
    }

    /// The block of a record.
    pub fn block(&self, record: RecordRef) -> &[u8] {
        self.slab(record).block(record.offset)
    }

    /// The block of a record, writable.
    pub fn block_mut(&mut self, record: RecordRef) -> &mut [u8] {
        self.slab_mut(record).block_mut(record.offset)
    }

    /// Every allocated block, slab by slab in address order.
    pub fn records(&self) -> impl Iterator<Item = RecordRef> + '_ {
        self.slabs.iter().enumerate().flat_map(|(index, slab)| {
            slab.iter().flat_map(move |slab| {
                slab.blocks().map(move |offset| RecordRef {
                    slab: index as u32,
                    offset,
                })
            })
        })
    }

    /// Usage across the pool.
    pub fn usage(&self) -> SlabUsage {
        let mut usage = SlabUsage::default();
        for slab in self.slabs.iter().flatten() {
            usage.slabs += 1;
            usage.dedicated_slabs += usize::from(slab.is_dedicated());
            usage.bytes_free += slab.free_bytes();
            usage.bytes_used += slab.size_bytes() - slab.free_bytes();
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_first_fit_and_release_coalesces() {
        let mut slab = Slab::new(1024, false);
        let a = slab.allocate(100).unwrap();
        let b = slab.allocate(60).unwrap();
        let c = slab.allocate(200).unwrap();
        assert_eq!((a, b, c), (0, 104, 168));
        assert_eq!(slab.capacity_at(b), 64);
        assert_eq!(slab.free_bytes(), 1024 - 104 - 64 - 200);
        slab.release(b);
        assert_eq!(slab.allocate(50), Some(104), "freed space is reused");
        slab.release(104);
        slab.release(a);
        assert_eq!(
            slab.free_extents(),
            2,
            "a and b merged; the tail is separate"
        );
        slab.release(c);
        assert_eq!(slab.free_extents(), 1);
        assert!(slab.is_empty());
        assert!(slab.allocate(1025).is_none());
        assert_eq!(slab.allocate(1024), Some(0));
    }

    #[test]
    fn in_place_updates_shrink_only_when_worthwhile() {
        let mut slab = Slab::new(1024, false);
        let a = slab.allocate(400).unwrap();
        assert!(slab.fit_in_place(a, 390));
        assert_eq!(
            slab.capacity_at(a),
            400,
            "10 bytes are not worth a free extent"
        );
        assert!(slab.fit_in_place(a, 100));
        assert_eq!(slab.capacity_at(a), 104);
        assert_eq!(slab.free_bytes(), 1024 - 104);
        assert_eq!(
            slab.free_extents(),
            1,
            "the freed tail merged with the rest"
        );
        assert!(!slab.fit_in_place(a, 105));
    }

    #[test]
    fn compaction_moves_blocks_and_reports_them() {
        let mut slab = Slab::new(256, false);
        let offsets: Vec<u32> = (0..4).map(|_| slab.allocate(64).unwrap()).collect();
        for (index, &offset) in offsets.iter().enumerate() {
            slab.block_mut(offset)[4] = index as u8;
        }
        slab.release(offsets[0]);
        slab.release(offsets[2]);
        assert!(
            slab.allocate(128).is_none(),
            "128 free bytes but no 128-byte extent"
        );
        let mut moves = Vec::new();
        slab.compact(|old, new, block| moves.push((old, new, block[4])));
        assert_eq!(moves, [(64, 0, 1), (192, 64, 3)]);
        assert_eq!(slab.blocks().collect::<Vec<_>>(), [0, 64]);
        assert_eq!(slab.allocate(128), Some(128));
    }

    #[test]
    fn the_pool_adds_slabs_compacts_and_dedicates() {
        let mut pool = SlabPool::new(256);
        let refs: Vec<RecordRef> = (0..4)
            .map(|_| pool.allocate(64, |_, _, _| panic!("no move")))
            .collect();
        assert_eq!(pool.usage().slabs, 1);
        pool.release(refs[1]);
        pool.release(refs[3]);
        let mut moved = 0;
        let big = pool.allocate(128, |_, _, _| moved += 1);
        assert_eq!(moved, 1, "the block at 128 slid to 64");
        assert_eq!(big.slab, 0);
        let other = pool.allocate(64, |_, _, _| {});
        assert_eq!(other.slab, 1, "a full pool grows by one slab");
        let huge = pool.allocate(1000, |_, _, _| {});
        assert!(pool.usage().dedicated_slabs == 1 && pool.block(huge).len() == 1000);
        pool.release(huge);
        assert_eq!(
            pool.usage(),
            SlabUsage {
                slabs: 2,
                dedicated_slabs: 0,
                bytes_used: 256 + 64,
                bytes_free: 192
            }
        );
        assert_eq!(pool.records().count(), 4);
    }
}
