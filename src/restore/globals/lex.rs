//! Splitting `pg_dumpall --globals-only` output into statements and statements into tokens.
//!
//! The input is what pg_dumpall writes, not arbitrary SQL: statements end with `;` outside
//! quotes, string literals are standard-conforming (`'it''s'`, no backslash escapes; the dump
//! sets `standard_conforming_strings = on`), identifiers are bare lower-case words or
//! `"double-quoted"`, and psql meta-commands (`\restrict KEY`) and `--` comments stand on
//! lines of their own. A literal may span lines (a comment on a role).

/// A syntax error in the globals file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("globals.sql line {line}: {message}")]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

/// One statement without its `;`, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub line: usize,
    pub text: String,
}

/// The statements of a dump, in order; comments and psql meta-commands dropped.
pub fn statements(text: &str) -> Result<Vec<Raw>, LexError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            current.push(c);
            if c == q {
                quote = None;
            }
            if c == '\n' {
                line += 1;
            }
            continue;
        }
        let at_start = current.trim().is_empty();
        match c {
            '\n' => {
                line += 1;
                current.push(c);
            }
            // A comment, or (between statements) a psql meta-command: skip the rest of the line.
            '-' if chars.peek() == Some(&'-') => skip_line(&mut chars, &mut line, &mut current),
            '\\' if at_start => skip_line(&mut chars, &mut line, &mut current),
            '\'' | '"' => {
                if at_start {
                    start_line = line;
                }
                quote = Some(c);
                current.push(c);
            }
            ';' => {
                let text = current.trim().to_owned();
                if !text.is_empty() {
                    out.push(Raw {
                        line: start_line,
                        text,
                    });
                }
                current.clear();
            }
            _ => {
                if at_start && !c.is_whitespace() {
                    start_line = line;
                }
                current.push(c);
            }
        }
    }
    if quote.is_some() || !current.trim().is_empty() {
        return Err(LexError {
            line: start_line,
            message: "statement not terminated (a quote or the final ';' is missing)".into(),
        });
    }
    Ok(out)
}

fn skip_line(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
    current: &mut String,
) {
    for c in chars.by_ref() {
        if c == '\n' {
            *line += 1;
            current.push('\n');
            break;
        }
    }
}

/// A token of a statement, with its text as written (`raw`) for splicing back into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A keyword or an identifier: `name` is what it stands for (bare words lower-cased as
    /// the server folds them, quoted ones unquoted).
    Word {
        name: String,
        quoted: bool,
        raw: String,
    },
    /// A string literal, quotes included.
    Literal(String),
    /// Anything else, one character: `(`, `)`, `,`, `=`, `-`, `.`.
    Symbol(char),
}

impl Token {
    /// Whether this is the bare keyword `kw` (case-insensitive).
    pub fn is(&self, kw: &str) -> bool {
        matches!(self, Token::Word { name, quoted: false, .. } if name.eq_ignore_ascii_case(kw))
    }

    /// The SQL text of the token.
    pub fn raw(&self) -> String {
        match self {
            Token::Word { raw, .. } | Token::Literal(raw) => raw.clone(),
            Token::Symbol(c) => c.to_string(),
        }
    }

    /// The identifier this token names, if it is a word.
    pub fn ident(&self) -> Option<&str> {
        match self {
            Token::Word { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// The tokens of one statement.
pub fn tokens(stmt: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = stmt.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut inner = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated {c}quote{c}")),
                    Some(q) if q == c && chars.peek() == Some(&c) => {
                        chars.next();
                        inner.push(c);
                    }
                    Some(q) if q == c => break,
                    Some(other) => inner.push(other),
                }
            }
            let raw = format!("{c}{}{c}", inner.replace(c, &format!("{c}{c}")));
            out.push(if c == '"' {
                Token::Word {
                    name: inner,
                    quoted: true,
                    raw,
                }
            } else {
                Token::Literal(raw)
            });
        } else if is_word_char(c) {
            let mut word = String::new();
            while let Some(&w) = chars.peek().filter(|w| is_word_char(**w)) {
                word.push(w);
                chars.next();
            }
            out.push(Token::Word {
                name: word.to_lowercase(),
                quoted: false,
                raw: word,
            });
        } else {
            chars.next();
            out.push(Token::Symbol(c));
        }
    }
    Ok(out)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_only() {
        let text = "--\n-- c; omment\n--\n\n\\restrict abc;def\nSET a = off;\n\
                    COMMENT ON ROLE \"x;y\" IS 'one;\ntwo''s';\nCREATE ROLE z;\n\\unrestrict abc\n";
        let got = statements(text).expect("parses");
        let texts: Vec<&str> = got.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "SET a = off",
                "COMMENT ON ROLE \"x;y\" IS 'one;\ntwo''s'",
                "CREATE ROLE z"
            ]
        );
        assert_eq!(
            got.iter().map(|r| r.line).collect::<Vec<_>>(),
            [6, 7, 9],
            "lines as in the file"
        );
    }

    #[test]
    fn unterminated_statements_are_errors() {
        for bad in ["CREATE ROLE x", "COMMENT ON ROLE x IS 'open;\n"] {
            let e = statements(bad).expect_err(bad);
            assert_eq!(e.line, 1, "{e}");
        }
    }

    #[test]
    fn tokens_keep_names_and_literals() {
        let t = tokens(
            "ALTER ROLE \"Odd \"\"Role\"\" \" WITH LOGIN CONNECTION LIMIT -1 VALID UNTIL 'x''y'",
        )
        .expect("tokens");
        assert!(t[0].is("alter") && t[1].is("ROLE"));
        assert_eq!(t[2].ident(), Some("Odd \"Role\" "));
        assert_eq!(t[2].raw(), "\"Odd \"\"Role\"\" \"");
        assert!(!t[2].is("odd"));
        assert_eq!(t[7], Token::Symbol('-'));
        assert_eq!(t[11], Token::Literal("'x''y'".into()));
        assert_eq!(
            tokens("CREATE ROLE Abc").expect("t")[2].ident(),
            Some("abc")
        );
    }
}
