//! Recursive-descent parser for RocketMQ's SQL92 selector grammar
//! (SelectorParser.jj), with the checks RocketMQ's expression factories
//! make while building the tree (ComparisonExpression.create*,
//! ConstantExpression.create*, SelectorParser.asBooleanExpression).
//!
//! Precedence, loosest first — note that `NOT` is a unary operator binding
//! tighter than any comparison, exactly as in RocketMQ, so `NOT a = 1`
//! means `(NOT a) = 1`; write `NOT (a = 1)`:
//!
//! ```text
//! selector   := or
//! or         := and ( OR and )*
//! and        := equality ( AND equality )*
//! equality   := comparison ( '=' comparison | '<>' comparison
//!                          | IS NULL | IS NOT NULL )*
//! comparison := unary ( ('>'|'>='|'<'|'<=') unary
//!                     | [NOT] BETWEEN unary AND unary
//!                     | [NOT] IN '(' string (',' string)* ')' )*
//! unary      := '+' unary | '-' unary | NOT unary | primary
//! primary    := literal | identifier | '(' or ')'
//! ```

use super::ast::{Expr, Ordering, Value};
use super::evaluate::java_compare;
use super::lexer::{Lexer, Token};
use super::SelectorError;

/// Parses and checks one selector.
pub fn parse(src: &str) -> Result<Expr, SelectorError> {
    let mut p = Parser {
        lex: Lexer::new(src),
        nesting: 0,
        operators: 0,
    };
    let e = p.or()?;
    // No end-of-input check: RocketMQ's grammar has none (see lexer.rs).
    as_boolean(e)
}

/// Limits that keep parsing, evaluation and dropping of a tree within a
/// thread's stack (RocketMQ's only limit is the JVM's stack): nesting of
/// parentheses and prefix operators, and binary operators in total.
const MAX_NESTING: usize = 100;
const MAX_OPERATORS: usize = 1000;

struct Parser<'a> {
    lex: Lexer<'a>,
    /// Current nesting of parentheses and prefix operators.
    nesting: usize,
    /// Binary operators so far.
    operators: usize,
}

/// RocketMQ's asBooleanExpression: a condition must be boolean; a bare
/// property is cast (true only if its value is the boolean TRUE, which a
/// string property never is).
fn as_boolean(e: Expr) -> Result<Expr, SelectorError> {
    match e {
        e if e.is_boolean() => Ok(e),
        Expr::Property(_) => Ok(Expr::BoolCast(Box::new(e))),
        e => Err(SelectorError::new(format!(
            "expression will not result in a boolean value: {e}"
        ))),
    }
}

/// Only numbers (or non-boolean expressions) may be ordered.
fn check_orderable(e: &Expr) -> Result<(), SelectorError> {
    let ok = match e {
        Expr::Literal(Some(Value::Int(_) | Value::Long(_) | Value::Double(_))) => true,
        Expr::Literal(_) => false,
        e => !e.is_boolean(),
    };
    if ok {
        Ok(())
    } else {
        Err(SelectorError::new(format!(
            "value {e} cannot be compared with '>', '>=', '<' or '<=' (numbers only)"
        )))
    }
}

fn compare(op: Ordering, l: Expr, r: Expr) -> Result<Expr, SelectorError> {
    check_orderable(&l)?;
    check_orderable(&r)?;
    Ok(Expr::Compare(op, Box::new(l), Box::new(r)))
}

/// `=`: NULL literals are refused (use IS NULL); a boolean literal on the
/// left cannot meet a non-boolean literal on the right.
fn equal(l: Expr, r: Expr) -> Result<Expr, SelectorError> {
    for e in [&l, &r] {
        if *e == Expr::Literal(None) {
            return Err(SelectorError::new(
                "NULL cannot be compared with '=' or '<>' (use IS NULL / IS NOT NULL)",
            ));
        }
    }
    if let (Expr::Literal(_), Expr::Literal(_)) = (&l, &r) {
        if l.is_boolean() && !r.is_boolean() {
            return Err(SelectorError::new(format!(
                "{l} cannot be compared with {r}"
            )));
        }
    }
    Ok(Expr::Equal(Box::new(l), Box::new(r)))
}

fn between(v: Expr, low: Expr, high: Expr, negated: bool) -> Result<Expr, SelectorError> {
    if negated {
        let lt = compare(Ordering::Lt, v.clone(), low)?;
        let gt = compare(Ordering::Gt, v, high)?;
        return Ok(Expr::Or(Box::new(lt), Box::new(gt)));
    }
    if let (Expr::Literal(lo), Expr::Literal(hi)) = (&low, &high) {
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Err(SelectorError::new(
                "illegal values of BETWEEN: the bounds cannot be NULL",
            ));
        };
        let order = java_compare(hi.into(), lo.into()).map_err(|e| {
            SelectorError::new(format!("illegal values of BETWEEN {lo} AND {hi}: {e}"))
        })?;
        if order < 0 {
            return Err(SelectorError::new(format!(
                "illegal values of BETWEEN: the low bound {lo} must be less than or equal to the high bound {hi}"
            )));
        }
    }
    let ge = compare(Ordering::Ge, v.clone(), low)?;
    let le = compare(Ordering::Le, v, high)?;
    Ok(Expr::And(Box::new(ge), Box::new(le)))
}

fn decimal(text: &str) -> Result<Expr, SelectorError> {
    let digits = text.trim_end_matches(['l', 'L']);
    let n: i64 = digits.parse().map_err(|_| {
        SelectorError::new(format!(
            "number {text} is out of range (a 64-bit signed integer)"
        ))
    })?;
    Ok(Expr::Literal(Some(match i32::try_from(n) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Long(n),
    })))
}

fn float(text: &str) -> Result<Expr, SelectorError> {
    let d: f64 = text
        .parse()
        .map_err(|_| SelectorError::new(format!("{text} is not a number")))?;
    if d.is_infinite() {
        return Err(SelectorError::new(format!(
            "{text} is greater than {:e}",
            f64::MAX
        )));
    }
    // RocketMQ refuses floating literals below Double.MIN_VALUE, which
    // includes every literal that is (or rounds to) zero.
    if d < 4.9e-324 {
        return Err(SelectorError::new(format!(
            "{text} is less than 4.9E-324 (floating literals equal to zero are refused; write 0)"
        )));
    }
    Ok(Expr::Literal(Some(Value::Double(d))))
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&Token, SelectorError> {
        Ok(&self.lex.peek(0)?.token)
    }

    fn peek2(&mut self) -> Result<&Token, SelectorError> {
        Ok(&self.lex.peek(1)?.token)
    }

    fn bump(&mut self) -> Result<Token, SelectorError> {
        Ok(self.lex.next_token()?.token)
    }

    /// An error about the next token.
    fn unexpected(&mut self, expected: &str) -> SelectorError {
        match self.lex.peek(0) {
            Ok(t) => {
                let (what, at) = (t.token.describe(), t.at);
                let e = SelectorError::at(self.lex.source(), at, format!("unexpected {what}"));
                SelectorError::new(format!("{}; expected {expected}", e.detail))
            }
            Err(e) => e,
        }
    }

    fn expect(&mut self, t: Token, expected: &str) -> Result<(), SelectorError> {
        if *self.peek()? == t {
            self.bump()?;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut l = self.and()?;
        while *self.peek()? == Token::Or {
            self.bump()?;
            let r = self.and()?;
            self.count_operator()?;
            l = Expr::Or(Box::new(as_boolean(l)?), Box::new(as_boolean(r)?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut l = self.equality()?;
        while *self.peek()? == Token::And {
            self.bump()?;
            let r = self.equality()?;
            self.count_operator()?;
            l = Expr::And(Box::new(as_boolean(l)?), Box::new(as_boolean(r)?));
        }
        Ok(l)
    }

    fn equality(&mut self) -> Result<Expr, SelectorError> {
        let mut l = self.comparison()?;
        loop {
            match self.peek()? {
                Token::Eq => {
                    self.bump()?;
                    let r = self.comparison()?;
                    self.count_operator()?;
                    l = equal(l, r)?;
                }
                Token::Ne => {
                    self.bump()?;
                    let r = self.comparison()?;
                    self.count_operator()?;
                    l = Expr::Not(Box::new(equal(l, r)?));
                }
                Token::Is => {
                    self.bump()?;
                    let negated = *self.peek()? == Token::Not;
                    if negated {
                        self.bump()?;
                    }
                    self.expect(Token::Null, "NULL after IS / IS NOT")?;
                    let is_null = Expr::Equal(Box::new(l), Box::new(Expr::Literal(None)));
                    self.count_operator()?;
                    l = if negated {
                        Expr::Not(Box::new(is_null))
                    } else {
                        is_null
                    };
                }
                _ => return Ok(l),
            }
        }
    }

    fn comparison(&mut self) -> Result<Expr, SelectorError> {
        let mut l = self.unary()?;
        loop {
            // Look two tokens ahead only after NOT, as JavaCC's LOOKAHEAD(2).
            let after_not =
                *self.peek()? == Token::Not && matches!(self.peek2()?, Token::Between | Token::In);
            let op = match self.peek()? {
                Token::Gt => Some(Ordering::Gt),
                Token::Ge => Some(Ordering::Ge),
                Token::Lt => Some(Ordering::Lt),
                Token::Le => Some(Ordering::Le),
                Token::Between | Token::In => None,
                Token::Not if after_not => None,
                Token::Not => {
                    self.bump()?;
                    return Err(self.unexpected("BETWEEN or IN after NOT"));
                }
                _ => return Ok(l),
            };
            if let Some(op) = op {
                self.bump()?;
                let r = self.unary()?;
                self.count_operator()?;
                l = compare(op, l, r)?;
                continue;
            }
            let negated = *self.peek()? == Token::Not;
            if negated {
                self.bump()?;
            }
            if self.bump()? == Token::Between {
                let low = self.unary()?;
                self.expect(Token::And, "AND between the bounds of BETWEEN")?;
                let high = self.unary()?;
                self.count_operator()?;
                l = between(l, low, high, negated)?;
            } else {
                let values = self.string_list()?;
                let Expr::Property(property) = l else {
                    return Err(SelectorError::new(format!(
                        "IN needs a property on its left, got {l}"
                    )));
                };
                self.count_operator()?;
                l = Expr::In {
                    property,
                    values,
                    negated,
                };
            }
        }
    }

    /// `'(' string (',' string)* ')'`.
    fn string_list(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect(Token::LParen, "'(' after IN")?;
        let mut out = Vec::new();
        loop {
            match self.bump_if_string()? {
                Some(s) => out.push(s),
                None => return Err(self.unexpected("a string literal in the IN list")),
            }
            match self.peek()? {
                Token::Comma => {
                    self.bump()?;
                }
                Token::RParen => {
                    self.bump()?;
                    return Ok(out);
                }
                _ => return Err(self.unexpected("',' or ')' in the IN list")),
            }
        }
    }

    fn bump_if_string(&mut self) -> Result<Option<String>, SelectorError> {
        if let Token::Str(s) = self.peek()? {
            let s = s.clone();
            self.bump()?;
            return Ok(Some(s));
        }
        Ok(None)
    }

    fn count_operator(&mut self) -> Result<(), SelectorError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(SelectorError::new(format!(
                "too many operators (more than {MAX_OPERATORS})"
            )));
        }
        Ok(())
    }

    /// Runs `f` one nesting level deeper.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SelectorError>,
    ) -> Result<T, SelectorError> {
        if self.nesting >= MAX_NESTING {
            return Err(SelectorError::new(format!(
                "expression nested too deeply (more than {MAX_NESTING} levels)"
            )));
        }
        self.nesting += 1;
        let r = f(self);
        self.nesting -= 1;
        r
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        match self.peek()? {
            Token::Plus => {
                self.bump()?;
                self.nested(Self::unary)
            }
            Token::Minus => {
                self.bump()?;
                Ok(Expr::Negate(Box::new(self.nested(Self::unary)?)))
            }
            Token::Not => {
                self.bump()?;
                let e = self.nested(Self::unary)?;
                Ok(Expr::Not(Box::new(as_boolean(e)?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, SelectorError> {
        let e = match self.peek()?.clone() {
            Token::Str(s) => Expr::Literal(Some(Value::Str(s))),
            Token::Decimal(t) => decimal(&t)?,
            Token::Float(t) => float(&t)?,
            Token::True => Expr::Literal(Some(Value::Bool(true))),
            Token::False => Expr::Literal(Some(Value::Bool(false))),
            Token::Null => Expr::Literal(None),
            Token::Ident(name) => Expr::Property(name),
            Token::LParen => {
                self.bump()?;
                let e = self.nested(Self::or)?;
                self.expect(Token::RParen, "')'")?;
                return Ok(e);
            }
            _ => return Err(self.unexpected("a property, a literal or '('")),
        };
        self.bump()?;
        Ok(e)
    }
}
