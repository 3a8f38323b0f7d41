//! The compiled form of a selector: an expression tree shaped like the one
//! RocketMQ's parser builds, so that evaluation can follow RocketMQ's
//! expression classes node for node (`<>` is NOT of `=`, `BETWEEN` is two
//! comparisons joined by AND, and so on).

use std::fmt;

/// A value during evaluation. Java's types as RocketMQ's evaluator sees
/// them: decimal literals are `Integer` when they fit 32 bits and `Long`
/// otherwise, floating literals `Double`, property values `String`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(true) => f.write_str("TRUE"),
            Value::Bool(false) => f.write_str("FALSE"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Long(l) => write!(f, "{l}"),
            Value::Double(d) => write!(f, "{d:?}"),
            Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

/// `>`, `>=`, `<`, `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Ordering {
    /// Whether a Java `compareTo` answer satisfies the operator.
    pub fn holds(self, answer: i32) -> bool {
        match self {
            Ordering::Gt => answer > 0,
            Ordering::Ge => answer >= 0,
            Ordering::Lt => answer < 0,
            Ordering::Le => answer <= 0,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Ordering::Gt => ">",
            Ordering::Ge => ">=",
            Ordering::Lt => "<",
            Ordering::Le => "<=",
        }
    }
}

/// One node.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A message property by name (case-sensitive).
    Property(String),
    /// A literal; `None` is `NULL`.
    Literal(Option<Value>),
    /// Unary minus (not folded into literals, as in RocketMQ).
    Negate(Box<Expr>),
    /// A property used where a boolean is required (`WHERE a AND …`).
    BoolCast(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `=`; also `IS NULL` (compared with a NULL literal).
    Equal(Box<Expr>, Box<Expr>),
    Compare(Ordering, Box<Expr>, Box<Expr>),
    /// `prop IN ('a', …)` / `NOT IN`.
    In {
        property: String,
        values: Vec<String>,
        negated: bool,
    },
}

impl Expr {
    /// RocketMQ's `BooleanExpression`: what may stand where a condition is
    /// required (besides a bare property, which gets a [`Expr::BoolCast`]).
    pub fn is_boolean(&self) -> bool {
        match self {
            Expr::Literal(v) => matches!(v, None | Some(Value::Bool(_))),
            Expr::Property(_) | Expr::Negate(_) => false,
            Expr::BoolCast(_)
            | Expr::Not(_)
            | Expr::And(..)
            | Expr::Or(..)
            | Expr::Equal(..)
            | Expr::Compare(..)
            | Expr::In { .. } => true,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Property(p) => f.write_str(p),
            Expr::Literal(None) => f.write_str("NULL"),
            Expr::Literal(Some(v)) => write!(f, "{v}"),
            Expr::Negate(e) => write!(f, "(- {e})"),
            Expr::BoolCast(e) => write!(f, "{e}"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
            Expr::And(l, r) => write!(f, "({l} AND {r})"),
            Expr::Or(l, r) => write!(f, "({l} OR {r})"),
            Expr::Equal(l, r) => write!(f, "({l} = {r})"),
            Expr::Compare(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            Expr::In {
                property,
                values,
                negated,
            } => {
                let list: Vec<String> = values
                    .iter()
                    .map(|v| Value::Str(v.clone()).to_string())
                    .collect();
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{property} {not}IN ({})", list.join(", "))
            }
        }
    }
}
