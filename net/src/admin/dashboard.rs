//! The dashboard: `GET /dashboard`, one self-contained HTML page (`dashboard.html`, compiled into
//! the binary) in the Galvanometer style: version and uptime, message rates, the clients and the
//! topics with their counters and rates, the journal, and a live plot of the server's latency.
//!
//! The page does the work in the operator's browser: it polls `amps/instance` every 500 ms and
//! `health` every 2 s, and computes rates from the difference between two polls, so the server
//! keeps no state for its viewers and this module only hands out a constant. It must never grow
//! per-viewer state or a second copy of the statistics. Latency works the same way: the shards
//! measure each message from its receipt to its deliveries queued into a cumulative histogram of
//! power-of-two buckets (`instance.latency.route`), and the page takes the difference of the
//! bucket counts between two polls to plot that interval's p50 and p99, labelled as what they are
//! (upper bounds of their buckets, measured by the server). The page shows no latency the server
//! did not measure, except the round-trip time of its own poll, labelled as the browser's. Every
//! value from the server, client and topic names included, is rendered as text, never as markup.
//! The page loads nothing from any other origin, and its Content-Security-Policy tells the browser
//! to refuse anything that tries.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The page, as built into the binary.
const PAGE: &str = include_str!("dashboard.html");

/// What the browser may load for the page: its own inline script and style, and requests back to
/// the admin API that served it. Nothing from another origin, no frames, no forms. Inline script
/// is safe here because the page is a constant and renders every server value as text.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /dashboard`.
pub(super) async fn page() -> Response {
    response()
}

/// The page with its headers; revalidated on every load so a new build's page is never stale.
fn response() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{response, CONTENT_SECURITY_POLICY, PAGE};
    use axum::http::{header, StatusCode};
    use std::collections::BTreeSet;

    /// The literal arguments of every `getJson("…")` call in the page.
    fn polled_paths() -> BTreeSet<&'static str> {
        PAGE.split("getJson(\"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(path, _)| path))
            .collect()
    }

    #[test]
    fn page_loads_nothing_from_another_origin() {
        for forbidden in [
            "http://", "https://", "src=", "@import", "url(", "<iframe", "<img",
        ] {
            assert!(
                !PAGE.contains(forbidden),
                "the dashboard must be self-contained, but it contains {forbidden:?}"
            );
        }
        let links: Vec<&str> = PAGE
            .match_indices("href=\"")
            .map(|(at, _)| &PAGE[at..])
            .collect();
        assert_eq!(links.len(), 1, "only the inline favicon may have an href");
        assert!(
            links[0].starts_with("href=\"data:,\""),
            "{}",
            &links[0][..20]
        );
    }

    #[test]
    fn page_polls_only_admin_routes_with_relative_paths() {
        // Relative, so the page keeps working behind a reverse proxy that adds a path prefix.
        let expected: BTreeSet<&str> = ["amps/instance", "health"].into();
        assert_eq!(polled_paths(), expected);
        assert_eq!(
            PAGE.matches("fetch(").count(),
            1,
            "every request goes through getJson, which the paths above cover"
        );
        for path in expected {
            let absolute = format!("/{path}");
            assert!(
                super::super::http::ENDPOINTS.contains(&absolute.as_str()),
                "the page polls {absolute}, which the router does not list"
            );
        }
        assert!(super::super::http::ENDPOINTS.contains(&"/dashboard"));
    }

    #[test]
    fn page_has_the_elements_the_browser_test_reads() {
        for id in [
            "version",
            "uptime",
            "health",
            "poll-count",
            "connections-total",
            "published-total",
            "publish-rate",
            "frames-in-rate",
            "frames-out-rate",
            "bytes-in-rate",
            "bytes-out-rate",
            "rtt-last",
            "latency-p50",
            "latency-p99",
            "rates-chart",
            "latency-chart",
            "rtt-chart",
            "processors",
            "clients",
            "topics",
            "journal",
            "banner",
        ] {
            assert_eq!(
                PAGE.matches(&format!("id=\"{id}\"")).count(),
                1,
                "tests/dashboard/test_dashboard.py reads #{id}: it must exist exactly once"
            );
        }
        assert!(PAGE.contains("<body data-state=\"starting\">"));
    }

    #[test]
    fn page_says_which_latency_it_shows() {
        // The server's latency, for what it is: what it spans, who measured it, how precise it is.
        assert!(PAGE.contains(
            "Receipt → queued for subscribers, measured by the server, power-of-two buckets (upper bound)"
        ));
        assert!(PAGE.contains("getJson(\"amps/instance\")"));
        assert!(PAGE.contains("instance.latency && instance.latency.route"));
        // The browser's own round trip is there too, and says it is not message latency.
        assert!(PAGE.contains("Admin API round-trip time"));
        assert!(PAGE.contains("<b>not</b> message latency"));
    }

    #[test]
    fn page_renders_server_values_as_text() {
        // Topic and client names are chosen by whoever connects: never parse them as markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "DOMParser",
            "createContextualFragment",
            "eval(",
            "new Function",
        ] {
            assert!(
                !PAGE.contains(sink),
                "the dashboard must render server values with textContent, but it uses {sink}"
            );
        }
        assert!(PAGE.contains("td.textContent = text;"));
    }

    #[test]
    fn response_is_html_that_may_only_call_home() {
        let answer = response();
        assert_eq!(answer.status(), StatusCode::OK);
        let headers = answer.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none';"));
        assert!(CONTENT_SECURITY_POLICY.contains("connect-src 'self';"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
