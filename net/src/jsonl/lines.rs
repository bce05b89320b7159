//! The pure parts of the JSON Lines interface: the bounds, cutting a publish body into numbered
//! lines, the per-line status lines, making a payload one line of NDJSON, query strings and the
//! `/sow` request body. Nothing here does I/O, so all of it is unit-tested.

use super::amps_client::SowQuery;
use serde::{Deserialize, Serialize};

/// Largest `POST /publish` body: the whole body is read before the first line is published, so
/// this bounds the memory one publish request holds.
pub(crate) const PUBLISH_BODY_BYTES_MAX: usize = 8 << 20;

/// Largest single line (one message) of a publish body. Kept well below the data plane's
/// default `[limits] frame_bytes_max` (16 MiB) so a line never makes it drop the connection.
pub(crate) const LINE_BYTES_MAX: usize = 1 << 20;

/// Largest `POST /sow` request body (a small JSON object).
pub(crate) const SOW_REQUEST_BYTES_MAX: usize = 64 << 10;

/// Subscription streams open at once; each holds one HTTP connection and one loopback AMPS
/// connection (two file descriptors here, one in a shard).
pub(crate) const SUBSCRIPTIONS_MAX: usize = 128;

/// Publishes sent to the data plane and not yet acknowledged, per request: bounds what the data
/// plane queues for this connection when the HTTP client reads its status lines slowly.
pub(crate) const PUBLISH_IN_FLIGHT_MAX: usize = 1024;

/// Bounds on what one request may send or hold; the defaults are the constants above, tests
/// shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// See [`PUBLISH_BODY_BYTES_MAX`].
    pub(crate) publish_body_bytes_max: usize,
    /// See [`LINE_BYTES_MAX`].
    pub(crate) line_bytes_max: usize,
    /// See [`SOW_REQUEST_BYTES_MAX`].
    pub(crate) sow_request_bytes_max: usize,
    /// See [`SUBSCRIPTIONS_MAX`].
    pub(crate) subscriptions_max: usize,
}

impl Limits {
    /// The production bounds.
    pub(crate) const DEFAULT: Limits = Limits {
        publish_body_bytes_max: PUBLISH_BODY_BYTES_MAX,
        line_bytes_max: LINE_BYTES_MAX,
        sow_request_bytes_max: SOW_REQUEST_BYTES_MAX,
        subscriptions_max: SUBSCRIPTIONS_MAX,
    };
}

/// One non-blank line of a publish body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// Valid JSON, surrounding whitespace trimmed: to be published.
    Message(&'a [u8]),
    /// Refused without being sent, with the reason.
    Refused(String),
}

/// The non-blank lines of a publish body, numbered from 1 as an editor numbers them (blank
/// lines, such as the one after a final newline, get no number of their own in the answer but
/// still count). A line ends at `\n`; a `\r` before it is whitespace and trimmed.
pub(crate) fn numbered_lines(
    body: &[u8],
    line_bytes_max: usize,
) -> impl Iterator<Item = (usize, Line<'_>)> {
    body.split(|&byte| byte == b'\n')
        .enumerate()
        .filter_map(move |(index, raw)| {
            let text = raw.trim_ascii();
            if text.is_empty() {
                return None;
            }
            Some((index + 1, check_line(text, raw.len(), line_bytes_max)))
        })
}

fn check_line(text: &[u8], raw_length: usize, line_bytes_max: usize) -> Line<'_> {
    if raw_length > line_bytes_max {
        return Line::Refused(format!(
            "line is {raw_length} bytes, over the limit of {line_bytes_max} bytes per line; publish larger messages over the AMPS port"
        ));
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        Ok(_) => Line::Message(text),
        Err(error) => Line::Refused(format!("not valid JSON: {error}")),
    }
}

/// One status line, its keys in this order.
#[derive(Serialize)]
struct Status<'a> {
    line: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Appends the status line of input line `line`: `{"line":N,"status":"success"}` or
/// `{"line":N,"status":"failure","reason":"..."}`, then `\n`.
pub(crate) fn write_status(out: &mut Vec<u8>, line: usize, outcome: Result<(), &str>) {
    let status = match outcome {
        Ok(()) => Status {
            line,
            status: "success",
            reason: None,
        },
        Err(reason) => Status {
            line,
            status: "failure",
            reason: Some(reason),
        },
    };
    serde_json::to_writer(&mut *out, &status).expect("a status serializes into a Vec");
    out.push(b'\n');
}

/// Appends `payload` as one NDJSON line: whitespace outside strings is dropped, so a
/// pretty-printed message fits on one line with its keys in their order; a raw line break
/// inside a string (not valid JSON, but a binary client may publish it) is written escaped. A
/// line without line breaks is copied unchanged.
pub(crate) fn write_record(out: &mut Vec<u8>, payload: &[u8]) {
    if !payload.iter().any(|&byte| byte == b'\n' || byte == b'\r') {
        out.extend_from_slice(payload);
        out.push(b'\n');
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &byte in payload {
        if in_string {
            match byte {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(byte),
            }
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else {
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'"' => {
                    in_string = true;
                    out.push(byte);
                }
                _ => out.push(byte),
            }
        }
    }
    out.push(b'\n');
}

/// The parameters of a query string, percent-decoded (`+` is a space, as in HTML forms: write a
/// literal plus as `%2B`). Unknown or repeated parameters are refused, naming the known ones.
pub(crate) fn query_parameters(
    query: Option<&str>,
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, String> {
    let mut parameters: Vec<(&'static str, String)> = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let Some(&known_name) = known.iter().find(|known| **known == name) else {
            return Err(format!(
                "unknown query parameter {name:?}; this endpoint takes {}",
                known.join(", ")
            ));
        };
        if parameters.iter().any(|(seen, _)| *seen == known_name) {
            return Err(format!("query parameter {name:?} is given twice"));
        }
        parameters.push((known_name, percent_decode(value)?));
    }
    Ok(parameters)
}

/// The value of `name` among `parameters`.
pub(crate) fn parameter<'a>(
    parameters: &'a [(&'static str, String)],
    name: &str,
) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, value)| value.as_str())
}

/// Decodes `%XX` escapes and `+` (a space) into UTF-8 text.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => {
                let digits = bytes
                    .get(at + 1..at + 3)
                    .and_then(|digits| std::str::from_utf8(digits).ok())
                    .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                    .ok_or_else(|| {
                        format!("bad percent escape at byte {at} of {text:?} (write '%' as %25)")
                    })?;
                out.push(digits);
                at += 2;
            }
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

/// The body of `POST /sow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SowRequest {
    topic: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    top_n: Option<u64>,
    #[serde(default, alias = "order_by")]
    orderby: Option<String>,
}

/// Reads a `POST /sow` body: `{"topic":"t","filter":"/x > 1","top_n":10,"orderby":"/x DESC"}`,
/// only `topic` required. Empty strings count as absent.
pub(crate) fn sow_query(body: &[u8]) -> Result<SowQuery, String> {
    let request: SowRequest = serde_json::from_slice(body).map_err(|error| {
        format!(
            "the body must be a JSON object {{\"topic\": \"...\", \"filter\": \"...\", \"top_n\": N, \"orderby\": \"/field DESC\"}} (only topic required): {error}"
        )
    })?;
    if request.topic.is_empty() {
        return Err("topic is empty: name the SOW topic to query".into());
    }
    let non_empty = |text: Option<String>| text.filter(|text| !text.is_empty());
    Ok(SowQuery {
        topic: request.topic,
        filter: non_empty(request.filter),
        top_n: request.top_n,
        orderby: non_empty(request.orderby),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(body: &str, max: usize) -> Vec<(usize, Line<'_>)> {
        numbered_lines(body.as_bytes(), max).collect()
    }

    #[test]
    fn lines_are_numbered_as_an_editor_numbers_them() {
        let body = "{\"a\":1}\n\n  {\"b\":2}  \r\n{bad\n\t\n[1,2]\n\"text\"";
        let got = lines(body, LINE_BYTES_MAX);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], (1, Line::Message(b"{\"a\":1}")));
        assert_eq!(got[1], (3, Line::Message(b"{\"b\":2}")));
        assert_eq!(got[2].0, 4);
        match &got[2].1 {
            Line::Refused(reason) => assert!(reason.starts_with("not valid JSON"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(got[3], (6, Line::Message(b"[1,2]")));
        assert_eq!(got[4], (7, Line::Message(b"\"text\"")));
        assert!(lines("", LINE_BYTES_MAX).is_empty());
        assert!(lines("\n\n \r\n", LINE_BYTES_MAX).is_empty());
        assert_eq!(lines("{}\n", LINE_BYTES_MAX).len(), 1);
    }

    #[test]
    fn two_values_on_one_line_are_not_one_message() {
        match &lines("{\"a\":1} {\"b\":2}", LINE_BYTES_MAX)[0].1 {
            Line::Refused(reason) => assert!(reason.contains("trailing"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_line_over_the_limit_is_refused_naming_both_sizes() {
        let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
        let body = format!("{{}}\n{long}\n{{}}");
        let got = lines(&body, 64);
        assert_eq!(got[0], (1, Line::Message(b"{}")));
        match &got[1] {
            (2, Line::Refused(reason)) => {
                assert!(reason.contains(&long.len().to_string()), "{reason}");
                assert!(reason.contains("64 bytes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[2], (3, Line::Message(b"{}")));
        // Exactly at the limit is fine.
        let exact = format!("{{\"p\":\"{}\"}}", "y".repeat(56));
        assert_eq!(exact.len(), 64);
        assert_eq!(lines(&exact, 64)[0].1, Line::Message(exact.as_bytes()));
    }

    #[test]
    fn status_lines_are_json_with_the_reason_escaped() {
        let mut out = Vec::new();
        write_status(&mut out, 1, Ok(()));
        write_status(&mut out, 2, Err("bad \"sow\" key\n"));
        let text = String::from_utf8(out).unwrap();
        let mut rows = text.lines();
        assert_eq!(rows.next(), Some(r#"{"line":1,"status":"success"}"#));
        assert_eq!(
            rows.next(),
            Some(r#"{"line":2,"status":"failure","reason":"bad \"sow\" key\n"}"#)
        );
        assert_eq!(rows.next(), None);
    }

    #[test]
    fn records_become_single_lines_keeping_key_order() {
        let mut out = Vec::new();
        write_record(&mut out, br#"{"z":1,"a":"x y"}"#);
        write_record(&mut out, b"{\n  \"z\": 2,\r\n  \"a\": \"p q\\\" \\\\\"\n}");
        write_record(&mut out, b"{\"s\":\"raw\nbreak\"}");
        write_record(&mut out, b"");
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.split('\n').collect();
        assert_eq!(rows[0], r#"{"z":1,"a":"x y"}"#);
        assert_eq!(rows[1], r#"{"z":2,"a":"p q\" \\"}"#);
        assert_eq!(rows[2], r#"{"s":"raw\nbreak"}"#);
        assert_eq!(rows[3], "");
        assert_eq!(rows.len(), 5, "{rows:?}");
        let value: serde_json::Value = serde_json::from_str(rows[2]).unwrap();
        assert_eq!(value["s"], "raw\nbreak");
    }

    #[test]
    fn query_strings_decode_and_refuse_unknown_or_repeated_parameters() {
        let known = ["topic", "filter"];
        let parameters = query_parameters(
            Some("topic=orders&filter=%2Fx+%3E+1%20AND%20%2Fs+%3D+'a%2Bb'"),
            &known,
        )
        .unwrap();
        assert_eq!(parameter(&parameters, "topic"), Some("orders"));
        assert_eq!(
            parameter(&parameters, "filter"),
            Some("/x > 1 AND /s = 'a+b'")
        );
        assert_eq!(query_parameters(None, &known).unwrap(), vec![]);
        assert_eq!(
            parameter(&query_parameters(Some("topic&"), &known).unwrap(), "topic"),
            Some("")
        );
        let unknown = query_parameters(Some("topik=x"), &known).unwrap_err();
        assert!(
            unknown.contains("topik") && unknown.contains("topic, filter"),
            "{unknown}"
        );
        let twice = query_parameters(Some("topic=a&topic=b"), &known).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let bad = query_parameters(Some("topic=100%"), &known).unwrap_err();
        assert!(bad.contains("%25"), "{bad}");
        assert!(query_parameters(Some("topic=%ff"), &known).is_err());
    }

    #[test]
    fn sow_requests_need_a_topic_and_refuse_unknown_fields() {
        let query = sow_query(br#"{"topic":"o","filter":"/x > 1","top_n":10,"orderby":"/x DESC"}"#)
            .unwrap();
        assert_eq!(
            query,
            SowQuery {
                topic: "o".into(),
                filter: Some("/x > 1".into()),
                top_n: Some(10),
                orderby: Some("/x DESC".into()),
            }
        );
        let minimal = sow_query(br#"{"topic":"o","filter":"","order_by":"/a"}"#).unwrap();
        assert_eq!(minimal.filter, None);
        assert_eq!(minimal.orderby.as_deref(), Some("/a"));
        for (body, needle) in [
            (&br#"{"filter":"/x = 1"}"#[..], "topic"),
            (br#"{"topic":""}"#, "empty"),
            (br#"{"topic":"o","limit":3}"#, "limit"),
            (br#"{"topic":"o","top_n":-1}"#, "top_n"),
            (b"not json", "JSON object"),
        ] {
            let error = sow_query(body).unwrap_err();
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }
}
