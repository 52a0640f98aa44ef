//! The one place where an identifier is put into SQL text.

use crate::error::{Error, Result};

/// Quotes one SQL identifier (`"my ""table"""`), always, so that any name a
/// user chose is read as a name and never as SQL.
pub fn quote_ident(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::InvalidArgument {
            what: "identifier",
            problem: "it is empty".into(),
        });
    }
    if name.contains('\0') {
        return Err(Error::InvalidArgument {
            what: "identifier",
            problem: format!("{name:?} contains a NUL byte"),
        });
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// Quotes a possibly schema-qualified name (`schema.table` or `table`), each
/// part on its own. The parts are split at the first dot, as PgQ's own
/// `quote_fqname` does; use [`quote_ident`] for a name that contains a dot.
pub fn quote_qualified(name: &str) -> Result<String> {
    match name.split_once('.') {
        Some((schema, object)) => Ok(format!("{}.{}", quote_ident(schema)?, quote_ident(object)?)),
        None => quote_ident(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_wrapped() {
        assert_eq!(quote_ident(r#"a"b"#).ok().as_deref(), Some(r#""a""b""#));
    }

    #[test]
    fn hostile_names_stay_one_identifier() {
        let q = quote_ident("x\"; drop table t; --").ok();
        assert_eq!(q.as_deref(), Some(r#""x""; drop table t; --""#));
    }

    #[test]
    fn qualified_names_quote_each_part() {
        assert_eq!(
            quote_qualified("pgq.event_1_0").ok().as_deref(),
            Some(r#""pgq"."event_1_0""#)
        );
        assert_eq!(quote_qualified("t").ok().as_deref(), Some(r#""t""#));
    }

    #[test]
    fn empty_and_nul_names_are_refused() {
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
    }
}

/// Quotes a string literal for the few places SQL cannot take a bound
/// parameter (DDL such as `CREATE TRIGGER` arguments). Written as an `E''`
/// literal with quotes and backslashes escaped, so it reads the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> Result<String> {
    if value.contains('\0') {
        return Err(Error::InvalidArgument {
            what: "literal",
            problem: format!("{value:?} contains a NUL byte"),
        });
    }
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

#[cfg(test)]
mod literal_tests {
    use super::quote_literal;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(
            quote_literal(r"it's a \ test").ok().as_deref(),
            Some(r"E'it''s a \\ test'")
        );
    }
}
