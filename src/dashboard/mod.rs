//! The dashboard's static files (`web/`), built into the binary, and the headers they are
//! served with. The routes are in `crate::http::routes::dashboard`.
//!
//! Every file is served under `/app/assets/<bundle hash>/<path>`, where the bundle hash covers
//! every file: a browser may keep any of them for a year, and a new build moves them all to a
//! new URL. Modules import each other by relative paths, which stay inside the same hashed
//! folder. Only the HTML pages (`index.html`, `docs.html`) are served at stable URLs, with
//! `no-cache`, after the hash is written into them.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One file of `web/`.
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }),*]
    };
}

/// Every file of `web/` (a unit test checks none is missing).
pub static ASSETS: &[Asset] = assets![
    "index.html",
    "docs.html",
    "app.css",
    "favicon.svg",
    "js/api.js",
    "js/app.js",
    "js/brand.js",
    "js/charts.js",
    "js/dom.js",
    "js/operator.js",
    "js/pages/audit.js",
    "js/pages/billing.js",
    "js/pages/login.js",
    "js/pages/overview.js",
    "js/pages/settings.js",
    "js/pages/tasks.js",
    "js/pages/webhooks.js",
    "vendor/README.md",
    "vendor/redoc/LICENSE",
    "vendor/redoc/redoc.standalone.js",
    "vendor/redoc/redoc.standalone.js.LICENSE.txt",
    "vendor/uplot/LICENSE",
    "vendor/uplot/uPlot.esm.js",
    "vendor/uplot/uPlot.min.css",
];

/// Where the HTML pages say the assets are.
const PLACEHOLDER: &str = "{{assets}}";

struct Bundle {
    hash: String,
    index: String,
    docs: String,
}

fn bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let mut digest = Sha256::new();
        for asset in ASSETS {
            digest.update((asset.path.len() as u64).to_le_bytes());
            digest.update(asset.path.as_bytes());
            digest.update((asset.bytes.len() as u64).to_le_bytes());
            digest.update(asset.bytes);
        }
        let hash = hex::encode(&digest.finalize()[..8]);
        let base = format!("/app/assets/{hash}");
        let page = |path: &str| {
            let bytes = find(path).map(|a| a.bytes).unwrap_or_default();
            String::from_utf8_lossy(bytes).replace(PLACEHOLDER, &base)
        };
        Bundle {
            index: page("index.html"),
            docs: page("docs.html"),
            hash,
        }
    })
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The content hash in every asset URL of this build.
pub fn bundle_hash() -> &'static str {
    &bundle().hash
}

/// The dashboard's single page, for `/app/` and every deep link under it.
pub fn index_html() -> &'static str {
    &bundle().index
}

/// The API reference page (`/docs`): Redoc reading `/openapi.json`.
pub fn docs_html() -> &'static str {
    &bundle().docs
}

/// The asset at `path` of the bundle `hash`; None for another build's hash, so a stale page
/// never gets today's file cached for a year under yesterday's URL.
pub fn asset(hash: &str, path: &str) -> Option<&'static Asset> {
    (hash == bundle_hash()).then(|| find(path)).flatten()
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "text/plain; charset=utf-8",
    }
}

/// A `Host` header fit to be written into a header value: letters, digits and `.-:[]` only
/// (a host name, an IPv4 or bracketed IPv6 address, a port).
fn plain_host(host: &str) -> Option<&str> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then_some(host)
}

/// The dashboard's Content-Security-Policy: nothing but this origin, no inline script or
/// style. Images may come from any https origin: the tenant's logo is an https URL of its own
/// choosing (API.md, branding). The live chart's WebSocket is named explicitly for browsers
/// whose `'self'` does not cover `ws:`/`wss:`.
pub fn app_csp(host: &str) -> String {
    let sockets = plain_host(host)
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
         font-src 'self'; connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// The policy of `/docs`: Redoc injects its styles as `<style>` elements (styled-components)
/// and runs its search index in a Worker made from a `blob:` URL; both stay on this origin.
pub const DOCS_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src 'self' blob:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_of_web_is_built_in() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut found = Vec::new();
        files(&root, &root, &mut found);
        for path in &found {
            assert!(find(path).is_some(), "web/{path} is not listed in ASSETS");
        }
        assert_eq!(found.len(), ASSETS.len(), "ASSETS lists a file twice");
    }

    #[test]
    fn pages_name_the_hashed_assets() {
        let base = format!("/app/assets/{}/", bundle_hash());
        assert!(index_html().contains(&base));
        assert!(!index_html().contains(PLACEHOLDER));
        assert!(docs_html().contains(&format!("{base}vendor/redoc/redoc.standalone.js")));
        assert!(asset(bundle_hash(), "js/app.js").is_some());
        assert!(asset("0000000000000000", "js/app.js").is_none());
        assert!(asset(bundle_hash(), "../Cargo.toml").is_none());
    }

    #[test]
    fn the_policy_names_only_a_plain_host() {
        assert!(app_csp("acme.example.com:8080").contains("wss://acme.example.com:8080"));
        let hostile = app_csp("x; script-src *");
        assert!(!hostile.contains("script-src *"), "{hostile}");
        assert!(!app_csp("").contains("ws://"));
    }
}
