//! Pages of MCP lists (`nextCursor`). A list of any length reaches clients
//! in pages of at most [`PAGE_ITEMS`] items and about [`PAGE_BYTES`] of
//! JSON, so no answer outgrows what clients accept (the official Python SDK
//! refuses an SSE event over 1 MiB). The cursor is the last item's key,
//! hex-encoded: opaque to clients, and stable while the list changes (an
//! item that joins or leaves does not shift the pages after it).

use rmcp::ErrorData as McpError;
use serde::Serialize;

/// The most items on one page.
pub const PAGE_ITEMS: usize = 500;
/// About the most JSON bytes on one page (a page holds at least one item).
pub const PAGE_BYTES: usize = 256 * 1024;

/// The page of `items` (sorted by key) after `cursor`, and the cursor of
/// the next page if there is one.
pub fn page<'a, T: Serialize + 'a>(
    items: impl IntoIterator<Item = (&'a str, &'a T)>,
    cursor: Option<&str>,
) -> Result<(Vec<&'a T>, Option<String>), McpError> {
    let after = cursor.map(decode).transpose()?;
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    let mut rest = items
        .into_iter()
        .filter(|(key, _)| after.as_deref().is_none_or(|a| *key > a))
        .peekable();
    while let Some((key, item)) = rest.peek().copied() {
        let size = serde_json::to_vec(item).map(|v| v.len()).unwrap_or(0);
        if !out.is_empty() && (out.len() == PAGE_ITEMS || bytes + size > PAGE_BYTES) {
            break;
        }
        bytes += size;
        out.push(item);
        last = Some(key);
        rest.next();
    }
    let next = rest.peek().and(last).map(encode);
    Ok((out, next))
}

fn encode(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(cursor: &str) -> Result<String, McpError> {
    let bad = || {
        McpError::invalid_params(
            "invalid cursor: pass back the nextCursor of the previous page, or none for the first",
            None,
        )
    };
    if !cursor.len().is_multiple_of(2) || cursor.len() > 2048 {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_comes_once_across_pages() {
        let keys: Vec<String> = (0..1234).map(|i| format!("tool_{i:05}")).collect();
        let items: Vec<(&str, &String)> = keys.iter().map(|k| (k.as_str(), k)).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = page(items.iter().copied(), cursor.as_deref()).unwrap();
            assert!(page.len() <= PAGE_ITEMS);
            seen.extend(page.into_iter().cloned());
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, keys);
        assert!(page(items.iter().copied(), Some("zz")).is_err());
        assert!(page(items.iter().copied(), Some("abc")).is_err());
    }

    #[test]
    fn a_page_stays_under_its_byte_budget() {
        let big = "x".repeat(100 * 1024);
        let keys = ["a", "b", "c", "d"];
        let items: Vec<(&str, &String)> = keys.iter().map(|k| (*k, &big)).collect();
        let (first, next) = page(items.iter().copied(), None).unwrap();
        assert_eq!(first.len(), 2, "two 100 KiB items fit in 256 KiB");
        assert!(next.is_some());
    }
}
