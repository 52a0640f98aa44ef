//! The HTTP client of the examples (reqwest on rustls with the ring
//! provider), and reading an HTML page's title.

use std::sync::Once;
use std::time::Duration;

/// An HTTP client whose requests give up after `timeout` (connecting
/// included). `follow_redirects` false makes a 3xx answer the final one.
pub fn client(timeout: Duration, follow_redirects: bool) -> Result<reqwest::Client, String> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let redirect = if follow_redirects {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(redirect)
        .user_agent(concat!("pgq-examples/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_text(&e)))
}

/// A request error and its causes on one line (`error sending request for
/// url (...): client error (Connect): tcp connect error: Connection refused`),
/// or `timed out` for a timeout.
pub fn error_text(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return match e.url() {
            Some(url) => format!("timed out: {url}"),
            None => "timed out".into(),
        };
    }
    pgq_consumers::error_chain(e)
}

/// Reads at most `limit` bytes of a response's body; the rest is dropped.
pub async fn body_prefix(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await? {
            Some(chunk) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            None => break,
        }
    }
    Ok(body)
}

/// The text of an HTML page's first `<title>` element, with entities
/// decoded and white space collapsed; `None` when there is none.
///
/// ```
/// let html = "<html><head><TITLE lang=en>\n Fish &amp; Chips &#8211; Menu </TITLE></head></html>";
/// assert_eq!(pgq_examples::http::title_of(html).as_deref(), Some("Fish & Chips – Menu"));
/// ```
pub fn title_of(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    let open = loop {
        let at = from + lower[from..].find("<title")?;
        let after = lower.as_bytes().get(at + "<title".len()).copied();
        // `<title>` or `<title attr...>`, not `<titles>`.
        if matches!(after, Some(b'>') | Some(b' ') | Some(b'\t') | Some(b'\n') | Some(b'\r')) {
            break at;
        }
        from = at + 1;
    };
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let text = decode_entities(&html[start..end]);
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Decodes the common named entities and numeric character references.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        name.strip_prefix('#').and_then(|dec| dec.parse().ok())
                    };
                    code.and_then(char::from_u32)
                }
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_found_and_cleaned() {
        assert_eq!(title_of("<title>A</title>").as_deref(), Some("A"));
        assert_eq!(title_of("<titles>x</titles><title>B</title>").as_deref(), Some("B"));
        assert_eq!(
            title_of("<title>a &lt;b&gt; &#x41; &bogus; & c</title>").as_deref(),
            Some("a <b> A &bogus; & c")
        );
        assert_eq!(title_of("<p>no title</p>"), None);
        assert_eq!(title_of("<title>unclosed"), None);
    }
}
