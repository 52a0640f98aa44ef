//! An error and its causes on one line.

/// Formats an error with its chain of causes on one line,
/// `outer: inner: innermost`. A cause whose text the line already holds
/// (some errors repeat their source's message in their own) is not said twice.
///
/// ```
/// let e = std::io::Error::other("disk full");
/// assert_eq!(pgq_daemon::error_chain(&e), "disk full");
/// ```
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(text: &'static str, source: Option<E>) -> E {
        E {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn causes_follow_the_error_and_a_repeated_one_is_said_once() {
        let plain = e("outer", Some(e("inner", Some(e("innermost", None)))));
        assert_eq!(error_chain(&plain), "outer: inner: innermost");
        let repeating = e("outer: inner", Some(e("inner", Some(e("", None)))));
        assert_eq!(error_chain(&repeating), "outer: inner");
    }
}
