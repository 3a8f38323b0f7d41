//! Tokens of RocketMQ's SQL92 selector (SelectorParser.jj's TOKEN rules).
//!
//! The lexer is lazy: the parser pulls tokens one at a time (with up to two
//! of look-ahead), as JavaCC's generated token manager does. This matters
//! for fidelity: RocketMQ's grammar does not end with `<EOF>`, so text after
//! a complete expression is never examined beyond the one token of
//! look-ahead that ended it (`a = 1 b` is accepted as `a = 1`).
//!
//! Rules, as in the grammar: keywords and identifiers are matched without
//! regard to case; the longest match wins and, on a tie, a keyword beats an
//! identifier; `--` comments need a line end, `/* */` comments may span
//! lines; a string literal is `'…'` with `''` standing for one quote.

use std::collections::VecDeque;

use super::SelectorError;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Not,
    And,
    Or,
    Between,
    In,
    True,
    False,
    Null,
    Is,
    /// `0` or `[1-9][0-9]*` with an optional `l`/`L`, as written.
    Decimal(String),
    /// `5.5`, `5.`, `.5`, `5E10`, `5.5e-3`, as written.
    Float(String),
    /// The decoded value of a string literal (`''` already folded).
    Str(String),
    Ident(String),
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Eof,
}

impl Token {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Token::Not => "NOT".into(),
            Token::And => "AND".into(),
            Token::Or => "OR".into(),
            Token::Between => "BETWEEN".into(),
            Token::In => "IN".into(),
            Token::True => "TRUE".into(),
            Token::False => "FALSE".into(),
            Token::Null => "NULL".into(),
            Token::Is => "IS".into(),
            Token::Decimal(s) | Token::Float(s) => format!("number {s}"),
            Token::Str(s) => format!("string '{}'", s.replace('\'', "''")),
            Token::Ident(s) => format!("property {s}"),
            Token::Eq => "'='".into(),
            Token::Ne => "'<>'".into(),
            Token::Gt => "'>'".into(),
            Token::Ge => "'>='".into(),
            Token::Lt => "'<'".into(),
            Token::Le => "'<='".into(),
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::Comma => "','".into(),
            Token::Plus => "'+'".into(),
            Token::Minus => "'-'".into(),
            Token::Eof => "end of expression".into(),
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub token: Token,
    /// Byte offset into the expression.
    pub at: usize,
}

/// The lazy token stream over one expression.
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    ahead: VecDeque<Spanned>,
}

const KEYWORDS: &[(&str, Token)] = &[
    ("NOT", Token::Not),
    ("AND", Token::And),
    ("OR", Token::Or),
    ("BETWEEN", Token::Between),
    ("IN", Token::In),
    ("TRUE", Token::True),
    ("FALSE", Token::False),
    ("NULL", Token::Null),
    ("IS", Token::Is),
];

fn is_id_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$'
}

fn is_id_part(b: u8) -> bool {
    is_id_start(b) || b.is_ascii_digit()
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            ahead: VecDeque::new(),
        }
    }

    /// The expression text (for error positions).
    pub fn source(&self) -> &'a str {
        self.src
    }

    /// The `n`-th token ahead (0 = the next one), lexing as far as needed.
    pub fn peek(&mut self, n: usize) -> Result<&Spanned, SelectorError> {
        while self.ahead.len() <= n {
            let t = self.scan()?;
            self.ahead.push_back(t);
        }
        Ok(&self.ahead[n])
    }

    /// Consumes the next token.
    pub fn next_token(&mut self) -> Result<Spanned, SelectorError> {
        self.peek(0)?;
        Ok(self.ahead.pop_front().unwrap_or(Spanned {
            token: Token::Eof,
            at: self.src.len(),
        }))
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.bytes().get(i).copied()
    }

    /// Skips white space and comments.
    fn skip_ignored(&mut self) -> Result<(), SelectorError> {
        loop {
            match self.at(self.pos) {
                Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') => self.pos += 1,
                Some(b'-') if self.at(self.pos + 1) == Some(b'-') => {
                    // A line comment only counts when a line end follows;
                    // otherwise `-` is the longest match (JavaCC).
                    let rest = &self.src[self.pos..];
                    match rest.find(['\n', '\r']) {
                        Some(end) => self.pos += end + 1,
                        None => return Ok(()),
                    }
                }
                Some(b'/') if self.at(self.pos + 1) == Some(b'*') => {
                    let rest = &self.src[self.pos + 2..];
                    match rest.find("*/") {
                        Some(end) => self.pos += 2 + end + 2,
                        None => {
                            return Err(SelectorError::at(
                                self.src,
                                self.pos,
                                "unterminated comment",
                            ))
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn scan(&mut self) -> Result<Spanned, SelectorError> {
        self.skip_ignored()?;
        let start = self.pos;
        let Some(b) = self.at(start) else {
            return Ok(Spanned {
                token: Token::Eof,
                at: start,
            });
        };
        let token = match b {
            b'=' => self.single(Token::Eq),
            b'(' => self.single(Token::LParen),
            b')' => self.single(Token::RParen),
            b',' => self.single(Token::Comma),
            b'+' => self.single(Token::Plus),
            b'-' => self.single(Token::Minus),
            b'<' => match self.at(start + 1) {
                Some(b'>') => self.double(Token::Ne),
                Some(b'=') => self.double(Token::Le),
                _ => self.single(Token::Lt),
            },
            b'>' => match self.at(start + 1) {
                Some(b'=') => self.double(Token::Ge),
                _ => self.single(Token::Gt),
            },
            b'\'' => self.string()?,
            b'0'..=b'9' | b'.' => self.number()?,
            b if is_id_start(b) => {
                let mut end = start + 1;
                while self.at(end).is_some_and(is_id_part) {
                    end += 1;
                }
                self.pos = end;
                let word = &self.src[start..end];
                KEYWORDS
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(word))
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| Token::Ident(word.to_string()))
            }
            _ => {
                let c = self.src[start..].chars().next().unwrap_or('?');
                return Err(SelectorError::at(
                    self.src,
                    start,
                    format!("unexpected character {c:?}"),
                ));
            }
        };
        Ok(Spanned { token, at: start })
    }

    fn single(&mut self, t: Token) -> Token {
        self.pos += 1;
        t
    }

    fn double(&mut self, t: Token) -> Token {
        self.pos += 2;
        t
    }

    fn string(&mut self) -> Result<Token, SelectorError> {
        let start = self.pos;
        let mut value = String::new();
        let mut i = start + 1;
        loop {
            let rest = &self.src[i..];
            let Some(q) = rest.find('\'') else {
                return Err(SelectorError::at(
                    self.src,
                    start,
                    "unterminated string literal",
                ));
            };
            value.push_str(&rest[..q]);
            i += q + 1;
            if self.at(i) == Some(b'\'') {
                value.push('\'');
                i += 1;
            } else {
                break;
            }
        }
        self.pos = i;
        Ok(Token::Str(value))
    }

    /// Length of a run of ASCII digits starting at `i`.
    fn digits(&self, i: usize) -> usize {
        self.bytes()[i.min(self.src.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    }

    /// Length of an exponent (`E`, optional sign, digits) at `i`, or 0.
    fn exponent(&self, i: usize) -> usize {
        if !matches!(self.at(i), Some(b'e' | b'E')) {
            return 0;
        }
        let sign = usize::from(matches!(self.at(i + 1), Some(b'+' | b'-')));
        let d = self.digits(i + 1 + sign);
        if d == 0 {
            0
        } else {
            1 + sign + d
        }
    }

    /// DECIMAL_LITERAL or FLOATING_POINT_LITERAL, whichever match is longer.
    fn number(&mut self) -> Result<Token, SelectorError> {
        let start = self.pos;
        let int_len = self.digits(start);
        let float_len = if int_len == 0 {
            // ".5", ".5E10"
            let frac = self.digits(start + 1);
            if frac == 0 {
                0
            } else {
                1 + frac + self.exponent(start + 1 + frac)
            }
        } else if self.at(start + int_len) == Some(b'.') {
            // "5.", "5.5", "5.5E10", "5.E10"
            let frac = self.digits(start + int_len + 1);
            let after = start + int_len + 1 + frac;
            int_len + 1 + frac + self.exponent(after)
        } else {
            // "5E10"
            let e = self.exponent(start + int_len);
            if e == 0 {
                0
            } else {
                int_len + e
            }
        };
        let decimal_len = match self.at(start) {
            Some(b'0') => 1,
            Some(b'1'..=b'9') => {
                int_len + usize::from(matches!(self.at(start + int_len), Some(b'l' | b'L')))
            }
            _ => 0,
        };
        if float_len == 0 && decimal_len == 0 {
            return Err(SelectorError::at(
                self.src,
                start,
                "unexpected character '.'",
            ));
        }
        if float_len > decimal_len {
            self.pos = start + float_len;
            Ok(Token::Float(self.src[start..self.pos].to_string()))
        } else {
            self.pos = start + decimal_len;
            Ok(Token::Decimal(self.src[start..self.pos].to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(s: &str) -> Vec<Token> {
        let mut l = Lexer::new(s);
        let mut out = Vec::new();
        loop {
            let t = l.next_token().unwrap().token;
            if t == Token::Eof {
                return out;
            }
            out.push(t);
        }
    }

    #[test]
    fn keywords_ignore_case_identifiers_keep_it() {
        assert_eq!(
            tokens("not And oR between In true FALSE Null iS"),
            vec![
                Token::Not,
                Token::And,
                Token::Or,
                Token::Between,
                Token::In,
                Token::True,
                Token::False,
                Token::Null,
                Token::Is,
            ]
        );
        assert_eq!(
            tokens("Inx $a _b9 TAGS"),
            vec![
                Token::Ident("Inx".into()),
                Token::Ident("$a".into()),
                Token::Ident("_b9".into()),
                Token::Ident("TAGS".into()),
            ]
        );
    }

    #[test]
    fn numbers_take_the_longest_match() {
        let d = |s: &str| Token::Decimal(s.into());
        let f = |s: &str| Token::Float(s.into());
        assert_eq!(
            tokens("0 10 10L 7l"),
            vec![d("0"), d("10"), d("10L"), d("7l")]
        );
        assert_eq!(
            tokens("5.5 5. .5 5E10 5e-3 5.E+2 .5e1"),
            vec![
                f("5.5"),
                f("5."),
                f(".5"),
                f("5E10"),
                f("5e-3"),
                f("5.E+2"),
                f(".5e1")
            ]
        );
        // "007" is three tokens, "0L" is 0 then an identifier.
        assert_eq!(tokens("007"), vec![d("0"), d("0"), d("7")]);
        assert_eq!(tokens("0L"), vec![d("0"), Token::Ident("L".into())]);
        assert_eq!(tokens("00.5"), vec![f("00.5")]);
        // An incomplete exponent is not part of the number.
        assert_eq!(tokens("5E"), vec![d("5"), Token::Ident("E".into())]);
        assert!(Lexer::new(".").next_token().is_err());
    }

    #[test]
    fn strings_operators_and_comments() {
        assert_eq!(
            tokens("'it''s' '' 'a\nb'"),
            vec![
                Token::Str("it's".into()),
                Token::Str("".into()),
                Token::Str("a\nb".into())
            ]
        );
        assert_eq!(
            tokens("= <> > >= < <= ( ) , + -"),
            vec![
                Token::Eq,
                Token::Ne,
                Token::Gt,
                Token::Ge,
                Token::Lt,
                Token::Le,
                Token::LParen,
                Token::RParen,
                Token::Comma,
                Token::Plus,
                Token::Minus
            ]
        );
        assert_eq!(
            tokens("a -- note\n/* x\n y */ b"),
            vec![Token::Ident("a".into()), Token::Ident("b".into())]
        );
        // `--` without a line end is two minus signs.
        assert_eq!(tokens("--"), vec![Token::Minus, Token::Minus]);
        let e = Lexer::new("'abc").next_token().unwrap_err();
        assert!(e.to_string().contains("unterminated string"), "{e}");
        let e = Lexer::new("a != 1").peek(1).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("unexpected character '!'"), "{e}");
        assert!(e.to_string().contains("column 3"), "{e}");
    }
}
