//! Delta publish and delta subscribe: merging and diffing the top-level members of JSON objects.
//!
//! `delta_publish` overwrites the stored record's members that the update carries and appends the
//! ones it does not have, keeping the stored member order. A delta subscriber receives the key
//! members plus every top-level member whose value changed or appeared; with `no_empties` an update
//! that changed nothing is not sent. Members are compared by their raw bytes (so `1.0` → `1` counts
//! as a change) and names as written (escapes unresolved). This module never touches the store.

/// Most members one object may have for a merge or diff (bounds the quadratic name matching).
pub const MEMBERS_MAX: usize = 4096;

/// A payload that is not a JSON object, or is one too large to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// Not a well-formed JSON object at `offset`.
    #[error("delta needs a JSON object; malformed at byte {offset}")]
    Malformed {
        /// Byte offset where parsing stopped.
        offset: usize,
    },
    /// More than [`MEMBERS_MAX`] top-level members.
    #[error("delta object has more than {limit} top-level members")]
    TooManyMembers {
        /// The limit.
        limit: usize,
    },
}

/// What a delta subscriber gets for one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Send the object written to the output buffer.
    Send,
    /// Nothing changed and the subscription asked for `no_empties`: send nothing.
    Suppress,
}

/// One top-level member: raw name (between the quotes) and raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The name as written, without quotes.
    pub name: &'a [u8],
    /// The value's bytes, whitespace trimmed.
    pub value: &'a [u8],
}

/// Splits a JSON object into its top-level members (values are skipped, not parsed).
pub fn members<'a>(object: &'a [u8], out: &mut Vec<Member<'a>>) -> Result<(), DeltaError> {
    out.clear();
    let mut at = skip_space(object, 0);
    expect(object, at, b'{')?;
    at = skip_space(object, at + 1);
    if object.get(at) == Some(&b'}') {
        return trailing(object, at + 1);
    }
    loop {
        at = skip_space(object, at);
        expect(object, at, b'"')?;
        let name_end = string_end(object, at)?;
        let name = &object[at + 1..name_end - 1];
        at = skip_space(object, name_end);
        expect(object, at, b':')?;
        at = skip_space(object, at + 1);
        let value_end = value_end(object, at)?;
        let value = &object[at..value_end];
        if out.len() == MEMBERS_MAX {
            return Err(DeltaError::TooManyMembers { limit: MEMBERS_MAX });
        }
        out.push(Member { name, value });
        at = skip_space(object, value_end);
        match object.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => return trailing(object, at + 1),
            _ => return Err(DeltaError::Malformed { offset: at }),
        }
    }
}

/// Merges `update`'s members into `stored`, writing the merged object to `out` (cleared first).
pub fn merge(stored: &[u8], update: &[u8], out: &mut Vec<u8>) -> Result<(), DeltaError> {
    let mut old = Vec::new();
    let mut new = Vec::new();
    members(stored, &mut old)?;
    members(update, &mut new)?;
    out.clear();
    out.push(b'{');
    let mut first = true;
    for member in &old {
        let value = new
            .iter()
            .find(|candidate| candidate.name == member.name)
            .map_or(member.value, |m| m.value);
        write_member(out, &mut first, member.name, value);
    }
    for member in &new {
        if !old.iter().any(|candidate| candidate.name == member.name) {
            write_member(out, &mut first, member.name, member.value);
        }
    }
    out.push(b'}');
    Ok(())
}

/// Writes to `out` (cleared first) the delta a subscriber gets: members named in `key_names`, then
/// members of `current` that are new or differ from `previous`.
pub fn diff<'k>(
    previous: &[u8],
    current: &[u8],
    key_names: impl IntoIterator<Item = &'k [u8]> + Clone,
    no_empties: bool,
    out: &mut Vec<u8>,
) -> Result<DeltaOutcome, DeltaError> {
    let mut old = Vec::new();
    let mut new = Vec::new();
    members(previous, &mut old)?;
    members(current, &mut new)?;
    out.clear();
    out.push(b'{');
    let mut first = true;
    let mut changed = 0usize;
    for member in &new {
        let is_key = key_names
            .clone()
            .into_iter()
            .any(|name| name == member.name);
        let differs = old
            .iter()
            .find(|candidate| candidate.name == member.name)
            .is_none_or(|m| m.value != member.value);
        changed += usize::from(differs);
        if is_key || differs {
            write_member(out, &mut first, member.name, member.value);
        }
    }
    out.push(b'}');
    if changed == 0 && no_empties {
        out.clear();
        return Ok(DeltaOutcome::Suppress);
    }
    Ok(DeltaOutcome::Send)
}

fn write_member(out: &mut Vec<u8>, first: &mut bool, name: &[u8], value: &[u8]) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value);
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        at += 1;
    }
    at
}

fn expect(bytes: &[u8], at: usize, wanted: u8) -> Result<(), DeltaError> {
    if bytes.get(at) == Some(&wanted) {
        Ok(())
    } else {
        Err(DeltaError::Malformed { offset: at })
    }
}

fn trailing(bytes: &[u8], at: usize) -> Result<(), DeltaError> {
    let end = skip_space(bytes, at);
    if end == bytes.len() {
        Ok(())
    } else {
        Err(DeltaError::Malformed { offset: end })
    }
}

/// One past the closing quote of the string whose opening quote is at `at`.
fn string_end(bytes: &[u8], at: usize) -> Result<usize, DeltaError> {
    let mut index = at + 1;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'\\' => index += 2,
            b'"' => return Ok(index + 1),
            _ => index += 1,
        }
    }
    Err(DeltaError::Malformed {
        offset: bytes.len(),
    })
}

/// One past the end of the value at `at`: a string, a container (brackets balanced, strings
/// skipped) or a literal (up to the next delimiter).
fn value_end(bytes: &[u8], at: usize) -> Result<usize, DeltaError> {
    match bytes.get(at) {
        None => Err(DeltaError::Malformed { offset: at }),
        Some(b'"') => string_end(bytes, at),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut index = at;
            while let Some(&byte) = bytes.get(index) {
                match byte {
                    b'"' => {
                        index = string_end(bytes, index)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(index + 1);
                        }
                    }
                    _ => {}
                }
                index += 1;
            }
            Err(DeltaError::Malformed {
                offset: bytes.len(),
            })
        }
        Some(_) => {
            let end = bytes[at..]
                .iter()
                .position(|&byte| matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(bytes.len(), |length| at + length);
            if end == at {
                Err(DeltaError::Malformed { offset: at })
            } else {
                Ok(end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(stored: &str, update: &str) -> String {
        let mut out = Vec::new();
        merge(stored.as_bytes(), update.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn members_are_split_without_parsing_values() {
        let mut out = Vec::new();
        members(
            br#" { "a" : 1 , "b\"c":{"x":[1,"}"]}, "d":"s,}" ,"e":null} "#,
            &mut out,
        )
        .unwrap();
        let names: Vec<&[u8]> = out.iter().map(|m| m.name).collect();
        assert_eq!(names, [&b"a"[..], br#"b\"c"#, b"d", b"e"]);
        assert_eq!(out[1].value, br#"{"x":[1,"}"]}"#);
        assert_eq!(out[2].value, br#""s,}""#);
        members(b"{}", &mut out).unwrap();
        assert!(out.is_empty());
        for bad in [
            &b"[1]"[..],
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1} x",
            b"{\"a\":\"x}",
        ] {
            assert!(
                members(bad, &mut out).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn merge_overwrites_and_appends() {
        assert_eq!(
            merged(
                r#"{"id":1,"qty":5,"px":2}"#,
                r#"{"qty":6,"id":1,"new":"x"}"#
            ),
            r#"{"id":1,"qty":6,"px":2,"new":"x"}"#
        );
        assert_eq!(merged(r#"{}"#, r#"{"a":[1]}"#), r#"{"a":[1]}"#);
        assert_eq!(merged(r#"{"a":{"b":1}}"#, r#"{}"#), r#"{"a":{"b":1}}"#);
    }

    #[test]
    fn diff_sends_keys_and_changes_and_honours_no_empties() {
        let mut out = Vec::new();
        let keys = [&b"id"[..]];
        let outcome = diff(
            br#"{"id":1,"qty":5,"px":2}"#,
            br#"{"id":1,"qty":6,"px":2,"n":0}"#,
            keys,
            false,
            &mut out,
        );
        assert_eq!(outcome, Ok(DeltaOutcome::Send));
        assert_eq!(out, br#"{"id":1,"qty":6,"n":0}"#);
        let same = br#"{"id":1,"qty":5}"#;
        assert_eq!(
            diff(same, same, keys, false, &mut out),
            Ok(DeltaOutcome::Send)
        );
        assert_eq!(out, br#"{"id":1}"#);
        assert_eq!(
            diff(same, same, keys, true, &mut out),
            Ok(DeltaOutcome::Suppress)
        );
        assert!(out.is_empty());
    }
}
