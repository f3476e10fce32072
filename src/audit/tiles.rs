//! The log as C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>): the paths
//! of tiles and entry bundles, and their geometry, so that any standard
//! client (Go's `sumdb/tlog`, Sunlight's, the `tlog_tiles` crate) reads
//! coffre's tree without coffre's own JSON routes.
//!
//! A tile at level `L` and index `N` holds the hashes of the tree's nodes
//! at height `8·L`, indexes `256·N .. 256·N + W` (`W` = 256 for a full
//! tile, fewer for the partial tile at the right edge). coffre stores
//! every perfect subtree's hash (`audit_nodes`), so a tile is a range
//! read. An entry bundle holds entries `256·N .. 256·N + W`, each as a
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
