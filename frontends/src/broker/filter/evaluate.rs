//! Evaluation of a compiled selector against a message's properties, with
//! RocketMQ's semantics (ComparisonExpression, LogicExpression,
//! UnaryExpression, UnaryInExpression; string conversion switched on as
//! SelectorParser does):
//!
//! * Three-valued logic: a missing property is NULL; a comparison with NULL
//!   is NULL; `NOT NULL` is NULL; `AND`/`OR` treat NULL as unknown. Only a
//!   result of TRUE selects a message.
//! * `=` is special: NULL = NULL is TRUE (so `a = b` holds when both are
//!   missing), value = NULL is FALSE, NULL = value is NULL.
//! * Property values are strings. Compared with a number they are parsed
//!   as the number's Java type (`Integer.valueOf`, `Long.valueOf`,
//!   `Double.valueOf`); with a boolean via `Boolean.valueOf`. Two strings
//!   under `>`, `>=`, `<`, `<=` are both parsed as doubles.
//! * A failed conversion is an evaluation error, as the Java exception is:
//!   it aborts the whole evaluation and the message is not selected, even
//!   if another branch of an OR would have been true.

use std::fmt;

use super::ast::{Expr, Value};

/// A value during evaluation, borrowing from the expression tree (literals)
/// or from the message's properties string (property values): evaluating
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(&'a str),
}

impl<'a> From<&'a Value> for Val<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::Int(i) => Val::Int(*i),
            Value::Long(l) => Val::Long(*l),
            Value::Double(d) => Val::Double(*d),
            Value::Str(s) => Val::Str(s),
        }
    }
}

impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Bool(true) => f.write_str("TRUE"),
            Val::Bool(false) => f.write_str("FALSE"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Long(l) => write!(f, "{l}"),
            Val::Double(d) => write!(f, "{d:?}"),
            Val::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

/// An evaluation failure (a Java exception in RocketMQ's evaluator). The
/// message being tested is not selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where property values come from: a RocketMQ properties string
/// (`k\x01v\x02…`), read the way `MessageDecoder.string2messageProperties`
/// does — key and value must be non-empty, the last duplicate wins.
pub struct Properties<'a>(pub &'a str);

impl<'a> Properties<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let mut found = None;
        for seg in self.0.split('\u{2}') {
            if let Some((k, v)) = seg.split_once('\u{1}') {
                if k == name && !v.is_empty() {
                    found = Some(v);
                }
            }
        }
        found
    }
}

/// Evaluates an expression: `Ok(None)` is NULL.
pub fn evaluate<'a>(e: &'a Expr, props: &Properties<'a>) -> Result<Option<Val<'a>>, EvalError> {
    Ok(match e {
        Expr::Property(name) => props.get(name).map(Val::Str),
        Expr::Literal(v) => v.as_ref().map(Val::from),
        Expr::Negate(inner) => match evaluate(inner, props)? {
            Some(Val::Int(i)) => Some(Val::Int(i.wrapping_neg())),
            Some(Val::Long(l)) => Some(Val::Long(l.wrapping_neg())),
            Some(Val::Double(d)) => Some(Val::Double(-d)),
            _ => None,
        },
        Expr::BoolCast(inner) => match evaluate(inner, props)? {
            None => None,
            Some(Val::Bool(b)) => Some(Val::Bool(b)),
            Some(_) => Some(Val::Bool(false)),
        },
        Expr::Not(inner) => truth(inner, props)?.map(|b| Val::Bool(!b)),
        Expr::And(l, r) => {
            let lv = truth(l, props)?;
            if lv == Some(false) {
                return Ok(Some(Val::Bool(false)));
            }
            let rv = truth(r, props)?;
            if rv == Some(false) {
                return Ok(Some(Val::Bool(false)));
            }
            lv.and(rv).map(|_| Val::Bool(true))
        }
        Expr::Or(l, r) => {
            let lv = truth(l, props)?;
            if lv == Some(true) {
                return Ok(Some(Val::Bool(true)));
            }
            let rv = truth(r, props)?;
            if rv == Some(true) {
                return Ok(Some(Val::Bool(true)));
            }
            lv.and(rv).map(|_| Val::Bool(false))
        }
        Expr::Equal(l, r) => {
            let lv = evaluate(l, props)?;
            let rv = evaluate(r, props)?;
            match (lv, rv) {
                (None, None) => Some(Val::Bool(true)),
                (None, Some(_)) => None,
                (Some(_), None) => Some(Val::Bool(false)),
                (Some(a), Some(b)) => {
                    Some(Val::Bool(java_equals(a, b) || java_compare(a, b)? == 0))
                }
            }
        }
        Expr::Compare(op, l, r) => {
            let Some(lv) = evaluate(l, props)? else {
                return Ok(None);
            };
            let Some(rv) = evaluate(r, props)? else {
                return Ok(None);
            };
            let answer = match (lv, rv) {
                // Ordering strings is not allowed; both are read as doubles.
                (Val::Str(a), Val::Str(b)) => match (java_parse_double(a), java_parse_double(b)) {
                    (Some(x), Some(y)) => compare_doubles(x, y),
                    _ => {
                        return Err(EvalError(format!(
                        "it is illegal to compare strings by '>=', '>', '<', '<=': {lv} and {rv}"
                    )))
                    }
                },
                _ => java_compare(lv, rv)?,
            };
            Some(Val::Bool(op.holds(answer)))
        }
        Expr::In {
            property,
            values,
            negated,
        } => props
            .get(property)
            .map(|v| Val::Bool(values.iter().any(|x| x == v) ^ negated)),
    })
}

/// A boolean sub-expression's value (operands of NOT/AND/OR are boolean
/// by construction; anything else counts as NULL).
fn truth<'a>(e: &'a Expr, props: &Properties<'a>) -> Result<Option<bool>, EvalError> {
    Ok(match evaluate(e, props)? {
        Some(Val::Bool(b)) => Some(b),
        _ => None,
    })
}

/// Java `equals` of two values (same type and value; doubles by bits, as
/// `Double.equals`).
fn java_equals(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Double(x), Val::Double(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

/// `Double.compare`.
fn compare_doubles(x: f64, y: f64) -> i32 {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => -1,
        (false, false) => x.total_cmp(&y) as i32,
    }
}

fn num_err(s: &str, ty: &str) -> EvalError {
    EvalError(format!("'{s}' is not a valid {ty}"))
}

fn java_int(s: &str) -> Result<i32, EvalError> {
    s.parse().map_err(|_| num_err(s, "int"))
}

fn java_long(s: &str) -> Result<i64, EvalError> {
    s.parse().map_err(|_| num_err(s, "long"))
}

fn java_double(s: &str) -> Result<f64, EvalError> {
    java_parse_double(s).ok_or_else(|| num_err(s, "double"))
}

/// `Boolean.valueOf(String)`.
fn java_bool(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}

/// `Double.valueOf(String)` for decimal text: surrounding characters
/// `<= ' '` ignored, optional sign, `NaN`, `Infinity`, digits with optional
/// point and exponent, optional `f`/`F`/`d`/`D` suffix. (Java's hexadecimal
/// floating-point form is not accepted.)
pub fn java_parse_double(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c <= ' ');
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = match body {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        _ => {
            let body = body.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(body);
            let b = body.as_bytes();
            let mut i = 0;
            let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            i += int_digits;
            let mut frac_digits = 0;
            if b.get(i) == Some(&b'.') {
                i += 1;
                frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                i += frac_digits;
            }
            if int_digits + frac_digits == 0 {
                return None;
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                if exp_digits == 0 {
                    return None;
                }
                i += exp_digits;
            }
            if i != b.len() {
                return None;
            }
            body.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// RocketMQ's `ComparisonExpression.__compare` with string conversion on:
/// values of different types are converted towards each other (a string
/// is parsed as the other side's type); pairs that cannot be converted
/// (a number and a boolean) compare as -1. Conversion failures are errors.
pub fn java_compare(l: Val<'_>, r: Val<'_>) -> Result<i32, EvalError> {
    use Val::*;
    let order = |o: std::cmp::Ordering| o as i32;
    Ok(match (&l, &r) {
        (Bool(a), Bool(b)) => order(a.cmp(b)),
        (Int(a), Int(b)) => order(a.cmp(b)),
        (Long(a), Long(b)) => order(a.cmp(b)),
        (Double(a), Double(b)) => compare_doubles(*a, *b),
        (Str(a), Str(b)) => order(a.cmp(b)),
        // Java casts the Boolean to String here and fails.
        (Bool(_), Str(_)) => {
            return Err(EvalError(
                "a boolean literal cannot be compared with a property value on its right".into(),
            ))
        }
        (Int(a), Long(b)) => order(i64::from(*a).cmp(b)),
        (Long(a), Int(b)) => order(a.cmp(&i64::from(*b))),
        (Int(a), Double(b)) => compare_doubles(f64::from(*a), *b),
        (Long(a), Double(b)) => compare_doubles(*a as f64, *b),
        (Double(a), Int(b)) => compare_doubles(*a, f64::from(*b)),
        (Double(a), Long(b)) => compare_doubles(*a, *b as f64),
        (Int(a), Str(b)) => order(a.cmp(&java_int(b)?)),
        (Long(a), Str(b)) => order(a.cmp(&java_long(b)?)),
        (Double(a), Str(b)) => compare_doubles(*a, java_double(b)?),
        (Str(a), Bool(b)) => order(java_bool(a).cmp(b)),
        (Str(a), Int(b)) => order(java_int(a)?.cmp(b)),
        (Str(a), Long(b)) => order(java_long(a)?.cmp(b)),
        (Str(a), Double(b)) => compare_doubles(java_double(a)?, *b),
        (Int(_) | Long(_) | Double(_), Bool(_)) | (Bool(_), Int(_) | Long(_) | Double(_)) => -1,
    })
}
