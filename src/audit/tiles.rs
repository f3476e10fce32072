//! The log as C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>): the paths
//! of tiles and entry bundles, and their geometry, so that any standard
//! client (Go's `sumdb/tlog`, Sunlight's, the `tlog_tiles` crate) reads
//! coffre's tree without coffre's own JSON routes.
//!
//! A tile at level `L` and index `N` holds the hashes of the tree's nodes
//! at height `8·L`, indexes `256·N .. 256·N + W` (`W` = 256 for a full
//! tile, fewer for the partial tile at the right edge). coffre stores the
//! tree as these tiles (`audit_tiles`, one row per tile; the right edge's
//! rows grow with the tree), built by the integrator with
//! [`TileAppender`]; any other node is hashed up from one tile
//! ([`node_from_tile`]). An entry bundle holds entries `256·N .. 256·N + W`, each as a
//! big-endian `u16` length and the leaf's bytes (whose hash is the tree's
//! leaf hash, RFC 9162 `SHA-256(0x00 || leaf)`).

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels a tile spans.
pub const TILE_HEIGHT: u32 = 8;
/// The highest tile level a 64-bit tree can have.
pub const MAX_TILE_LEVEL: u8 = 7;

/// What a tile path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileKind {
    /// Hashes at tree height `8·level`.
    Hashes { level: u8 },
    /// Entries (leaves).
    Entries,
}

/// One tile or entry bundle: its kind, index and width (1 to 256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRef {
    pub kind: TileKind,
    pub index: u64,
    pub width: u64,
}

impl TileRef {
    /// Parses the part of a path after `tile/`: `<L>/<N>[.p/<W>]` or
    /// `entries/<N>[.p/<W>]`, `N` written in groups of three digits, all
    /// but the last prefixed with `x` (`x001/x234/067`). Only the canonical
    /// form is accepted, so one tile has one URL (and one cache entry).
    pub fn parse(path: &str) -> Option<TileRef> {
        let (head, rest) = path.split_once('/')?;
        let kind = if head == "entries" {
            TileKind::Entries
        } else {
            let level: u8 = canonical_number(head)?.try_into().ok()?;
            if level > MAX_TILE_LEVEL {
                return None;
            }
            TileKind::Hashes { level }
        };
        let (n_part, width) = match rest.split_once(".p/") {
            Some((n, w)) => {
                let w = canonical_number(w)?;
                if !(1..TILE_WIDTH).contains(&w) {
                    return None;
                }
                (n, w)
            }
            None => (rest, TILE_WIDTH),
        };
        let groups: Vec<&str> = n_part.split('/').collect();
        let (last, leading) = groups.split_last()?;
        if last.len() != 3 || !last.bytes().all(|b| b.is_ascii_digit()) || leading.len() > 6 {
            return None;
        }
        let mut index: u64 = 0;
        for (i, g) in leading.iter().enumerate() {
            let digits = g.strip_prefix('x')?;
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // No leading group of zeros: `x000/005` is `005`.
            if i == 0 && digits == "000" {
                return None;
            }
            index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
        }
        index = index.checked_mul(1000)?.checked_add(last.parse().ok()?)?;
        Some(TileRef { kind, index, width })
    }

    /// The canonical path after `tile/` (the inverse of [`TileRef::parse`]).
    pub fn path(&self) -> String {
        let head = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_string(),
        };
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        groups.reverse();
        let last = groups.len() - 1;
        let n: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                if i == last {
                    format!("{g:03}")
                } else {
                    format!("x{g:03}")
                }
            })
            .collect();
        let mut p = format!("{head}/{}", n.join("/"));
        if self.width < TILE_WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The tree height its hashes are at (0 for entries: leaves).
    pub fn height(&self) -> u32 {
        match self.kind {
            TileKind::Hashes { level } => u32::from(level) * TILE_HEIGHT,
            TileKind::Entries => 0,
        }
    }

    /// The node (or entry) indexes it covers, at its height.
    pub fn range(&self) -> Option<(u64, u64)> {
        let from = self.index.checked_mul(TILE_WIDTH)?;
        Some((from, from.checked_add(self.width)?))
    }

    /// Whether a tree of `size` entries holds it: its last node is complete.
    pub fn within(&self, size: u64) -> bool {
        let complete = size.checked_shr(self.height()).unwrap_or(0);
        self.range().is_some_and(|(_, to)| to <= complete)
    }
}

/// A decimal number without leading zeros (`0` alone is allowed).
fn canonical_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// An entry bundle: each leaf as a big-endian `u16` length and its bytes;
/// `None` if a leaf is too long for the format.
pub fn entry_bundle(leaves: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(leaves.iter().map(|l| l.len() + 2).sum());
    for leaf in leaves {
        let len = u16::try_from(leaf.len()).ok()?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(leaf);
    }
    Some(out)
}

use super::merkle::{self, Hash};

/// Tile levels above this are never reached by a 64-bit tree.
const LEVELS: usize = MAX_TILE_LEVEL as usize + 1;

/// The tiles a tree of `size` entries has at its right edge that are not
/// full: `(level, index, width)` for each level with one, lowest first.
pub fn edge(size: u64) -> Vec<(u8, u64, u64)> {
    let mut out = Vec::new();
    for level in 0..LEVELS as u8 {
        let hashes = size
            .checked_shr(u32::from(level) * TILE_HEIGHT)
            .unwrap_or(0);
        if hashes == 0 {
            break;
        }
        if !hashes.is_multiple_of(TILE_WIDTH) {
            out.push((level, hashes / TILE_WIDTH, hashes % TILE_WIDTH));
        }
    }
    out
}

/// The root of a perfect subtree given its lowest hashes (a power of two
/// of them, at least one).
pub fn subtree_root(hashes: &[Hash]) -> Option<Hash> {
    if hashes.is_empty() || !hashes.len().is_power_of_two() {
        return None;
    }
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    level.first().copied()
}

/// Which tile holds what a node at tree `height`, index `index` is hashed
/// from: `(tile level, tile index)`.
pub fn tile_of_node(height: u8, index: u64) -> Option<(u8, u64)> {
    let level = height / TILE_HEIGHT as u8;
    let sub = u32::from(height) % TILE_HEIGHT;
    let first = index.checked_shl(sub)?;
    if first >> sub != index || level > MAX_TILE_LEVEL {
        return None;
    }
    Some((level, first / TILE_WIDTH))
}

/// The hash of the node at tree `height`, index `index`, from the tile
/// [`tile_of_node`] names (its hashes concatenated, as stored); `None` if
/// the tile does not reach that far or is malformed.
pub fn node_from_tile(height: u8, index: u64, tile: &[u8]) -> Option<Hash> {
    if !tile.len().is_multiple_of(32) {
        return None;
    }
    let sub = u32::from(height) % TILE_HEIGHT;
    let first = usize::try_from((index << sub) % TILE_WIDTH).ok()?;
    let count = 1usize << sub;
    let bytes = tile.get(first * 32..(first + count) * 32)?;
    let hashes: Vec<Hash> = bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect();
    subtree_root(&hashes)
}

/// The tiles the nodes at `coords` (height, index) are hashed up from,
/// each once, in order.
pub fn tiles_of_nodes(coords: &[(u8, u64)]) -> Vec<(u8, u64)> {
    let mut keys: Vec<(u8, u64)> = coords
        .iter()
        .filter_map(|(h, i)| tile_of_node(*h, *i))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The nodes at `coords` hashed up from `stored` tiles (by tile level and
/// index); a node whose tile is absent or too short is absent.
pub fn nodes_from<T: AsRef<[u8]>>(
    coords: &[(u8, u64)],
    stored: &std::collections::HashMap<(u8, u64), T>,
) -> std::collections::HashMap<(u8, u64), Hash> {
    coords
        .iter()
        .filter_map(|(h, i)| {
            let tile = stored.get(&tile_of_node(*h, *i)?)?;
            Some(((*h, *i), node_from_tile(*h, *i, tile.as_ref())?))
        })
        .collect()
}

/// Builds the tiles of an integration: starts from the right edge of the
/// tiles stored for `size` entries, takes leaf hashes in order, and gives
/// back every tile it completed or extended, whole, ready to be written
/// over the stored rows. Pure: the integrator reads and writes around it,
/// and `coffre audit verify` runs the same from the first entry.
#[derive(Clone, Debug)]
pub struct TileAppender {
    size: u64,
    /// Per tile level, the hashes of its partial (rightmost) tile.
    edges: Vec<Vec<Hash>>,
    /// Per tile level, how many hashes it holds in all.
    counts: Vec<u64>,
    /// Tiles completed since the start, whole.
    full: Vec<(u8, u64, Vec<Hash>)>,
    /// Levels whose partial tile changed since the start.
    touched: [bool; LEVELS],
}

impl TileAppender {
    /// The appender for a tree of `size` entries whose stored edge tiles
    /// ([`edge`]`(size)`, in that order) hold `edge_tiles` (concatenated
    /// hashes, as stored: exactly as wide as the edge, since a tile and
    /// the integrated size are written together; a row of another width is
    /// damage, refused here rather than written over).
    pub fn new(size: u64, edge_tiles: &[(u8, u64, Vec<u8>)]) -> Result<Self, String> {
        let mut edges = vec![Vec::new(); LEVELS];
        let mut counts = vec![0u64; LEVELS];
        for (level, count) in counts.iter_mut().enumerate() {
            *count = size.checked_shr(level as u32 * TILE_HEIGHT).unwrap_or(0);
        }
        let wanted = edge(size);
        if wanted.len() != edge_tiles.len() {
            return Err(format!(
                "{} edge tiles for size {size}, {} expected",
                edge_tiles.len(),
                wanted.len()
            ));
        }
        for ((level, index, width), (l, i, bytes)) in wanted.iter().zip(edge_tiles) {
            let need = usize::try_from(*width).map_err(|e| e.to_string())? * 32;
            if (level, index) != (l, i) || bytes.len() != need {
                return Err(format!(
                    "tile ({level}, {index}) missing or not {width} hashes wide"
                ));
            }
            edges[usize::from(*level)] = bytes
                .chunks_exact(32)
                .map(|c| {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(c);
                    h
                })
                .collect();
        }
        Ok(Self {
            size,
            edges,
            counts,
            full: Vec::new(),
            touched: [false; LEVELS],
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash: every tile it fills hashes up into the level
    /// above.
    pub fn append(&mut self, leaf_hash: Hash) -> Result<(), String> {
        let mut hash = leaf_hash;
        for level in 0..LEVELS {
            let index = self.counts[level] / TILE_WIDTH;
            self.edges[level].push(hash);
            self.counts[level] += 1;
            self.touched[level] = true;
            if (self.edges[level].len() as u64) < TILE_WIDTH {
                self.size += 1;
                return Ok(());
            }
            let tile = std::mem::take(&mut self.edges[level]);
            hash = subtree_root(&tile).ok_or("a full tile has no root")?;
            self.full.push((level as u8, index, tile));
        }
        Err("the tree is larger than 2^64 entries".into())
    }

    /// The tiles to write: `(level, index, hashes concatenated)`, every
    /// completed tile and every partial tile that changed.
    pub fn tiles(&self) -> Vec<(u8, u64, Vec<u8>)> {
        let flat = |hashes: &[Hash]| hashes.iter().flatten().copied().collect::<Vec<u8>>();
        let mut out: Vec<(u8, u64, Vec<u8>)> = self
            .full
            .iter()
            .map(|(l, i, h)| (*l, *i, flat(h)))
            .collect();
        for level in 0..LEVELS {
            if self.touched[level] && !self.edges[level].is_empty() {
                out.push((
                    level as u8,
                    self.counts[level] / TILE_WIDTH,
                    flat(&self.edges[level]),
                ));
            }
        }
        out
    }

    /// The tiles completed so far, whole (for `coffre audit verify`, which
    /// compares each as it completes and then forgets it).
    pub fn take_full(&mut self) -> Vec<(u8, u64, Vec<Hash>)> {
        std::mem::take(&mut self.full)
    }

    /// The partial tiles at the right edge now: `(level, index, hashes)`.
    pub fn edge_tiles(&self) -> Vec<(u8, u64, Vec<u8>)> {
        (0..LEVELS)
            .filter(|l| !self.edges[*l].is_empty())
            .map(|l| {
                (
                    l as u8,
                    self.counts[l] / TILE_WIDTH,
                    self.edges[l].iter().flatten().copied().collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_in_their_canonical_form_only() {
        for (path, kind, index, width) in [
            ("0/000", TileKind::Hashes { level: 0 }, 0, 256),
            ("0/005.p/3", TileKind::Hashes { level: 0 }, 5, 3),
            (
                "1/x001/x234/067",
                TileKind::Hashes { level: 1 },
                1_234_067,
                256,
            ),
            ("entries/x002/000.p/255", TileKind::Entries, 2000, 255),
        ] {
            let t = TileRef::parse(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((t.kind, t.index, t.width), (kind, index, width), "{path}");
            assert_eq!(t.path(), path);
        }
        for bad in [
            "0/5",
            "0/0005",
            "0/x000/005",
            "0/005.p/0",
            "0/005.p/256",
            "0/005.p/03",
            "8/000",
            "01/000",
            "0/x1/000",
            "0/005/",
            "0/../000",
            "hashes/000",
            "0",
            "0/x001/x002/x003/x004/x005/x006/x007/000",
        ] {
            assert_eq!(TileRef::parse(bad), None, "{bad}");
        }
    }

    /// Every node of a tree, from tiles built by the appender in uneven
    /// steps, equals the node hashed from the leaves directly; so does the
    /// root.
    #[test]
    fn tiles_built_in_steps_serve_every_node_of_the_tree() {
        let leaves: Vec<Hash> = (0..70_000u32)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut stored: std::collections::HashMap<(u8, u64), Vec<u8>> = Default::default();
        let mut size = 0u64;
        for step in [1usize, 255, 1, 300, 65_000, 4_443] {
            let edge_tiles: Vec<(u8, u64, Vec<u8>)> = edge(size)
                .into_iter()
                .map(|(l, i, _)| (l, i, stored[&(l, i)].clone()))
                .collect();
            let mut a = TileAppender::new(size, &edge_tiles).unwrap_or_else(|e| panic!("{e}"));
            for h in &leaves[size as usize..size as usize + step] {
                a.append(*h).unwrap_or_else(|e| panic!("{e}"));
            }
            for (l, i, bytes) in a.tiles() {
                stored.insert((l, i), bytes);
            }
            size = a.size();
        }
        assert_eq!(size, 70_000);
        assert_eq!(stored[&(0, 0)].len(), 256 * 32);
        assert_eq!(stored[&(2, 0)].len(), 32, "one full 65,536-leaf subtree");
        let mut range = merkle::CompactRange::new();
        for h in &leaves {
            range.append(*h).unwrap_or_else(|e| panic!("{e}"));
        }
        let node = |height: u8, index: u64| {
            let key = tile_of_node(height, index)?;
            node_from_tile(height, index, stored.get(&key)?)
        };
        assert_eq!(merkle::root_hash(size, node), Some(range.root()));
        for (height, index) in [(0u8, 69_999u64), (3, 17), (8, 1), (9, 0), (16, 0), (15, 1)] {
            let first = (index << height) as usize;
            let direct = subtree_root(&leaves[first..first + (1 << height)]);
            assert_eq!(node(height, index), direct, "({height}, {index})");
        }
        // Past the edge there is nothing to hash up from.
        assert_eq!(node(0, 70_000), None);
        assert_eq!(node(8, 273), None);
        // An edge tile shorter than the size says is refused.
        assert!(TileAppender::new(300, &[(0, 1, vec![0; 32])]).is_err());
    }

    #[test]
    fn a_tile_exists_once_its_last_node_is_complete() {
        let t = TileRef::parse("0/000").unwrap_or_else(|| panic!());
        assert!(!t.within(255) && t.within(256));
        let p = TileRef::parse("0/001.p/2").unwrap_or_else(|| panic!());
        assert!(!p.within(257) && p.within(258));
        let up = TileRef::parse("1/000.p/1").unwrap_or_else(|| panic!());
        assert!(!up.within(255) && up.within(256));
        assert_eq!(
            entry_bundle(&[vec![1, 2], vec![]]),
            Some(vec![0, 2, 1, 2, 0, 0])
        );
        assert_eq!(entry_bundle(&[vec![0; 70_000]]), None);
    }
}
