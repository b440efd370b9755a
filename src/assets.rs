//! The web assets embedded in the binary: the pages, scripts and styles of
//! the node's UI (served by `http::ui`) and of every stream's site (stored
//! by `hls::site`), and hls.js.
//!
//! Every asset is compiled in, so the UI and the sites work on a node
//! without Internet access. `hls.min.js` is hls.js 1.7.4 (Apache-2.0),
//! copied unchanged from the npm package pinned in
//! `tests/interop/package.json`; see `vendor/hls.js/LICENSE.txt` for its
//! license and how to update it. A leaf module: both the HLS stage (which
//! stores the site files) and the HTTP stage (which serves the UI) use it.

/// The version of the embedded hls.js, also used to bust caches of
/// `/assets/hls.min.js` when it changes.
pub const HLS_JS_VERSION: &str = "1.7.4";

/// hls.js, minified.
pub const HLS_JS: &str = include_str!("../vendor/hls.js/hls.min.js");
/// The player script, shared by the node's watch page and every site.
pub const PLAYER_JS: &str = include_str!("assets/player.js");
/// The stream list's script.
pub const HOME_JS: &str = include_str!("assets/home.js");
/// The one style sheet.
pub const STYLE_CSS: &str = include_str!("assets/style.css");
/// The node's home page (the stream list).
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The node's player page, `/watch/{name}`.
pub const WATCH_HTML: &str = include_str!("assets/watch.html");
/// The live dashboard, `/dashboard`.
pub const DASHBOARD_HTML: &str = include_str!("assets/dashboard.html");
/// The dashboard's script: the event stream, the picture and the charts.
pub const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
/// The dashboard's styles (large type and high contrast, for projectors).
pub const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");
/// A stream site's `index.html`: the player with relative links.
pub const SITE_HTML: &str = include_str!("assets/site.html");

/// The static files of a stream's site (see `hls::site`): the player page
/// with relative links, and what it loads.
pub fn site_files() -> [(&'static str, &'static str); 4] {
    [
        ("index.html", SITE_HTML),
        ("player.js", PLAYER_JS),
        ("hls.min.js", HLS_JS),
        ("style.css", STYLE_CSS),
    ]
}
