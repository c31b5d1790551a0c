//! The demo page served at `/`: plain HTML, a stylesheet, a small ES module and
//! phoenix's own ESM build (from the `phoenix` npm package that `build.rs`
//! installs into `demo/node_modules` from the committed lock file). The files are
//! embedded in the binary, so the server needs nothing on disk at run time.

use warp::filters::BoxedFilter;
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

fn file(body: &'static str, content_type: &'static str) -> Reply {
    Response::builder()
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(body.into())
        .unwrap_or_default()
}

/// `GET /`, `GET /assets/app.js`, `GET /assets/style.css`, `GET /assets/phoenix.mjs`.
pub fn routes() -> BoxedFilter<(Reply,)> {
    // Paths before methods: a POST elsewhere is then a 404, not a 405.
    let index = warp::path::end()
        .and(warp::get())
        .map(|| file(INDEX, "text/html; charset=utf-8"));
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
