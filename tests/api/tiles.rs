//! The log as C2SP tlog-tiles, read by an independent client: the
//! `tlog_tiles` crate (Cloudflare's port of Go's `sumdb/tlog`, no coffre
//! code) fetches the checkpoint and the hash tiles over HTTP, recomputes
//! the tree's root from them, and proves entries and the tree's growth
//! with proofs it builds itself. Entry bundles are the auditors' only; the
//! hash tiles are public, sealed or not.

use std::io::{Read, Write};

use axum::http::Method;
use tlog_tiles::{
    Checkpoint, Hash, HashReader, Tile, TileHashReader, TileReader, check_record, check_tree,
    prove_record, prove_tree, record_hash, tree_hash,
};

use crate::support::{Setup, each_backend_setup};

const AUDITOR: &str = "a1d00000-0000-4000-8000-000000000005";
const AWA: &str = "0b9a3c1e-5d6f-4a7b-8c9d-000000000001";

/// One blocking HTTP/1.1 GET (the client's trait is synchronous): the
/// status and the body.
fn http_get(base: &str, path: &str, cookie: Option<&str>) -> (u16, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        b = &b[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Tiles fetched from the server, as the client asks for them.
struct Remote {
    base: String,
}

impl TileReader for Remote {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        Ok(tiles
            .iter()
            .map(|t| {
                let path = c2sp_path(t);
                let (status, body) = http_get(&self.base, &path, None);
                assert_eq!(status, 200, "{path}");
                body
            })
            .collect())
    }

    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// The C2SP tlog-tiles URL of a tile (`tile/<L>/<N>[.p/<W>]`; the crate's
/// own `path()` is Go's sumdb form, which also names the height).
fn c2sp_path(t: &Tile) -> String {
    let mut n = t.level_index();
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    let mut path = format!("/audit/tile/{}/{}", t.level(), groups.join("/"));
    if t.width() < 256 {
        path.push_str(&format!(".p/{}", t.width()));
    }
    path
}

fn checkpoint(base: &str) -> Checkpoint {
    let (status, note) = http_get(base, "/audit/checkpoint", None);
    assert_eq!(status, 200);
    let text = String::from_utf8(note).unwrap();
    // The note's body: everything before the blank line of signatures.
    let body = text.split("\n\n").next().unwrap();
    Checkpoint::from_bytes(format!("{body}\n").as_bytes()).unwrap()
}

#[tokio::test]
async fn a_standard_tiles_client_recomputes_the_root_and_proves_entries() {
    let setup = Setup {
        demo: true,
        live: true,
        configure: None,
    };
    each_backend_setup(setup, |app| async move {
        // More than a full tile of entries, so that level 1 exists too.
        let s = app.login(AWA).await;
        for _ in 0..70 {
            app.as_user(&s, Method::GET, "/api/v1/me/data", None).await;
            app.as_user(&s, Method::GET, "/api/v1/me/consents", None)
                .await;
            app.as_user(&s, Method::GET, "/api/v1/me/mandates", None)
                .await;
            app.as_user(&s, Method::GET, "/api/v1/me/requests", None)
                .await;
        }
        let base = app.serve();
        let auditor = app.login(AUDITOR).await;
        let first = {
            let base = base.clone();
            tokio::task::spawn_blocking(move || checkpoint(&base))
                .await
                .unwrap()
        };
        assert!(first.size() > 256, "{}", first.size());
        // Some more entries: the tree grows past the first checkpoint.
        for _ in 0..5 {
            app.as_user(&s, Method::GET, "/api/v1/me/data", None).await;
        }
        // (A checkpoint is signed at most once per clock tick.)
        app.clock.advance(60);
        let cookie = auditor.cookie.clone();
        tokio::task::spawn_blocking(move || {
            let cp = checkpoint(&base);
            assert!(cp.size() > first.size());
            let remote = Remote { base: base.clone() };
            // The tiles give the checkpoint's root.
            let reader = TileHashReader::new(cp.size(), *cp.hash(), &remote);
            assert_eq!(tree_hash(cp.size(), &reader).unwrap(), *cp.hash());
            // An entry, read from the auditors' bundle, is in the tree.
            let (status, bundle) = http_get(&base, "/audit/tile/entries/000", Some(&cookie));
            assert_eq!(status, 200);
            let leaves = bundle_leaves(&bundle);
            assert_eq!(leaves.len(), 256);
            for n in [0_u64, 37, 255] {
                let proof = prove_record(cp.size(), n, &reader).unwrap();
                check_record(
                    &proof,
                    cp.size(),
                    *cp.hash(),
                    n,
                    record_hash(&leaves[n as usize]),
                )
                .unwrap();
            }
            // A leaf changed by one byte is not.
            let mut forged = leaves[37].clone();
            forged[5] ^= 1;
            let proof = prove_record(cp.size(), 37, &reader).unwrap();
            assert!(check_record(&proof, cp.size(), *cp.hash(), 37, record_hash(&forged)).is_err());
            // The tree grew from the first checkpoint without rewriting it.
            let proof = prove_tree(cp.size(), first.size(), &reader).unwrap();
            check_tree(&proof, cp.size(), *cp.hash(), first.size(), *first.hash()).unwrap();
            // And the hashes the reader returns are those of the tiles.
            let hashes: Vec<Hash> = reader.read_hashes(&[0]).unwrap();
            assert_eq!(hashes[0], record_hash(&leaves[0]));

            // Entry bundles are the auditors' only; malformed or future
            // tiles are not found; full tiles are cached for good.
            assert_eq!(http_get(&base, "/audit/tile/entries/000", None).0, 401);
            // An encoded `entries` misses the bundles' route and reaches
            // the hash tiles' one, which the sealed gate lets through: it
            // must not serve the entries there.
            for sneaky in ["/audit/tile/%65ntries/000", "/audit/tile/%65ntries/000.p/1"] {
                let (status, body) = http_get(&base, sneaky, None);
                assert_eq!(status, 404, "{sneaky}: {}", String::from_utf8_lossy(&body));
            }
            for bad in [
                "/audit/tile/0/5",
                "/audit/tile/0/x000/000",
                "/audit/tile/9/000",
                "/audit/tile/0/999",
                "/audit/tile/0/000.p/0",
            ] {
                assert_eq!(http_get(&base, bad, None).0, 404, "{bad}");
            }
        })
        .await
        .unwrap();
        let res = app.get("/audit/tile/0/000").await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body.len(), 256 * 32);
        assert_eq!(
            res.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        // The auditor's read of a bundle is in the log.
        let res = app
            .send(
                Method::GET,
                "/audit/tile/entries/000",
                &[("cookie", auditor.cookie.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("cache-control"), Some("private, no-store"));
        assert_eq!(app.last_entry().await.action, "audit.read");
        // A resident is not an auditor.
        app.send(
            Method::GET,
            "/audit/tile/entries/000",
            &[("cookie", s.cookie.as_str())],
            "",
        )
        .await
        .assert_error(403, "auditor_only");
    })
    .await;
}

/// An entry bundle's leaves: each a big-endian u16 length and its bytes.
fn bundle_leaves(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        out.push(b[2..2 + len].to_vec());
        b = &b[2 + len..];
    }
    assert!(b.is_empty());
    out
}
