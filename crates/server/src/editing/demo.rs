//! The demo page served at `/`: plain HTML, a stylesheet, a small ES module and
//! phoenix's own ESM build (from the `phoenix` npm package that `build.rs`
//! installs into `demo/node_modules` from the committed lock file). The files are
//! embedded in the binary, so the server needs nothing on disk at run time.
//!
//! The page is told, as it is served, whether the origin it will have
//! (`http://` and the request's `Host`) passes the socket's origin check, and
//! if not which address or flag works: a newcomer who opens an address the
//! check refuses reads why on the page, not only in the server's log.

use hyper::body::Bytes;
use phx_runtime::{CheckOrigin, Origin};
use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::uri::Authority;
use warp::http::Response;
use warp::reply::Response as Reply;
use warp::Filter;

const INDEX: &str = include_str!("../../demo/index.html");
const APP: &str = include_str!("../../demo/app.js");
const STYLE: &str = include_str!("../../demo/style.css");
const PHOENIX: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/demo/node_modules/phoenix/priv/static/phoenix.mjs"
));

/// Where `index.html` receives the origin verdict.
const VERDICT_SLOT: &str = "<!-- phx:origin -->";

fn file(body: impl Into<Bytes>, content_type: &'static str) -> Reply {
    Response::builder()
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(body.into().into())
        .unwrap_or_default()
}

/// What the page learns about its own origin: read by `app.js`.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Verdict {
    /// The socket's origin check refuses `http://<address>`.
    refused: bool,
    /// The address the page was opened at (the request's `Host`).
    address: String,
    /// An address the check accepts, on the same port, when one can be named.
    works: Option<String>,
    /// The `phx-server` flag that would accept this address.
    flag: Option<String>,
}

/// Judges `http://<host>` as the socket's origin check will when the page
/// opens its socket.
fn verdict(check: &CheckOrigin, host: Option<&Authority>) -> Verdict {
    let Some(host) = host else {
        // HTTP/1.0 without a Host: nothing to judge, the socket says.
        return Verdict {
            refused: false,
            address: String::new(),
            works: None,
            flag: None,
        };
    };
    let origin = format!("http://{host}");
    let refused = !check.allows(Some(&origin), &Origin::parse(&origin));
    if !refused {
        return Verdict {
            refused,
            address: host.to_string(),
            works: None,
            flag: None,
        };
    }
    let port = host.port_u16().map_or(String::new(), |p| format!(":{p}"));
    let name = host.host();
    let (works, flag) = match check {
        CheckOrigin::Host(allowed) => (
            Some(format!("http://{allowed}{port}/")),
            Some(format!("--host {name}")),
        ),
        CheckOrigin::List(entries) => {
            let works = entries.iter().find_map(|entry| {
                let allowed = entry.host.as_deref().filter(|h| !h.starts_with("*."))?;
                let allowed = if allowed.contains(':') {
                    format!("[{allowed}]")
                } else {
                    allowed.to_owned()
                };
                let scheme = entry.scheme.as_deref().unwrap_or("http");
                let port = entry.port.map_or(port.clone(), |p| format!(":{p}"));
                Some(format!("{scheme}://{allowed}{port}/"))
            });
            (works, Some(format!("--check-origin //{name}")))
        }
        CheckOrigin::Disabled | CheckOrigin::Conn | CheckOrigin::Custom(_) => (None, None),
    };
    Verdict {
        refused,
        address: host.to_string(),
        works,
        flag,
    }
}

/// The page with its verdict, as JSON in a data block. `<` is written as
/// `\u003c` (same JSON value) so that no string can end the element.
fn index(check: &CheckOrigin, host: Option<&Authority>) -> String {
    let json = serde_json::to_string(&verdict(check, host))
        .unwrap_or_else(|_| "{}".to_owned())
        .replace('<', "\\u003c");
    let block = format!(r#"<script id="phx-origin" type="application/json">{json}</script>"#);
    INDEX.replacen(VERDICT_SLOT, &block, 1)
}

/// `GET /`, `GET /assets/app.js`, `GET /assets/style.css`, `GET /assets/phoenix.mjs`;
/// `check` is the socket's origin check, which the page is told about.
pub fn routes(check: CheckOrigin) -> BoxedFilter<(Reply,)> {
    // Paths before methods: a POST elsewhere is then a 404, not a 405.
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::host::optional())
        .map(move |host: Option<Authority>| {
            file(index(&check, host.as_ref()), "text/html; charset=utf-8")
        });
    let asset =
        warp::path!("assets" / String)
            .and(warp::get())
            .and_then(|name: String| async move {
                match name.as_str() {
                    "app.js" => Ok(file(APP, "text/javascript; charset=utf-8")),
                    "phoenix.mjs" => Ok(file(PHOENIX, "text/javascript; charset=utf-8")),
                    "style.css" => Ok(file(STYLE, "text/css; charset=utf-8")),
                    _ => Err(warp::reject::not_found()),
                }
            });
    index.or(asset).unify().boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str) -> Authority {
        host.parse().expect("an authority")
    }

    #[test]
    fn a_refused_address_is_named_with_what_works() {
        let check = CheckOrigin::Host("example.com".to_owned());
        let v = verdict(&check, Some(&at("127.0.0.1:4000")));
        assert_eq!(
            v,
            Verdict {
                refused: true,
                address: "127.0.0.1:4000".to_owned(),
                works: Some("http://example.com:4000/".to_owned()),
                flag: Some("--host 127.0.0.1".to_owned()),
            }
        );
        assert!(!verdict(&check, Some(&at("example.com:4000"))).refused);
    }

    #[test]
    fn the_loopback_list_accepts_its_three_names_and_names_one_for_others() {
        let check = CheckOrigin::list(["//localhost", "//127.0.0.1", "//[::1]"]);
        for ok in ["localhost:4000", "127.0.0.1:4000", "[::1]:4000"] {
            assert!(!verdict(&check, Some(&at(ok))).refused, "{ok}");
        }
        let v = verdict(&check, Some(&at("myhost.lan:4000")));
        assert!(v.refused);
        assert_eq!(v.works.as_deref(), Some("http://localhost:4000/"));
        assert_eq!(v.flag.as_deref(), Some("--check-origin //myhost.lan"));
    }

    #[test]
    fn the_verdict_cannot_end_its_script_element() {
        let check = CheckOrigin::Host("example.com".to_owned());
        let page = index(&check, Some(&at("127.0.0.1:4000")));
        assert!(page.contains(r#"<script id="phx-origin" type="application/json">{"refused":true"#));
        assert!(!page.contains(VERDICT_SLOT));
        let json = r#"{"a":"</script><b>"}"#.replace('<', "\\u003c");
        let back: serde_json::Value = serde_json::from_str(&json).expect("still JSON");
        assert_eq!(back["a"], "</script><b>");
    }
}
