//! Parser and evaluator tests: every operator, precedence, NULL handling,
//! Java conversions, and refused expressions with their messages.

use super::*;

/// A properties string from pairs.
fn props(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}\u{1}{v}"))
        .collect::<Vec<_>>()
        .join("\u{2}")
}

fn sel(expr: &str) -> Selector {
    Selector::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Whether `expr` selects a message with these properties.
fn m(expr: &str, pairs: &[(&str, &str)]) -> bool {
    sel(expr).matches(&props(pairs))
}

/// The compile error of `expr`.
fn err(expr: &str) -> String {
    match Selector::compile(expr) {
        Ok(s) => panic!("{expr} compiled to {}", s.tree()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn comparisons_on_numbers() {
    let a5 = [("a", "5")];
    assert!(m("a = 5", &a5));
    assert!(!m("a = 6", &a5));
    assert!(m("a <> 6", &a5));
    assert!(!m("a <> 5", &a5));
    assert!(m("a > 4", &a5));
    assert!(!m("a > 5", &a5));
    assert!(m("a >= 5", &a5));
    assert!(!m("a >= 6", &a5));
    assert!(m("a < 6", &a5));
    assert!(!m("a < 5", &a5));
    assert!(m("a <= 5", &a5));
    assert!(!m("a <= 4", &a5));
    // Literal on the left.
    assert!(m("4 < a", &a5));
    assert!(m("5 = a", &a5));
    // Doubles and longs.
    assert!(m("a > 4.5", &a5));
    assert!(m("a < 5.5e0", &a5));
    assert!(m("a = 5.0", &a5));
    assert!(m("a = 5L", &a5));
    assert!(m("a < 3000000000", &a5));
    assert!(m("b = 3000000000", &[("b", "3000000000")]));
    assert!(m("b > 2999999999.5", &[("b", "3000000000")]));
    // Unary signs.
    assert!(m("a > -5", &[("a", "-3")]));
    assert!(m("a = +5", &a5));
    assert!(m("a = - -5", &a5));
    assert!(m("a > -2.5", &[("a", "-1.5")]));
}

#[test]
fn java_conversions_of_property_strings() {
    // Against an int literal the property is read with Integer.valueOf, so
    // "1.0" and values beyond 32 bits are conversion errors (no match).
    assert!(!m("a = 1", &[("a", "1.0")]));
    assert!(!m("a > 1", &[("a", "3000000000")]));
    assert!(m("a = 1.0", &[("a", "1")]));
    assert!(m("a = 1", &[("a", "+1")]));
    assert!(!m("a = 1", &[("a", " 1")]));
    // Double.valueOf ignores surrounding blanks and takes suffixes.
    assert!(m("a = 1.5", &[("a", " 1.5 ")]));
    assert!(m("a = 1.5", &[("a", "1.5f")]));
    assert!(m("a > 1.5", &[("a", "Infinity")]));
    // Two properties under an ordering are both read as doubles: numeric,
    // not lexicographic order.
    assert!(m("a > b", &[("a", "10"), ("b", "9")]));
    assert!(!m("a > b", &[("a", "abc"), ("b", "9")]));
    // Equality of two strings is string equality.
    assert!(m("a = b", &[("a", "x"), ("b", "x")]));
    assert!(!m("a = b", &[("a", "1"), ("b", "1.0")]));
}

#[test]
fn strings_and_escaping() {
    assert!(m("name = 'bob'", &[("name", "bob")]));
    assert!(!m("name = 'Bob'", &[("name", "bob")]));
    assert!(m("name <> 'Bob'", &[("name", "bob")]));
    assert!(m("name = 'it''s'", &[("name", "it's")]));
    assert!(m("name = ''''", &[("name", "'")]));
    assert!(m("name = 'a b  c'", &[("name", "a b  c")]));
    assert!(m("name = 'héllo'", &[("name", "héllo")]));
    // A string literal against a number-like property stays a string.
    assert!(!m("a = '5'", &[("a", "5.0")]));
    assert!(m("a = '5'", &[("a", "5")]));
}

#[test]
fn tags_and_other_properties() {
    let msg = [("TAGS", "TagA"), ("KEYS", "k1"), ("region", "eu")];
    assert!(m("TAGS = 'TagA'", &msg));
    assert!(m("TAGS IN ('TagA', 'TagB') AND region = 'eu'", &msg));
    assert!(
        !m("tags = 'TagA'", &msg),
        "property names are case-sensitive"
    );
    assert!(m("KEYS = 'k1'", &msg));
}

#[test]
fn between_and_not_between() {
    assert!(m("a BETWEEN 1 AND 5", &[("a", "1")]));
    assert!(m("a BETWEEN 1 AND 5", &[("a", "5")]));
    assert!(!m("a BETWEEN 1 AND 5", &[("a", "6")]));
    assert!(!m("a BETWEEN 1 AND 5", &[("a", "0")]));
    assert!(m("a BETWEEN 1.5 AND 2.5", &[("a", "2")]));
    assert!(m("a between 3 and 3", &[("a", "3")]));
    assert!(m("a NOT BETWEEN 1 AND 5", &[("a", "6")]));
    assert!(m("a NOT BETWEEN 1 AND 5", &[("a", "0")]));
    assert!(!m("a NOT BETWEEN 1 AND 5", &[("a", "3")]));
    assert!(
        !m("a NOT BETWEEN 1 AND 5", &[]),
        "NULL is neither in nor out"
    );
    // BETWEEN's AND binds to BETWEEN; the next AND is logical.
    assert!(m(
        "a BETWEEN 1 AND 5 AND b = 'x'",
        &[("a", "2"), ("b", "x")]
    ));
    assert!(!m(
        "a BETWEEN 1 AND 5 AND b = 'x'",
        &[("a", "2"), ("b", "y")]
    ));
    // Bounds from properties.
    assert!(m(
        "a BETWEEN lo AND hi",
        &[("a", "2"), ("lo", "1"), ("hi", "3")]
    ));
}

#[test]
fn in_and_not_in() {
    let mm = |e: &str, v: &str| m(e, &[("t", v)]);
    assert!(mm("t IN ('a', 'b', 'c')", "b"));
    assert!(!mm("t IN ('a', 'b', 'c')", "d"));
    assert!(mm("t IN ('a')", "a"));
    assert!(mm("t NOT IN ('a', 'b')", "c"));
    assert!(!mm("t NOT IN ('a', 'b')", "a"));
    assert!(mm("t IN ('a','b','c','d','e','f')", "f"));
    assert!(mm("(t) in ('it''s')", "it's"));
    // IN compares strings: no numeric conversion.
    assert!(!mm("t IN ('1')", "1.0"));
    // Missing property: NULL either way.
    assert!(!m("t IN ('a')", &[]));
    assert!(!m("t NOT IN ('a')", &[]));
}

#[test]
fn is_null_and_is_not_null() {
    assert!(m("a IS NULL", &[]));
    assert!(!m("a IS NULL", &[("a", "1")]));
    assert!(m("a IS NOT NULL", &[("a", "1")]));
    assert!(!m("a IS NOT NULL", &[]));
    assert!(m("a is not null and b is null", &[("a", "1")]));
    // An empty value is not a value (RocketMQ's property decoding).
    assert!(m("a IS NULL", &[("a", "")]));
}

#[test]
fn null_semantics() {
    let none: [(&str, &str); 0] = [];
    // Comparisons with a missing property are NULL, hence no match, and
    // NOT of NULL is still NULL.
    for e in [
        "a = 1",
        "a <> 1",
        "a > 1",
        "a >= 1",
        "a < 1",
        "a <= 1",
        "NOT (a = 1)",
        "NOT (a > 1)",
        "a = 'x'",
        "a <> 'x'",
        "-a = 1",
    ] {
        assert!(!m(e, &none), "{e}");
    }
    // Three-valued AND / OR.
    let b2 = [("b", "2")];
    assert!(m("a = 1 OR b = 2", &b2));
    assert!(m("b = 2 OR a = 1", &b2));
    assert!(!m("a = 1 AND b = 2", &b2));
    assert!(
        !m("NOT (a = 1 AND b = 2)", &b2),
        "NOT (NULL AND TRUE) is NULL"
    );
    assert!(m("NOT (a = 1 AND b = 3)", &b2), "NULL AND FALSE is FALSE");
    assert!(!m("NOT (a = 1 OR b = 3)", &b2), "NULL OR FALSE is NULL");
    // `=` between two missing properties is TRUE in RocketMQ.
    assert!(m("a = b", &none));
    assert!(!m("a = b", &[("a", "1")]));
    assert!(!m("a = b", &[("b", "1")]));
    // NULL literal as a whole selector.
    assert!(!m("NULL", &none));
}

#[test]
fn evaluation_errors_abort_the_whole_expression() {
    let p = [("a", "abc"), ("b", "x")];
    // Integer.valueOf("abc") throws: no match even though b = 'x'.
    assert!(!m("a = 1 OR b = 'x'", &p));
    assert!(!m("a > 1 OR b = 'x'", &p));
    // With the true branch first, OR never evaluates the failing side.
    assert!(m("b = 'x' OR a = 1", &p));
    let s = sel("a = 1 OR b = 'x'");
    assert!(s.evaluate(&props(&p)).is_err());
}

#[test]
fn booleans() {
    assert!(m("TRUE", &[]));
    assert!(!m("FALSE", &[]));
    assert!(m("NOT FALSE", &[]));
    assert!(m("a = TRUE", &[("a", "true")]));
    assert!(m("a = TRUE", &[("a", "TRUE")]));
    assert!(!m("a = TRUE", &[("a", "yes")]));
    assert!(
        m("a = FALSE", &[("a", "no")]),
        "Boolean.valueOf: anything but true is false"
    );
    assert!(m("a <> FALSE", &[("a", "True")]));
    // RocketMQ fails (ClassCastException) with the boolean on the left.
    assert!(!m("TRUE = a", &[("a", "true")]));
    assert!(m("TRUE = TRUE", &[]));
    assert!(m("(a = 1) = TRUE", &[("a", "1")]));
    assert!(m("1 = TRUE OR TRUE", &[]));
    // A bare property is a boolean cast: a string is never TRUE.
    assert!(!m("a", &[("a", "true")]));
    assert!(m("NOT a", &[("a", "true")]));
    assert!(!m("NOT a", &[]));
}

#[test]
fn logic_and_precedence() {
    let p = |a: &str, b: &str, c: &str| props(&[("a", a), ("b", b), ("c", c)]);
    // AND binds tighter than OR.
    let s = sel("a = 1 OR b = 1 AND c = 1");
    assert!(s.matches(&p("1", "0", "0")));
    assert!(!s.matches(&p("0", "1", "0")));
    assert!(s.matches(&p("0", "1", "1")));
    // Parentheses override.
    let s = sel("(a = 1 OR b = 1) AND c = 1");
    assert!(!s.matches(&p("1", "0", "0")));
    assert!(s.matches(&p("1", "0", "1")));
    // NOT.
    assert!(sel("NOT (a = 1)").matches(&p("2", "0", "0")));
    assert!(sel("NOT NOT (a = 1)").matches(&p("1", "0", "0")));
    assert!(sel("a = 1 AND NOT b = 1 OR c = 1").matches(&p("0", "0", "1")));
    // NOT is unary and binds tighter than '=': `NOT a = 1` is
    // `(NOT a) = 1`, a boolean against a number, never TRUE (as in RocketMQ).
    assert!(!sel("NOT a = 1").matches(&p("2", "0", "0")));
    assert!(!sel("NOT a = 1").matches(&p("1", "0", "0")));
    // Comparison binds tighter than equality.
    assert!(sel("a > 1 = TRUE").matches(&p("2", "0", "0")));
    // Keywords in any case, comments and line breaks.
    assert!(sel("a = 1 -- first\n or /* second */ b = 1").matches(&p("0", "1", "0")));
    assert!(sel("(((a=1)))and(b=0)").matches(&p("1", "0", "0")));
    // Tree shapes.
    assert_eq!(
        sel("a = 1 OR b = 2 AND NOT c <> 3").tree().to_string(),
        "((a = 1) OR ((b = 2) AND (NOT ((NOT c) = 3))))"
    );
    assert_eq!(
        sel("a BETWEEN 1 AND 2").tree().to_string(),
        "((a >= 1) AND (a <= 2))"
    );
    assert_eq!(
        sel("a NOT BETWEEN 1 AND 2").tree().to_string(),
        "((a < 1) OR (a > 2))"
    );
}

#[test]
fn text_after_a_complete_expression_is_ignored_as_in_rocketmq() {
    // RocketMQ's grammar has no end-of-input rule (apache/rocketmq PR #602
    // proposed one and was not merged): it stops at the first token that
    // cannot continue the expression.
    assert_eq!(sel("a < 10bbbb").tree(), sel("a < 10").tree());
    assert_eq!(sel("a = 1 b c").tree(), sel("a = 1").tree());
    assert_eq!(sel("a = 1 b #").tree(), sel("a = 1").tree());
    assert_eq!(sel("a = 1)").tree(), sel("a = 1").tree());
    assert_eq!(sel("a = 007").tree(), sel("a = 0").tree());
    // …but the one token of look-ahead must still be a token.
    assert!(err("a = 1 # x").contains("unexpected character '#'"));
}

#[test]
fn refused_expressions_say_why() {
    let cases: &[(&str, &str)] = &[
        ("", "unexpected end of expression at line 1, column 1; expected a property, a literal or '('"),
        ("a =", "unexpected end of expression"),
        ("a = = 1", "unexpected '=' at line 1, column 5"),
        ("a != 1", "unexpected character '!' at line 1, column 3"),
        ("a = 'abc", "unterminated string literal at line 1, column 5"),
        ("a = 1 AND\n b ~ 2", "unexpected character '~' at line 2, column 4"),
        ("(a = 1", "unexpected end of expression at line 1, column 7; expected ')'"),
        ("a = NULL", "NULL cannot be compared"),
        ("NULL = a", "NULL cannot be compared"),
        ("a > 'x'", "value 'x' cannot be compared"),
        ("a > TRUE", "value TRUE cannot be compared"),
        ("a < NULL", "value NULL cannot be compared"),
        ("a > (b = 1)", "cannot be compared"),
        ("a BETWEEN 5 AND 1", "the low bound 5 must be less than or equal to the high bound 1"),
        ("a BETWEEN NULL AND 1", "the bounds cannot be NULL"),
        ("a BETWEEN 'a' AND 'b'", "cannot be compared"),
        ("a BETWEEN 1 OR 2", "expected AND between the bounds of BETWEEN"),
        ("'x' IN ('a')", "IN needs a property on its left"),
        ("a IN (1, 2)", "expected a string literal in the IN list"),
        ("a IN ()", "expected a string literal in the IN list"),
        ("a IN ('x' 'y')", "expected ',' or ')' in the IN list"),
        ("a IN 'x'", "expected '(' after IN"),
        ("a NOT LIKE 'x'", "expected BETWEEN or IN after NOT"),
        ("a IS 1", "expected NULL after IS / IS NOT"),
        ("a IS NOT 1", "expected NULL after IS / IS NOT"),
        ("1", "will not result in a boolean value: 1"),
        ("'x'", "will not result in a boolean value"),
        ("-a", "will not result in a boolean value"),
        ("a = 1 AND 5", "will not result in a boolean value: 5"),
        ("NOT 5", "will not result in a boolean value"),
        ("TRUE = 1", "TRUE cannot be compared with 1"),
        ("a = 9223372036854775808", "out of range"),
        ("a > 1E400", "is greater than"),
        ("a > 0.0", "floating literals equal to zero are refused"),
        ("a = 1 /* open", "unterminated comment"),
        ("a = .", "unexpected character '.'"),
    ];
    for (expr, want) in cases {
        let e = err(expr);
        assert!(e.starts_with("Invalid MessageSelector: "), "{expr}: {e}");
        assert!(e.contains(want), "{expr}: got `{e}`, want `{want}`");
    }
    // The largest long is fine, and negating it too.
    assert!(m(
        "a = 9223372036854775807",
        &[("a", "9223372036854775807")]
    ));
    assert!(m(
        "a < -9223372036854775807",
        &[("a", "-9223372036854775808")]
    ));
}

#[test]
fn property_decoding_matches_rocketmq() {
    // The last duplicate wins; values may contain the name/value separator.
    let s = sel("a = '2'");
    assert!(s.matches("a\u{1}1\u{2}a\u{1}2"));
    assert!(!s.matches("a\u{1}2\u{2}a\u{1}1"));
    assert!(sel("a = 'x\u{1}y'").matches("a\u{1}x\u{1}y"));
    // Trailing separator, empty segments, malformed segments.
    assert!(s.matches("\u{2}b\u{2}a\u{1}2\u{2}"));
    assert!(sel("a IS NULL").matches(""));
}

#[test]
fn sql_filter_is_an_engine_message_filter() {
    let f = SqlFilter(Arc::new(sel("a = 1")));
    let f: &dyn MessageFilter = &f;
    assert!(f.matches_tags_code(12345));
    assert!(f.matches_properties("a\u{1}1"));
    assert!(!f.matches_properties("a\u{1}2"));
}

#[test]
fn size_limits_keep_the_stack_safe() {
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(m(&deep, &[("a", "1")]));
    let deeper = format!("{}a = 1{}", "(".repeat(101), ")".repeat(101));
    assert!(err(&deeper).contains("nested too deeply"));
    assert!(err(&format!("{}a", "NOT ".repeat(100_000))).contains("nested too deeply"));
    // 1,000 binary operators are fine, one more is not.
    let wide = vec!["TRUE"; 1001].join(" OR ");
    assert!(m(&wide, &[]));
    let wider = vec!["TRUE"; 1002].join(" OR ");
    assert!(err(&wider).contains("too many operators"));
    // A huge expression is refused, not a crash.
    let huge = vec!["a = 1"; 200_000].join(" AND ");
    assert!(err(&huge).contains("too many operators"));
}

proptest::proptest! {
    /// Any text either compiles or is refused; evaluation never panics.
    #[test]
    fn arbitrary_text_never_panics(
        expr in "[a-c01.'()=<>, +\\-]{0,12}( ?(AND|OR|NOT|IN|IS|NULL|BETWEEN|TRUE|[a-c]|[0-9]{1,3}|'x'|\\(|\\)|=|<>|<|>=|,|-) ?){0,12}",
        a in "[0-9a-z.+-]{0,4}",
    ) {
        if let Ok(s) = Selector::compile(&expr) {
            let _ = s.evaluate(&format!("a\u{1}{a}\u{2}b\u{1}1"));
            let _ = s.tree().to_string();
        }
    }
}
