//! The per-topic field table and the one-pass JSON field scanner.
//!
//! A topic's subscriptions register their filters in one [`FieldTable`]: the union of the field
//! paths they read, each path in one numbered slot, organised as a trie of path segments. Per
//! message, [`FieldTable::scan`] walks the payload once, descending only into members the trie
//! names and jumping over everything else a 16-byte block at a time (SSE2 on x86_64, 8-byte bit
//! tricks elsewhere, `memchr` for long strings): strings, nested objects and arrays are skipped,
//! not parsed. It stops as soon as every slot is filled. Values stay borrowed slices of the
//! payload; numbers are parsed only when a filter reads them. Nothing is allocated per message
//! once the caller's [`ScanScratch`] has grown to the table's size; an escaped string value is
//! unescaped into the scratch's reusable buffer.
//!
//! This module must never evaluate filters and never panic on any payload: malformed input is
//! reported as [`Malformed`]. What is validated: the structure along the walked path (objects,
//! member names, `:`/`,`, literals, number grammar, string escapes of wanted values, trailing
//! bytes when the scan runs to the end). Skipped containers are checked only for terminated
//! strings and balanced brackets of their own kind, and bytes after an early stop are not read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use memchr::memchr2;

use super::parser::{FieldPath, Segment};
use super::value::{parse_json_number, Value};
use super::{eval, Filter, MessageContext};

/// Slot number meaning "no slot" in a trie node.
const NO_SLOT: u32 = u32::MAX;
/// Trie node 0 is the payload's top-level object.
const ROOT: usize = 0;

/// Source of table ids, so a `BoundFilter` is never evaluated against another table's scan.
static NEXT_TABLE_ID: AtomicU64 = AtomicU64::new(1);

/// The payload is not well-formed JSON at `offset` (as far as the scan looked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed JSON payload at byte {offset}")]
pub struct Malformed {
    /// Byte offset where the scanner gave up.
    pub offset: usize,
}

/// A value found in a payload, before coercion: borrowed, numbers not yet parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawValue<'a> {
    /// The path is not in the payload.
    Missing,
    /// JSON `null`.
    Null,
    /// JSON `true` / `false`.
    Bool(bool),
    /// A JSON number's text (grammar already checked).
    Number(&'a [u8]),
    /// A string's content with no escapes left to process.
    Str(&'a [u8]),
    /// A string's raw content that still contains JSON escapes (array elements only).
    EscapedStr(&'a [u8]),
    /// A whole array, brackets included.
    Array(&'a [u8]),
    /// An object (its content is not needed by any filter as a value).
    Object,
}

impl<'a> RawValue<'a> {
    /// As a scalar value: arrays give their first element, objects and empty strings are NULL.
    #[inline]
    pub fn to_value(self) -> Value<'a> {
        match self {
            RawValue::Missing | RawValue::Null | RawValue::Object => Value::Null,
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Number(text) => parse_json_number(text).into_value(),
            RawValue::Str(bytes) => Value::borrowed(bytes),
            RawValue::EscapedStr(raw) => {
                let mut out = Vec::with_capacity(raw.len());
                match unescape_into(raw, &mut out) {
                    Ok(()) => Value::owned(out),
                    Err(BadEscape) => Value::Null,
                }
            }
            RawValue::Array(raw) => match ArrayElements::new(raw).next() {
                Some(first) => first.element_value(),
                None => Value::Null,
            },
        }
    }

    /// As an array element: nested arrays and objects are NULL.
    pub fn element_value(self) -> Value<'a> {
        match self {
            RawValue::Array(_) | RawValue::Object => Value::Null,
            other => other.to_value(),
        }
    }

    /// Is this NULL for `IS NULL`: missing, `null`, `""` or `[]`?
    pub fn is_null(self) -> bool {
        match self {
            RawValue::Missing | RawValue::Null => true,
            RawValue::Str(s) | RawValue::EscapedStr(s) => s.is_empty(),
            RawValue::Array(raw) => ArrayElements::new(raw).next().is_none(),
            RawValue::Bool(_) | RawValue::Number(_) | RawValue::Object => false,
        }
    }
}

/// Iterates the elements of a raw JSON array slice. Defensive: stops at the first byte it cannot
/// make sense of rather than failing, because the scanner only bracket-checked skipped arrays.
pub struct ArrayElements<'a> {
    bytes: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> ArrayElements<'a> {
    /// Elements of `raw`, which starts with `[`.
    pub fn new(raw: &'a [u8]) -> ArrayElements<'a> {
        let pos = skip_whitespace(raw, 1);
        let done = raw.first() != Some(&b'[') || raw.get(pos) == Some(&b']');
        ArrayElements {
            bytes: raw,
            pos,
            done,
        }
    }
}

impl<'a> Iterator for ArrayElements<'a> {
    type Item = RawValue<'a>;

    fn next(&mut self) -> Option<RawValue<'a>> {
        if self.done {
            return None;
        }
        let Some((value, end)) = read_value(self.bytes, self.pos) else {
            self.done = true;
            return None;
        };
        let after = skip_whitespace(self.bytes, end);
        match self.bytes.get(after) {
            Some(b',') => self.pos = skip_whitespace(self.bytes, after + 1),
            _ => self.done = true,
        }
        Some(value)
    }
}

/// Where a scanned slot's value lives; offsets are into the payload or the unescape buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    Null,
    True,
    False,
    Number { start: u32, end: u32 },
    Str { start: u32, end: u32 },
    Unescaped { start: u32, end: u32 },
    Array { start: u32, end: u32 },
    Object,
}

/// Caller-owned scratch for scans: one per thread, reused for every message so scanning does not
/// allocate once it has grown to the largest table it served.
#[derive(Debug, Default)]
pub struct ScanScratch {
    slots: Vec<Slot>,
    unescaped: Vec<u8>,
    key: Vec<u8>,
}

impl ScanScratch {
    /// Empty scratch; grows on first use.
    pub fn new() -> ScanScratch {
        ScanScratch::default()
    }
}

/// The result of one scan: the value of every slot of the table, borrowed from the payload and
/// the scratch. Evaluate any number of [`BoundFilter`]s of the same table against it.
#[derive(Debug, Clone, Copy)]
pub struct ScannedFields<'a> {
    table_id: u64,
    payload: &'a [u8],
    unescaped: &'a [u8],
    slots: &'a [Slot],
}

impl<'a> ScannedFields<'a> {
    /// The value in `slot` (Missing for slots this scan did not fill).
    #[inline]
    pub fn get(&self, slot: u32) -> RawValue<'a> {
        let range = |start: u32, end: u32| start as usize..end as usize;
        match self
            .slots
            .get(slot as usize)
            .copied()
            .unwrap_or(Slot::Missing)
        {
            Slot::Missing => RawValue::Missing,
            Slot::Null => RawValue::Null,
            Slot::True => RawValue::Bool(true),
            Slot::False => RawValue::Bool(false),
            Slot::Number { start, end } => RawValue::Number(&self.payload[range(start, end)]),
            Slot::Str { start, end } => RawValue::Str(&self.payload[range(start, end)]),
            Slot::Unescaped { start, end } => RawValue::Str(&self.unescaped[range(start, end)]),
            Slot::Array { start, end } => RawValue::Array(&self.payload[range(start, end)]),
            Slot::Object => RawValue::Object,
        }
    }

    /// Length of the scanned payload in bytes (for `MESSAGE_SIZE()`).
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// Id of the table that produced this scan.
    pub fn table_id(&self) -> u64 {
        self.table_id
    }
}

/// A filter registered in a [`FieldTable`]: the filter plus the table slot of each path it reads.
/// Deliberately not `Clone`: each registration is unregistered exactly once.
#[derive(Debug)]
pub struct BoundFilter {
    filter: Filter,
    table_id: u64,
    slots: Box<[u32]>,
}

impl BoundFilter {
    /// Does the scanned message match? Only TRUE matches; NULL and FALSE do not.
    pub fn eval(&self, fields: &ScannedFields<'_>, ctx: &MessageContext<'_>) -> bool {
        assert_eq!(
            fields.table_id, self.table_id,
            "BoundFilter evaluated against another table's scan"
        );
        eval::evaluate(self.filter.program(), &self.slots, fields, ctx)
    }

    /// The compiled filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Table slot of each path of the filter's program, in program order.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }
}

/// A member name in the trie with a cheap pre-check: most names in a message are not wanted, and
/// comparing a packed (length, first byte, last byte) tag rejects them without a `memcmp` call.
#[derive(Debug, Clone)]
struct KeyEntry {
    tag: u32,
    name: Box<[u8]>,
    node: u32,
}

/// Length (saturated to 16 bits), first and last byte of a name.
#[inline(always)]
fn key_tag(name: &[u8]) -> u32 {
    match (name.first(), name.last()) {
        (Some(&first), Some(&last)) => {
            (name.len().min(0xffff) as u32) << 16 | u32::from(first) << 8 | u32::from(last)
        }
        _ => 0,
    }
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// Member names leading on from here, sorted by name for binary search.
    keys: Vec<KeyEntry>,
    /// Array subscripts leading on from here, sorted by index.
    indexes: Vec<(u32, u32)>,
    /// Slot filled by the value at this node, or NO_SLOT.
    slot: u32,
}

impl TrieNode {
    fn new() -> TrieNode {
        TrieNode {
            keys: Vec::new(),
            indexes: Vec::new(),
            slot: NO_SLOT,
        }
    }

    #[inline]
    fn find_key(&self, name: &[u8]) -> Option<u32> {
        // Most nodes have a handful of children: a linear scan on the tag beats a search.
        if self.keys.len() <= 8 {
            let tag = key_tag(name);
            return self
                .keys
                .iter()
                .find(|key| key.tag == tag && *key.name == *name)
                .map(|key| key.node);
        }
        self.keys
            .binary_search_by(|key| key.name.as_ref().cmp(name))
            .ok()
            .map(|i| self.keys[i].node)
    }

    fn find_index(&self, index: u32) -> Option<u32> {
        self.indexes
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, node)| *node)
    }
}

#[derive(Debug, Clone)]
struct SlotEntry {
    path: Option<FieldPath>,
    references: u32,
}

/// The shared field table of one topic's subscriptions. Slots are stable: registering or
/// unregistering filters never moves another path's slot; a slot is reused only after every filter
/// reading its path has been unregistered.
#[derive(Debug)]
pub struct FieldTable {
    id: u64,
    slots: Vec<SlotEntry>,
    free_slots: Vec<u32>,
    by_path: HashMap<FieldPath, u32>,
    trie: Vec<TrieNode>,
    live_slots: u32,
}

impl Default for FieldTable {
    fn default() -> FieldTable {
        FieldTable::new()
    }
}

impl FieldTable {
    /// An empty table.
    pub fn new() -> FieldTable {
        FieldTable {
            id: NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_path: HashMap::new(),
            trie: vec![TrieNode::new()],
            live_slots: 0,
        }
    }

    /// Unique id of this table.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of distinct paths currently registered.
    pub fn path_count(&self) -> usize {
        self.live_slots as usize
    }

    /// Register a filter: its paths join the table (reference-counted) and it gets their slots.
    pub fn register(&mut self, filter: &Filter) -> BoundFilter {
        let slots = self.register_paths(filter.program().paths());
        BoundFilter {
            filter: filter.clone(),
            table_id: self.id,
            slots,
        }
    }

    /// Unregister a filter returned by [`FieldTable::register`] on this table. Call exactly once
    /// per `register`: paths no other filter reads leave the table and their slots become free.
    pub fn unregister(&mut self, bound: &BoundFilter) {
        assert_eq!(
            bound.table_id, self.id,
            "BoundFilter unregistered from another table"
        );
        let mut changed = false;
        for &slot in bound.slots.iter() {
            let entry = &mut self.slots[slot as usize];
            assert!(
                entry.references > 0,
                "slot {slot} unregistered more often than registered"
            );
            entry.references -= 1;
            if entry.references == 0 {
                let path = entry.path.take().expect("a referenced slot has a path");
                self.by_path.remove(&path);
                self.free_slots.push(slot);
                self.live_slots -= 1;
                changed = true;
            }
        }
        if changed {
            self.rebuild_trie();
        }
    }

    /// Add references to `paths`, returning their slots in order. For crate code that reads
    /// fields without a filter (SOW keys, queries); filters go through [`FieldTable::register`].
    pub(crate) fn register_paths(&mut self, paths: &[FieldPath]) -> Box<[u32]> {
        let mut changed = false;
        let slots = paths
            .iter()
            .map(|path| {
                if let Some(&slot) = self.by_path.get(path) {
                    self.slots[slot as usize].references += 1;
                    return slot;
                }
                changed = true;
                let entry = SlotEntry {
                    path: Some(path.clone()),
                    references: 1,
                };
                let slot = match self.free_slots.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = entry;
                        slot
                    }
                    None => {
                        self.slots.push(entry);
                        u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 slots")
                    }
                };
                self.by_path.insert(path.clone(), slot);
                self.live_slots += 1;
                slot
            })
            .collect();
        if changed {
            self.rebuild_trie();
        }
        slots
    }

    /// Rebuild the trie from the live slots (registration is rare; scanning is not).
    fn rebuild_trie(&mut self) {
        let mut trie = vec![TrieNode::new()];
        for (slot, entry) in self.slots.iter().enumerate() {
            let Some(path) = &entry.path else { continue };
            let mut node = ROOT;
            for segment in path.segments() {
                let existing = match segment {
                    Segment::Key(name) => trie[node]
                        .keys
                        .iter()
                        .find(|key| key.name == *name)
                        .map(|key| key.node),
                    Segment::Index(index) => trie[node]
                        .indexes
                        .iter()
                        .find(|(i, _)| i == index)
                        .map(|c| c.1),
                };
                node = match existing {
                    Some(child) => child as usize,
                    None => {
                        let child = trie.len();
                        trie.push(TrieNode::new());
                        let child_id = u32::try_from(child).expect("fewer than 2^32 trie nodes");
                        match segment {
                            Segment::Key(name) => {
                                trie[node].keys.push(KeyEntry {
                                    tag: key_tag(name),
                                    name: name.clone(),
                                    node: child_id,
                                });
                            }
                            Segment::Index(index) => trie[node].indexes.push((*index, child_id)),
                        }
                        child
                    }
                };
            }
            assert_eq!(trie[node].slot, NO_SLOT, "two slots for one path");
            trie[node].slot = u32::try_from(slot).expect("fewer than 2^32 slots");
        }
        for node in &mut trie {
            node.keys.sort_by(|a, b| a.name.cmp(&b.name));
            node.indexes.sort_by_key(|(index, _)| *index);
        }
        self.trie = trie;
    }

    /// Scan `payload` once for every registered path. With no paths registered nothing is read.
    pub fn scan<'a>(
        &self,
        payload: &'a [u8],
        scratch: &'a mut ScanScratch,
    ) -> Result<ScannedFields<'a>, Malformed> {
        scratch.slots.clear();
        scratch.slots.resize(self.slots.len(), Slot::Missing);
        scratch.unescaped.clear();
        if u32::try_from(payload.len()).is_err() {
            // Offsets are u32 to keep slots small; a 4 GiB message is far beyond any frame limit.
            return Err(Malformed {
                offset: u32::MAX as usize,
            });
        }
        if self.live_slots > 0 {
            let mut scanner = Scanner {
                bytes: payload,
                pos: 0,
                trie: &self.trie,
                slots: &mut scratch.slots,
                unescaped: &mut scratch.unescaped,
                key: &mut scratch.key,
                found: 0,
                wanted: self.live_slots,
            };
            match scanner.document() {
                Ok(()) | Err(Stop::AllFound) => {}
                Err(Stop::Malformed(offset)) => return Err(Malformed { offset }),
            }
        }
        Ok(ScannedFields {
            table_id: self.id,
            payload,
            unescaped: &scratch.unescaped,
            slots: &scratch.slots,
        })
    }
}

/// Why a walk ended early.
enum Stop {
    /// Every wanted slot is filled: the rest of the payload is not needed.
    AllFound,
    /// The payload is not JSON at this offset.
    Malformed(usize),
}

struct Scanner<'p, 's> {
    bytes: &'p [u8],
    pos: usize,
    trie: &'s [TrieNode],
    slots: &'s mut [Slot],
    unescaped: &'s mut Vec<u8>,
    key: &'s mut Vec<u8>,
    found: u32,
    wanted: u32,
}

impl Scanner<'_, '_> {
    fn malformed<T>(&self) -> Result<T, Stop> {
        Err(Stop::Malformed(self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        self.pos = skip_whitespace(self.bytes, self.pos);
    }

    fn document(&mut self) -> Result<(), Stop> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.walk_object(ROOT)?,
            // A top-level array or scalar is valid JSON with no members: every path is missing.
            Some(_) => self.skip_value()?,
            None => return self.malformed(),
        }
        self.skip_whitespace();
        if self.pos != self.bytes.len() {
            return self.malformed();
        }
        Ok(())
    }

    /// Walk an object (at `{`) whose members may lead to wanted paths below trie node `node`.
    fn walk_object(&mut self, node: usize) -> Result<(), Stop> {
        // The cursor lives in a local while members are skipped; `self.pos` is only synchronised
        // around `visit`, which descends into a wanted member.
        let bytes = self.bytes;
        let trie_node = &self.trie[node];
        let mut pos = skip_whitespace(bytes, self.pos + 1);
        if bytes.get(pos) == Some(&b'}') {
            self.pos = pos + 1;
            return Ok(());
        }
        loop {
            if bytes.get(pos) != Some(&b'"') {
                return Err(Stop::Malformed(pos));
            }
            let Some((end, escaped)) = string_end(bytes, pos) else {
                return Err(Stop::Malformed(pos));
            };
            let name = &bytes[pos + 1..end - 1];
            let child = if escaped {
                self.key.clear();
                if unescape_into(name, self.key).is_err() {
                    return Err(Stop::Malformed(pos));
                }
                trie_node.find_key(self.key)
            } else {
                trie_node.find_key(name)
            };
            pos = skip_whitespace(bytes, end);
            if bytes.get(pos) != Some(&b':') {
                return Err(Stop::Malformed(pos));
            }
            pos = skip_whitespace(bytes, pos + 1);
            match child {
                Some(child) => {
                    self.pos = pos;
                    self.visit(child as usize)?;
                    pos = self.pos;
                }
                None => {
                    // Inline the two most common skips; containers and literals go the long way.
                    pos = match bytes.get(pos) {
                        Some(b'"') => string_end(bytes, pos).map(|(end, _)| end),
                        Some(b'0'..=b'9' | b'-') => number_end(bytes, pos),
                        _ => value_end(bytes, pos),
                    }
                    .ok_or(Stop::Malformed(pos))?;
                }
            }
            pos = skip_whitespace(bytes, pos);
            match bytes.get(pos) {
                Some(b',') => pos = skip_whitespace(bytes, pos + 1),
                Some(b'}') => {
                    self.pos = pos + 1;
                    return Ok(());
                }
                _ => return Err(Stop::Malformed(pos)),
            }
        }
    }

    /// Walk an array (at `[`) whose elements may lead to wanted paths below trie node `node`.
    fn walk_array(&mut self, node: usize) -> Result<(), Stop> {
        let last_wanted = self.trie[node]
            .indexes
            .last()
            .map_or(0, |(index, _)| *index);
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        let mut index: u32 = 0;
        loop {
            match self.trie[node].find_index(index) {
                Some(child) => self.visit(child as usize)?,
                None => self.skip_value()?,
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.malformed(),
            }
            index = index.saturating_add(1);
            if index > last_wanted {
                // No wanted element remains: jump to the closing bracket.
                let Some(end) = container_rest_end(self.bytes, self.pos, b'[', b']', 1) else {
                    return self.malformed();
                };
                self.pos = end;
                return Ok(());
            }
        }
    }

    /// The value at `self.pos` belongs to trie node `node`: descend if paths continue below it,
    /// and fill the node's slot (first occurrence wins).
    fn visit(&mut self, node: usize) -> Result<(), Stop> {
        let start = self.pos;
        let trie = self.trie;
        let trie_node = &trie[node];
        let slot_value = match self.peek() {
            Some(b'{') => {
                if trie_node.keys.is_empty() {
                    self.skip_value()?;
                } else {
                    self.walk_object(node)?;
                }
                Slot::Object
            }
            Some(b'[') => {
                if trie_node.indexes.is_empty() {
                    self.skip_value()?;
                } else {
                    self.walk_array(node)?;
                }
                Slot::Array {
                    start: start as u32,
                    end: self.pos as u32,
                }
            }
            Some(b'"') => {
                let Some((end, escaped)) = string_end(self.bytes, start) else {
                    return self.malformed();
                };
                self.pos = end;
                if !escaped {
                    Slot::Str {
                        start: start as u32 + 1,
                        end: end as u32 - 1,
                    }
                } else if trie_node.slot == NO_SLOT {
                    Slot::Missing
                } else {
                    let from = self.unescaped.len();
                    if unescape_into(&self.bytes[start + 1..end - 1], self.unescaped).is_err() {
                        return Err(Stop::Malformed(start));
                    }
                    Slot::Unescaped {
                        start: from as u32,
                        end: self.unescaped.len() as u32,
                    }
                }
            }
            Some(_) => {
                let Some((value, end)) = read_value(self.bytes, start) else {
                    return self.malformed();
                };
                self.pos = end;
                match value {
                    RawValue::Null => Slot::Null,
                    RawValue::Bool(true) => Slot::True,
                    RawValue::Bool(false) => Slot::False,
                    RawValue::Number(_) => Slot::Number {
                        start: start as u32,
                        end: end as u32,
                    },
                    _ => return Err(Stop::Malformed(start)),
                }
            }
            None => return self.malformed(),
        };
        let slot = trie_node.slot;
        if slot != NO_SLOT && self.slots[slot as usize] == Slot::Missing {
            self.slots[slot as usize] = slot_value;
            self.found += 1;
            if self.found == self.wanted {
                return Err(Stop::AllFound);
            }
        }
        Ok(())
    }

    fn skip_value(&mut self) -> Result<(), Stop> {
        match value_end(self.bytes, self.pos) {
            Some(end) => {
                self.pos = end;
                Ok(())
            }
            None => self.malformed(),
        }
    }
}

#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// End (one past the closing quote) of the string whose opening quote is at `pos`, and whether it
/// contains escapes.
#[inline]
fn string_end(bytes: &[u8], pos: usize) -> Option<(usize, bool)> {
    let mut i = pos + 1;
    let mut escaped = false;
    loop {
        let at = find2(bytes, i, b'"', b'\\')?;
        if bytes[at] == b'"' {
            return Some((at + 1, escaped));
        }
        escaped = true;
        // Skip the backslash and the byte it escapes (\uXXXX's hex digits need no skipping).
        i = at + 2;
    }
}

/// End of a container whose opening bracket was already consumed `depth` times, scanning from
/// `pos`. Only `open`/`close` and strings are looked at: the other bracket kind nests freely.
///
/// A block of bytes at a time without a branch per string: the block's quote mask, prefix-XORed,
/// says which bytes are inside a string, and only brackets outside strings are looked at. A block
/// holding a backslash (or following one) goes byte by byte, since escapes break the quote-parity
/// trick; they are rare in skipped content.
pub(crate) fn container_rest_end(
    bytes: &[u8],
    mut pos: usize,
    open: u8,
    close: u8,
    depth: usize,
) -> Option<usize> {
    let mut state = SkipState {
        depth,
        in_string: false,
        escape_pending: false,
    };
    while pos + BLOCK <= bytes.len() {
        let block = Block::load(bytes, pos);
        if block.mask(b'\\') != 0 || state.escape_pending {
            for (offset, &byte) in bytes[pos..pos + BLOCK].iter().enumerate() {
                if state.closes_at(byte, open, close) {
                    return Some(pos + offset + 1);
                }
            }
            pos += BLOCK;
            continue;
        }
        // Prefix XOR of the quote mask: bit i set when byte i is inside a string.
        let quotes = block.mask(b'"');
        let mut inside = quotes ^ (quotes << 1);
        inside ^= inside << 2;
        inside ^= inside << 4;
        inside ^= inside << 8;
        if state.in_string {
            inside = !inside;
        }
        inside &= BLOCK_BITS;
        state.in_string = inside >> (BLOCK - 1) != 0;
        let opens = block.mask(open) & !inside;
        let closes = block.mask(close) & !inside;
        // Most blocks hold no bracket outside a string; the rest hold one or two, so walking their
        // bits beats popcount (which the x86_64 baseline lacks and emulates in ~12 instructions).
        let mut brackets = opens | closes;
        while brackets != 0 {
            let bit = brackets.trailing_zeros();
            brackets &= brackets - 1;
            if opens & (1 << bit) != 0 {
                state.depth += 1;
            } else {
                state.depth -= 1;
                if state.depth == 0 {
                    return Some(pos + bit as usize + 1);
                }
            }
        }
        pos += BLOCK;
    }
    // Fewer than BLOCK bytes left: finish byte by byte.
    (pos..bytes.len())
        .find(|&at| state.closes_at(bytes[at], open, close))
        .map(|at| at + 1)
}

/// Byte-at-a-time state of a container skip, for blocks holding escapes and the tail.
struct SkipState {
    depth: usize,
    in_string: bool,
    escape_pending: bool,
}

impl SkipState {
    /// Feed one byte; true when it closes the container.
    #[inline]
    fn closes_at(&mut self, byte: u8, open: u8, close: u8) -> bool {
        if self.escape_pending {
            self.escape_pending = false;
        } else if self.in_string {
            match byte {
                b'\\' => self.escape_pending = true,
                b'"' => self.in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            self.in_string = true;
        } else if byte == open {
            self.depth += 1;
        } else if byte == close {
            self.depth -= 1;
            return self.depth == 0;
        }
        false
    }
}

/// Spans shorter than this are searched a block at a time in registers; the rest with `memchr`,
/// whose vector loop wins on long spans but whose per-call set-up dominated on the short member
/// names and values that make up most of a message (measured: ~50% of scan time).
const SHORT_SPAN_BYTES: usize = 64;

/// First index ≥ `from` holding `a` or `b`.
#[inline]
fn find2(bytes: &[u8], from: usize, a: u8, b: u8) -> Option<usize> {
    let short_end = bytes.len().min(from.saturating_add(SHORT_SPAN_BYTES));
    let mut i = from;
    while i + BLOCK <= short_end {
        let block = Block::load(bytes, i);
        let mask = block.mask(a) | block.mask(b);
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += BLOCK;
    }
    memchr2(a, b, bytes.get(i..)?).map(|offset| i + offset)
}

/// All bits of a block mask.
const BLOCK_BITS: u32 = ((1u64 << BLOCK) - 1) as u32;

/// 16 bytes compared at once with SSE2, which is part of the x86_64 baseline. Measured ~2x faster
/// than the portable 8-byte blocks on the container skip, the scanner's hottest loop.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };

    /// Bytes per block.
    pub(crate) const BLOCK: usize = 16;

    /// One block of payload bytes in a vector register.
    pub(crate) struct Block(__m128i);

    impl Block {
        /// The block at `at`; panics unless `at + BLOCK <= bytes.len()` (callers check first).
        #[inline(always)]
        pub(crate) fn load(bytes: &[u8], at: usize) -> Block {
            let chunk = &bytes[at..at + BLOCK];
            // SAFETY: `chunk` is exactly 16 readable bytes (the slice above is bounds-checked),
            // `loadu` has no alignment requirement, and SSE2 exists on every x86_64 CPU.
            Block(unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) })
        }

        /// Bit i set when byte i of the block equals `byte`.
        #[inline(always)]
        pub(crate) fn mask(&self, byte: u8) -> u32 {
            // SAFETY: register-only SSE2 instructions, present on every x86_64 CPU.
            unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(self.0, _mm_set1_epi8(byte as i8))) as u32 }
        }
    }
}

/// Portable blocks: 8 bytes in a u64, compared with bit tricks (SWAR). Compiled everywhere so its
/// masks are unit-tested on x86_64 too.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) mod swar {
    /// Bytes per block.
    pub(crate) const BLOCK: usize = 8;
    const LOW_SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const ONES: u64 = 0x0101_0101_0101_0101;

    /// One block of payload bytes in a register.
    pub(crate) struct Block(u64);

    impl Block {
        /// The block at `at`; the caller guarantees `at + BLOCK <= bytes.len()`.
        #[inline(always)]
        pub(crate) fn load(bytes: &[u8], at: usize) -> Block {
            Block(u64::from_le_bytes(
                bytes[at..at + 8].try_into().expect("8 bytes"),
            ))
        }

        /// Bit i set when byte i of the block equals `byte`. Exact for every byte (the skip
        /// counts brackets from these masks): a byte of `x` is zero iff adding 0x7f to its low seven bits
        /// does not carry into bit 7 and bit 7 itself is clear — no borrows cross bytes.
        #[inline(always)]
        pub(crate) fn mask(&self, byte: u8) -> u32 {
            let x = self.0 ^ (ONES * u64::from(byte));
            let zero = !(((x & LOW_SEVEN) + LOW_SEVEN) | x) & !LOW_SEVEN;
            // Move each byte's bit 7 to bit i of the low byte (byte 0 → bit 0) with one multiply.
            ((zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
        }
    }
}

#[cfg(target_arch = "x86_64")]
use sse2::{Block, BLOCK};
#[cfg(not(target_arch = "x86_64"))]
use swar::{Block, BLOCK};

/// End of the JSON number at `pos` if it follows the JSON grammar.
fn number_end(bytes: &[u8], mut pos: usize) -> Option<usize> {
    let digits = |pos: &mut usize| {
        let from = *pos;
        while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
            *pos += 1;
        }
        *pos > from
    };
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match bytes.get(pos)? {
        b'0' => pos += 1,
        b'1'..=b'9' => {
            digits(&mut pos);
        }
        _ => return None,
    }
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        if !digits(&mut pos) {
            return None;
        }
    }
    if matches!(bytes.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(bytes.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        if !digits(&mut pos) {
            return None;
        }
    }
    Some(pos)
}

/// End of any JSON value at `pos` (containers skipped, not parsed).
fn value_end(bytes: &[u8], pos: usize) -> Option<usize> {
    match bytes.get(pos)? {
        b'"' => string_end(bytes, pos).map(|(end, _)| end),
        b'{' => container_rest_end(bytes, pos + 1, b'{', b'}', 1),
        b'[' => container_rest_end(bytes, pos + 1, b'[', b']', 1),
        _ => read_value(bytes, pos).map(|(_, end)| end),
    }
}

/// Read the JSON value at `pos` as a raw value, returning it and its end.
fn read_value(bytes: &[u8], pos: usize) -> Option<(RawValue<'_>, usize)> {
    let rest = bytes.get(pos..)?;
    match rest.first()? {
        b'"' => {
            let (end, escaped) = string_end(bytes, pos)?;
            let content = &bytes[pos + 1..end - 1];
            Some((
                if escaped {
                    RawValue::EscapedStr(content)
                } else {
                    RawValue::Str(content)
                },
                end,
            ))
        }
        b'{' => Some((RawValue::Object, value_end(bytes, pos)?)),
        b'[' => {
            let end = value_end(bytes, pos)?;
            Some((RawValue::Array(&bytes[pos..end]), end))
        }
        b't' if rest.starts_with(b"true") => Some((RawValue::Bool(true), pos + 4)),
        b'f' if rest.starts_with(b"false") => Some((RawValue::Bool(false), pos + 5)),
        b'n' if rest.starts_with(b"null") => Some((RawValue::Null, pos + 4)),
        b'-' | b'0'..=b'9' => {
            let end = number_end(bytes, pos)?;
            Some((RawValue::Number(&bytes[pos..end]), end))
        }
        _ => None,
    }
}

/// A JSON string escape that is not one (`\q`, a short `\u`, a lone surrogate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad escape in a JSON string")]
pub struct BadEscape;

/// Append the unescaped form of a JSON string's content to `out`. `\uXXXX` (with surrogate
/// pairs) becomes UTF-8; a lone surrogate or a bad escape is an error.
pub fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), BadEscape> {
    let mut i = 0;
    while i < raw.len() {
        let Some(offset) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return Ok(());
        };
        out.extend_from_slice(&raw[i..i + offset]);
        i += offset;
        let escape = *raw.get(i + 1).ok_or(BadEscape)?;
        i += 2;
        let byte = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let high = hex4(raw, i)?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err(BadEscape);
                    }
                    let low = hex4(raw, i + 2)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(BadEscape);
                    }
                    i += 6;
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                let character = char::from_u32(code).ok_or(BadEscape)?;
                let mut buffer = [0u8; 4];
                out.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                continue;
            }
            _ => return Err(BadEscape),
        };
        out.push(byte);
    }
    Ok(())
}

fn hex4(raw: &[u8], at: usize) -> Result<u32, BadEscape> {
    let digits = raw.get(at..at + 4).ok_or(BadEscape)?;
    let text = std::str::from_utf8(digits).map_err(|_| BadEscape)?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BadEscape);
    }
    u32::from_str_radix(text, 16).map_err(|_| BadEscape)
}
