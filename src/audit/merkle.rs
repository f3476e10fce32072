//! RFC 9162 §2.1 Merkle tree hashing, proof construction and proof
//! verification, independent of how the tree is stored.
//!
//! The caller persists the tree as *perfect subtree hashes*: coordinate
//! `(level, index)` is the hash of leaves `[index << level, (index + 1) << level)`,
//! level 0 being the leaf hashes. Every node of an RFC 9162 tree is a right
//! fold of a few such perfect subtrees, so this module only ever asks the
//! caller for those coordinates, and lists them up front (`*_coords`) so a
//! storage layer can fetch everything a proof needs in one batched query.

use ring::digest::{Context, SHA256};
use thiserror::Error;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `(level, index)` of a perfect subtree: the hash of leaves
/// `[index << level, (index + 1) << level)`.
pub type Coord = (u8, u64);

/// Why a proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size went backwards: {from} > {to}")]
    SizeDecreased { from: u64, to: u64 },
    #[error("consistency with the empty tree holds trivially and has nothing to verify")]
    EmptyTree,
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength { expected: usize, got: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("perfect subtree hash ({level}, {index}) is not available")]
    MissingNode { level: u8, index: u64 },
    #[error("a compact range of size {size} has {expected} hashes, got {got}")]
    CompactRangeShape {
        size: u64,
        expected: usize,
        got: usize,
    },
    #[error("the tree cannot grow past 2^64 - 1 leaves")]
    TreeFull,
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `SHA-256(0x00 || leaf_bytes)`.
pub fn leaf_hash(leaf_bytes: &[u8]) -> Hash {
    sha256(&[&[0x00], leaf_bytes])
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// `SHA-256("")`, the root of the empty tree.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Largest power of two strictly below `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Whether `[start, end)` is a node of the RFC 9162 tree of some size, i.e.
/// `start` is aligned to the smallest power of two that holds the range.
fn is_tree_node(start: u64, end: u64) -> bool {
    if start >= end {
        return false;
    }
    match (end - start).checked_next_power_of_two() {
        Some(span) => start.is_multiple_of(span),
        // A range wider than 2^63 can only fit in the tree if it starts at 0.
        None => start == 0,
    }
}

/// Decomposes `[start, end)` into the minimal left-to-right list of perfect
/// subtrees (greedy: the biggest aligned subtree that fits at each step).
///
/// For a node of an RFC 9162 tree the levels strictly decrease, and the
/// node's hash is the right fold of the list (the last two are combined
/// first); see [`range_hash`].
pub fn perfect_subtrees(start: u64, end: u64) -> Vec<Coord> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let fits = 63 - (end - pos).leading_zeros();
        let aligned = pos.trailing_zeros();
        let level = fits.min(aligned);
        out.push((level as u8, pos >> level));
        pos += 1u64 << level;
    }
    out
}

fn fold_right(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(
        rest.iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc)),
    )
}

/// Hashes the RFC 9162 tree node `[start, end)` from its perfect subtrees.
///
/// `[start, start)` is the empty tree. Returns `None` if a lookup misses or
/// if the range is not a node of any RFC 9162 tree (then no right fold of
/// perfect subtrees equals its MTH, e.g. `[1, 4)`).
pub fn range_hash(start: u64, end: u64, lookup: impl Fn(u8, u64) -> Option<Hash>) -> Option<Hash> {
    if start == end {
        return Some(empty_root());
    }
    if !is_tree_node(start, end) {
        return None;
    }
    let hashes = perfect_subtrees(start, end)
        .into_iter()
        .map(|(level, index)| lookup(level, index))
        .collect::<Option<Vec<_>>>()?;
    fold_right(&hashes)
}

/// Perfect subtrees whose right fold is the root of the tree of `size`
/// leaves (one per set bit of `size`, largest first).
pub fn root_coords(size: u64) -> Vec<Coord> {
    perfect_subtrees(0, size)
}

/// Root of the tree of `size` leaves; [`empty_root`] for `size == 0`.
pub fn root_hash(size: u64, lookup: impl Fn(u8, u64) -> Option<Hash>) -> Option<Hash> {
    range_hash(0, size, lookup)
}

/// The node ranges whose hashes form PATH(m, D[n]), leaf upward.
///
/// Walks down from the root as the RFC recursion does, so each range pushed
/// is the sibling of the subtree holding the leaf.
fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0u64, size);
    let mut ranges = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            ranges.push((mid, hi));
            hi = mid;
        } else {
            ranges.push((lo, mid));
            lo = mid;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The node ranges whose hashes form PROOF(m, D[n]) (RFC 9162 §2.1.4.1), in
/// proof order.
fn consistency_ranges(from: u64, to: u64) -> Result<Vec<(u64, u64)>, MerkleError> {
    if from > to {
        return Err(MerkleError::SizeDecreased { from, to });
    }
    let mut ranges = Vec::new();
    if from == 0 || from == to {
        return Ok(ranges);
    }
    // `m` is `from` relative to `lo`; `whole` is the SUBPROOF flag `b`, true
    // while the old tree is still a prefix the verifier already has a root for.
    let (mut lo, mut hi, mut m, mut whole) = (0u64, to, from, true);
    loop {
        if m == hi - lo {
            if !whole {
                ranges.push((lo, hi));
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

fn coords_of(ranges: &[(u64, u64)]) -> Vec<Coord> {
    let mut out: Vec<Coord> = Vec::new();
    for &(start, end) in ranges {
        for coord in perfect_subtrees(start, end) {
            if !out.contains(&coord) {
                out.push(coord);
            }
        }
    }
    out
}

fn hashes_of(
    ranges: &[(u64, u64)],
    lookup: impl Fn(u8, u64) -> Option<Hash>,
) -> Result<Vec<Hash>, MerkleError> {
    ranges
        .iter()
        .map(|&(start, end)| {
            let parts = perfect_subtrees(start, end)
                .into_iter()
                .map(|(level, index)| {
                    lookup(level, index).ok_or(MerkleError::MissingNode { level, index })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Ranges are never empty here, so a missing fold means no lookup
            // happened; report the range's first leaf as the missing node.
            fold_right(&parts).ok_or(MerkleError::MissingNode {
                level: 0,
                index: start,
            })
        })
        .collect()
}

/// Every perfect subtree needed for the inclusion proof of `leaf_index` in
/// the tree of `tree_size` leaves, without duplicates: O(log n) coordinates.
pub fn inclusion_proof_coords(leaf_index: u64, tree_size: u64) -> Result<Vec<Coord>, MerkleError> {
    Ok(coords_of(&inclusion_ranges(leaf_index, tree_size)?))
}

/// RFC 9162 §2.1.3.1 PATH(leaf_index, D[tree_size]), ordered from the leaf
/// upward.
pub fn inclusion_proof(
    leaf_index: u64,
    tree_size: u64,
    lookup: impl Fn(u8, u64) -> Option<Hash>,
) -> Result<Vec<Hash>, MerkleError> {
    hashes_of(&inclusion_ranges(leaf_index, tree_size)?, lookup)
}

/// Every perfect subtree needed for the consistency proof from `from` to
/// `to` leaves, without duplicates. Empty if `from == 0` or `from == to`.
pub fn consistency_proof_coords(from: u64, to: u64) -> Result<Vec<Coord>, MerkleError> {
    Ok(coords_of(&consistency_ranges(from, to)?))
}

/// RFC 9162 §2.1.4.1 PROOF(from, D[to]). Empty if `from == 0` or
/// `from == to`.
pub fn consistency_proof(
    from: u64,
    to: u64,
    lookup: impl Fn(u8, u64) -> Option<Hash>,
) -> Result<Vec<Hash>, MerkleError> {
    hashes_of(&consistency_ranges(from, to)?, lookup)
}

/// RFC 9162 §2.1.3.2 inclusion proof verification.
pub fn verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let expected = inclusion_ranges(leaf_index, tree_size)?.len();
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fnode, mut snode) = (leaf_index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        // The length check above makes this unreachable; it stays because the
        // RFC algorithm relies on it to reject over-long proofs.
        if snode == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 || r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2 consistency proof verification.
///
/// `from == 0` is rejected with [`MerkleError::EmptyTree`] (as in
/// transparency-dev/merkle and its test vectors): every tree extends the
/// empty one, so a caller holding a size-0 checkpoint has nothing to check
/// and should not call this. `from == to` needs an empty proof and equal
/// roots.
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if from > to {
        return Err(MerkleError::SizeDecreased { from, to });
    }
    if from == 0 {
        return Err(MerkleError::EmptyTree);
    }
    let expected = consistency_ranges(from, to)?.len();
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if from == to {
        return if from_root == to_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    // When `from` is a power of two the old root is itself a proof node the
    // RFC omits from the proof; the algorithm treats it as prepended.
    let (seed, rest) = if from.is_power_of_two() {
        (from_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => {
                return Err(MerkleError::WrongProofLength { expected, got: 0 });
            }
        }
    };
    let (mut fnode, mut snode) = (from - 1, to - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if snode == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 || fr != *from_root || sr != *to_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The right frontier of a tree: the hashes of [`root_coords`]`(size)`, which
/// is all an appender needs to extend the tree and compute its root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a stored tree; `hashes` are those of
    /// [`root_coords`]`(size)`, in that order.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::CompactRangeShape {
                size,
                expected,
                got: hashes.len(),
            });
        }
        Ok(Self { size, hashes })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, in [`root_coords`] order.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Root of the tree of [`Self::size`] leaves.
    pub fn root(&self) -> Hash {
        fold_right(&self.hashes).unwrap_or_else(empty_root)
    }

    /// Appends one leaf and returns every perfect subtree that now exists and
    /// did not before: the leaf at level 0, then each completed parent.
    pub fn append(&mut self, leaf_hash: Hash) -> Result<Vec<(Coord, Hash)>, MerkleError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(MerkleError::TreeFull)?;
        // Each trailing one bit of the old size is a frontier subtree that the
        // new leaf completes into a parent, smallest first.
        let merges = index.trailing_ones() as usize;
        let keep = self
            .hashes
            .len()
            .checked_sub(merges)
            .ok_or(MerkleError::CompactRangeShape {
                size: index,
                expected: index.count_ones() as usize,
                got: self.hashes.len(),
            })?;
        let lefts = self.hashes.split_off(keep);
        let mut created = Vec::with_capacity(merges + 1);
        created.push(((0u8, index), leaf_hash));
        let (mut hash, mut level, mut pos) = (leaf_hash, 0u8, index);
        for left in lefts.iter().rev() {
            hash = node_hash(left, &hash);
            level += 1;
            pos >>= 1;
            created.push(((level, pos), hash));
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    // Reference implementation written straight from the recursive
    // definitions of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, over leaf hashes.

    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn ref_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = k_of(n);
                node_hash(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
            }
        }
    }

    fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = k_of(n);
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![ref_mth(d)] };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = ref_subproof(m, &d[..k], b);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &d[k..], false);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    fn ref_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        if m == 0 {
            return vec![];
        }
        ref_subproof(m, d, true)
    }

    const N: u64 = 70;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The node store an appender would have written for `n` leaves.
    fn store(n: u64) -> HashMap<Coord, Hash> {
        let mut cr = CompactRange::new();
        let mut map = HashMap::new();
        for leaf in leaves(n) {
            for (coord, hash) in cr.append(leaf).unwrap() {
                assert!(
                    map.insert(coord, hash).is_none(),
                    "node {coord:?} written twice"
                );
            }
        }
        map
    }

    fn lookup(map: &HashMap<Coord, Hash>) -> impl Fn(u8, u64) -> Option<Hash> + '_ {
        |level, index| map.get(&(level, index)).copied()
    }

    #[test]
    fn hash_primitives() {
        // Known SHA-256 values: the empty string and RFC 6962 leaf of "".
        assert_eq!(
            STANDARD.encode(empty_root()),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            STANDARD.encode(leaf_hash(b"")),
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
        );
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut cat = vec![1u8];
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        assert_eq!(node_hash(&a, &b), sha256(&[&cat]));
    }

    /// A range wider than 2^63 has no next power of two in a u64: it is a
    /// node only when it starts at 0 (found by cargo-mutants: no test
    /// reached that branch).
    #[test]
    fn a_range_wider_than_half_the_space_is_a_node_only_from_zero() {
        assert!(is_tree_node(0, u64::MAX));
        assert!(!is_tree_node(1, u64::MAX));
        assert!(!is_tree_node(u64::MAX, u64::MAX));
    }

    #[test]
    fn store_holds_every_perfect_subtree() {
        let d = leaves(N);
        let map = store(N);
        for level in 0..8u8 {
            let width = 1u64 << level;
            for index in 0..N / width {
                let start = (index * width) as usize;
                let want = ref_mth(&d[start..start + width as usize]);
                assert_eq!(map.get(&(level, index)), Some(&want), "({level},{index})");
            }
        }
        let perfect: u64 = (0..8).map(|l| N >> l).sum();
        assert_eq!(map.len() as u64, perfect);
    }

    #[test]
    fn range_hash_matches_mth_for_every_tree_node() {
        let d = leaves(N);
        let map = store(N);
        let mut nodes = 0;
        for start in 0..N {
            for end in start + 1..=N {
                let got = range_hash(start, end, lookup(&map));
                if is_tree_node(start, end) {
                    nodes += 1;
                    let want = ref_mth(&d[start as usize..end as usize]);
                    assert_eq!(got, Some(want), "[{start},{end})");
                    // Decomposition is strictly decreasing, so the right fold
                    // is exactly the RFC split at the largest power of two.
                    let levels: Vec<u8> =
                        perfect_subtrees(start, end).iter().map(|c| c.0).collect();
                    assert!(levels.windows(2).all(|w| w[0] > w[1]), "{levels:?}");
                    assert_eq!(levels.len() as u32, (end - start).count_ones());
                } else {
                    assert_eq!(got, None, "[{start},{end}) is not a tree node");
                }
            }
        }
        assert!(nodes > N);
        assert_eq!(range_hash(5, 5, lookup(&map)), Some(empty_root()));
        assert_eq!(range_hash(6, 5, lookup(&map)), None);
        assert_eq!(range_hash(0, N + 1, lookup(&map)), None, "missing node");
    }

    #[test]
    fn perfect_subtrees_cover_exactly() {
        for start in 0..40u64 {
            for end in start..80u64 {
                let mut pos = start;
                for (level, index) in perfect_subtrees(start, end) {
                    assert_eq!(index << level, pos);
                    pos = (index + 1) << level;
                }
                assert_eq!(pos, end.max(start));
            }
        }
        assert_eq!(perfect_subtrees(0, u64::MAX).len(), 64);
        assert_eq!(perfect_subtrees(0, 1 << 63), vec![(63, 0)]);
    }

    #[test]
    fn roots_match_reference() {
        let d = leaves(N);
        let map = store(N);
        let mut cr = CompactRange::new();
        assert_eq!(cr.root(), empty_root());
        assert_eq!(root_hash(0, lookup(&map)), Some(empty_root()));
        assert!(root_coords(0).is_empty());
        for size in 1..=N {
            cr.append(d[size as usize - 1]).unwrap();
            let want = ref_mth(&d[..size as usize]);
            assert_eq!(cr.size(), size);
            assert_eq!(cr.root(), want, "compact range root, size {size}");
            assert_eq!(root_hash(size, lookup(&map)), Some(want), "size {size}");
            let stored: Vec<Hash> = root_coords(size).iter().map(|c| map[c]).collect();
            assert_eq!(cr.hashes(), &stored[..]);
            let rebuilt = CompactRange::from_parts(size, stored).unwrap();
            assert_eq!(rebuilt, cr);
        }
    }

    #[test]
    fn compact_range_from_parts_checks_shape() {
        assert_eq!(
            CompactRange::from_parts(5, vec![[0; 32]]),
            Err(MerkleError::CompactRangeShape {
                size: 5,
                expected: 2,
                got: 1
            })
        );
        assert!(CompactRange::from_parts(0, vec![]).is_ok());
        let mut full = CompactRange::from_parts(u64::MAX, vec![[0; 32]; 64]).unwrap();
        assert_eq!(full.append([1; 32]), Err(MerkleError::TreeFull));
        assert_eq!(full.size(), u64::MAX);
    }

    #[test]
    fn inclusion_proofs_match_reference_and_verify() {
        let d = leaves(N);
        let map = store(N);
        for size in 1..=N {
            let root = ref_mth(&d[..size as usize]);
            for index in 0..size {
                let want = ref_path(index as usize, &d[..size as usize]);
                let coords = inclusion_proof_coords(index, size).unwrap();
                assert!(coords.iter().all(|&(l, i)| (i + 1) << l <= size));
                // Only the fetched coordinates are needed.
                let fetched: HashMap<Coord, Hash> = coords.iter().map(|c| (*c, map[c])).collect();
                let got = inclusion_proof(index, size, lookup(&fetched)).unwrap();
                assert_eq!(got, want, "PATH({index}, D[{size}])");
                let leaf = &d[index as usize];
                verify_inclusion(index, size, leaf, &got, &root).unwrap();

                for i in 0..got.len() {
                    let mut bad = got.clone();
                    bad[i][0] ^= 1;
                    assert!(verify_inclusion(index, size, leaf, &bad, &root).is_err());
                }
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(other, size, leaf, &got, &root).is_err());
                }
                let mut longer = got.clone();
                longer.push(root);
                assert!(verify_inclusion(index, size, leaf, &longer, &root).is_err());
                if !got.is_empty() {
                    assert!(verify_inclusion(index, size, leaf, &got[1..], &root).is_err());
                }
            }
        }
    }

    #[test]
    fn inclusion_edge_cases() {
        let h = leaf_hash(b"x");
        assert_eq!(
            inclusion_proof_coords(3, 3),
            Err(MerkleError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert!(inclusion_proof_coords(0, 0).is_err());
        assert!(verify_inclusion(0, 0, &h, &[], &empty_root()).is_err());
        assert!(verify_inclusion(0, 1, &h, &[], &h).is_ok());
        assert_eq!(
            verify_inclusion(0, 2, &h, &[], &h),
            Err(MerkleError::WrongProofLength {
                expected: 1,
                got: 0
            })
        );
        assert_eq!(
            inclusion_proof(1, 2, |_, _| None),
            Err(MerkleError::MissingNode { level: 0, index: 0 })
        );
    }

    #[test]
    fn consistency_proofs_match_reference_and_verify() {
        let d = leaves(N);
        let map = store(N);
        for to in 1..=N {
            let to_root = ref_mth(&d[..to as usize]);
            for from in 0..=to {
                let from_root = ref_mth(&d[..from as usize]);
                let want = ref_proof(from as usize, &d[..to as usize]);
                let coords = consistency_proof_coords(from, to).unwrap();
                assert!(coords.iter().all(|&(l, i)| (i + 1) << l <= to));
                let fetched: HashMap<Coord, Hash> = coords.iter().map(|c| (*c, map[c])).collect();
                let got = consistency_proof(from, to, lookup(&fetched)).unwrap();
                assert_eq!(got, want, "PROOF({from}, D[{to}])");
                if from == 0 {
                    assert!(got.is_empty());
                    assert_eq!(
                        verify_consistency(from, to, &from_root, &to_root, &got),
                        Err(MerkleError::EmptyTree)
                    );
                    continue;
                }
                verify_consistency(from, to, &from_root, &to_root, &got).unwrap();

                for i in 0..got.len() {
                    let mut bad = got.clone();
                    bad[i][31] ^= 0x80;
                    assert!(verify_consistency(from, to, &from_root, &to_root, &bad).is_err());
                }
                if from != to {
                    assert!(verify_consistency(from, to, &to_root, &from_root, &got).is_err());
                    assert!(verify_consistency(from, to, &from_root, &to_root, &[]).is_err());
                    assert!(verify_consistency(from, to, &from_root, &to_root, &got[1..]).is_err());
                    assert!(verify_consistency(from + 1, to, &from_root, &to_root, &got).is_err());
                }
                let mut longer = got.clone();
                longer.push(to_root);
                assert!(verify_consistency(from, to, &from_root, &to_root, &longer).is_err());
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(
            consistency_proof_coords(5, 4),
            Err(MerkleError::SizeDecreased { from: 5, to: 4 })
        );
        assert!(consistency_proof(5, 4, |_, _| None).is_err());
        assert_eq!(consistency_proof(0, 9, |_, _| None), Ok(vec![]));
        assert_eq!(consistency_proof(9, 9, |_, _| None), Ok(vec![]));
        assert!(verify_consistency(3, 3, &a, &a, &[]).is_ok());
        assert_eq!(
            verify_consistency(3, 3, &a, &b, &[]),
            Err(MerkleError::RootMismatch)
        );
        assert!(verify_consistency(3, 3, &a, &a, &[a]).is_err());
        assert!(verify_consistency(0, 0, &a, &a, &[]).is_err());
        assert!(verify_consistency(4, 3, &a, &a, &[]).is_err());
    }

    #[test]
    fn proofs_need_logarithmic_coordinates() {
        let n = 10_000_000;
        let coords = inclusion_proof_coords(1_234_567, n).unwrap();
        assert!(coords.len() <= 64, "{}", coords.len());
        for from in [1, 2, 3, 1_234_567, 8_388_608, 9_999_999] {
            assert!(consistency_proof_coords(from, n).unwrap().len() <= 64);
        }
        let big = u64::MAX;
        assert!(inclusion_proof_coords(big - 1, big).unwrap().len() <= 128);
        assert!(consistency_proof_coords(big / 3, big).unwrap().len() <= 128);
    }

    // Published probes from transparency-dev/merkle (Apache-2.0).

    fn vectors_dir() -> PathBuf {
        crate::audit::test_vectors_dir()
    }

    fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                json_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }

    fn vector_files(kind: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        json_files(
            &vectors_dir()
                .join("transparency-dev-merkle/testdata")
                .join(kind),
            &mut files,
        );
        files.sort();
        files
    }

    fn decode(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    /// The vectors come from a byte-slice API, so some roots and proof entries
    /// are not 32 bytes. Such a value can never equal a computed hash, and
    /// equal values must stay equal, which is what a domain-separated digest
    /// of the bytes preserves.
    fn as_hash(bytes: &[u8]) -> Hash {
        bytes
            .try_into()
            .unwrap_or_else(|_| sha256(&[b"not a 32-byte hash", bytes]))
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InclusionProbe {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        want_err: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConsistencyProbe {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        want_err: bool,
    }

    #[test]
    fn transparency_dev_inclusion_vectors() {
        let files = vector_files("inclusion");
        assert!(files.len() >= 50, "only {} inclusion vectors", files.len());
        for file in &files {
            let p: InclusionProbe =
                serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            let proof: Vec<Hash> = p
                .proof
                .unwrap_or_default()
                .iter()
                .map(|h| as_hash(&decode(h)))
                .collect();
            let leaf = decode(&p.leaf_hash);
            // A leaf hash of the wrong size cannot even be passed in.
            let got_err = match <Hash>::try_from(leaf.as_slice()) {
                Ok(leaf) => verify_inclusion(
                    p.leaf_idx,
                    p.tree_size,
                    &leaf,
                    &proof,
                    &as_hash(&decode(&p.root)),
                )
                .is_err(),
                Err(_) => true,
            };
            assert_eq!(got_err, p.want_err, "{}", file.display());
        }
    }

    #[test]
    fn transparency_dev_consistency_vectors() {
        let files = vector_files("consistency");
        assert!(
            files.len() >= 50,
            "only {} consistency vectors",
            files.len()
        );
        for file in &files {
            let p: ConsistencyProbe =
                serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            let proof: Vec<Hash> = p
                .proof
                .unwrap_or_default()
                .iter()
                .map(|h| as_hash(&decode(h)))
                .collect();
            let got_err = verify_consistency(
                p.size1,
                p.size2,
                &as_hash(&decode(&p.root1)),
                &as_hash(&decode(&p.root2)),
                &proof,
            )
            .is_err();
            assert_eq!(got_err, p.want_err, "{}", file.display());
        }
    }
}
