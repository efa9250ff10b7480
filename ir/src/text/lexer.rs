//! Tokens of the text form, each with its line and column (1-based, in chars).

use super::TextError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// `[A-Za-z_][A-Za-z0-9_]*`
    Ident(String),
    /// A number literal, kept as text (`3`, `-1`, `1e-5`, `-inf`, `0..3`).
    Num(String),
    /// A double-quoted string, unescaped.
    Str(String),
    /// `%name` or `%"name"`, with the optional `#k` that tells apart values sharing a name.
    Value(String, u32),
    /// `@name` or `@"name"`: a node's name.
    At(String),
    Punct(char),
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Num(s) => format!("number `{s}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Value(s, _) => format!("value `%{s}`"),
            Tok::At(s) => format!("node name `@{s}`"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of input".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

/// Characters of a bare value or node name. A `:` belongs to the name only when
/// another name character follows, so `%x:0` is one name and `%x: f32[]` is not.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')
}

/// Whether a value or node name prints bare after `%` or `@`.
pub(crate) fn is_bare_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char) && !s.ends_with(':')
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next char.
    pos: usize,
    line: usize,
    col: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Consumes `n` bytes that hold no escape, keeping line and column right.
    fn skip_plain(&mut self, n: usize) -> &str {
        let chunk = self.src.get(self.pos..self.pos + n).unwrap_or_default();
        self.pos += chunk.len();
        match chunk.rfind('\n') {
            Some(i) => {
                self.line += chunk.bytes().filter(|&b| b == b'\n').count();
                self.col = chunk[i + 1..].chars().count() + 1;
            }
            None => self.col += chunk.chars().count(),
        }
        chunk
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, line: usize, col: usize, msg: impl Into<String>) -> TextError {
        TextError {
            line,
            col,
            msg: msg.into(),
        }
    }

    fn string(&mut self) -> Result<String, TextError> {
        let (line, col) = (self.line, self.col);
        self.bump(); // opening quote
        let mut s = String::new();
        loop {
            // Long runs (hex weights) are copied whole rather than char by char.
            let plain = self
                .rest()
                .bytes()
                .position(|b| b == b'"' || b == b'\\')
                .unwrap_or(self.rest().len());
            s.push_str(self.skip_plain(plain));
            let Some(c) = self.bump() else {
                return Err(self.err(line, col, "unterminated string"));
            };
            match c {
                '"' => return Ok(s),
                '\\' => {
                    let (el, ec) = (self.line, self.col - 1);
                    match self.bump() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some('u') => {
                            if self.bump() != Some('{') {
                                return Err(self.err(el, ec, "expected `{` after `\\u`"));
                            }
                            let mut hex = String::new();
                            while let Some(c) = self.bump() {
                                if c == '}' {
                                    break;
                                }
                                hex.push(c);
                                if hex.len() > 6 {
                                    break;
                                }
                            }
                            let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                            match ch {
                                Some(ch) => s.push(ch),
                                None => return Err(self.err(el, ec, "invalid `\\u{...}` escape")),
                            }
                        }
                        _ => return Err(self.err(el, ec, "unknown escape in string")),
                    }
                }
                c => s.push(c),
            }
        }
    }

    fn name(&mut self) -> Result<String, TextError> {
        if self.peek() == Some('"') {
            return self.string();
        }
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if !is_name_char(c) {
                break;
            }
            if c == ':' && !self.rest().chars().nth(1).is_some_and(is_name_char) {
                break;
            }
            s.push(c);
            self.bump();
        }
        if s.is_empty() {
            return Err(self.err(self.line, self.col, "expected a name (bare or quoted)"));
        }
        Ok(s)
    }

    fn number(&mut self) -> String {
        let mut s = String::new();
        if self.peek() == Some('-') {
            s.push('-');
            self.bump();
        }
        while let Some(c) = self.peek() {
            let exp_sign = matches!(c, '+' | '-') && matches!(s.chars().last(), Some('e' | 'E'));
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || exp_sign) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }
}

/// Splits `src` into tokens, ending with `Tok::Eof`. `//` starts a comment.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, TextError> {
    let mut lx = Lexer {
        src,
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut out = vec![];
    loop {
        let (line, col) = (lx.line, lx.col);
        let Some(c) = lx.peek() else {
            out.push(Token {
                tok: Tok::Eof,
                line,
                col,
            });
            return Ok(out);
        };
        let tok = match c {
            c if c.is_whitespace() => {
                lx.bump();
                continue;
            }
            '/' => {
                lx.bump();
                if lx.peek() != Some('/') {
                    return Err(lx.err(line, col, "unexpected `/` (comments start with `//`)"));
                }
                while lx.peek().is_some_and(|c| c != '\n') {
                    lx.bump();
                }
                continue;
            }
            '"' => Tok::Str(lx.string()?),
            '%' => {
                lx.bump();
                let name = lx.name()?;
                let mut k = 0u32;
                if lx.peek() == Some('#') {
                    lx.bump();
                    let (l, c) = (lx.line, lx.col);
                    let digits = lx.number();
                    k = digits
                        .parse()
                        .map_err(|_| lx.err(l, c, "expected a number after `#`"))?;
                }
                Tok::Value(name, k)
            }
            '@' => {
                lx.bump();
                Tok::At(lx.name()?)
            }
            c if c.is_ascii_digit() || c == '-' => {
                let s = lx.number();
                if s == "-" {
                    return Err(lx.err(line, col, "unexpected `-`"));
                }
                Tok::Num(s)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(c) = lx.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    s.push(c);
                    lx.bump();
                }
                Tok::Ident(s)
            }
            '(' | ')' | '{' | '}' | '[' | ']' | ',' | ':' | '=' | '<' | '>' => {
                lx.bump();
                Tok::Punct(c)
            }
            other => return Err(lx.err(line, col, format!("unexpected character {other:?}"))),
        };
        out.push(Token { tok, line, col });
    }
}
