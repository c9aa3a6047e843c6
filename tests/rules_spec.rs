//! PRODUCT.md section 3 as a table: every example rule, plus the apex, depth, boundary,
//! case, trailing-dot, glob, tie and scope cases, each with the verdict, the reason and the
//! deciding line.

use std::net::{IpAddr, SocketAddr};

use snigate::{Kind, Name, Reason, RuleRef, RuleSet, Verdict, parse_rules};

/// The spec's example block (the catch-all is tested on its own below).
const SPEC: &str = "\
allow login.salesforce.com                 # exact name
allow *.my.salesforce.com                  # any name strictly below, any depth; not the apex
allow .force.com                           # the apex and any name below it
allow acme--*.sandbox.my.salesforce.com    # one glob in the leftmost label: matches one label
deny  evil.my.salesforce.com
allow *.my.salesforce.com from 10.20.0.0/16, 10.30.0.0/16   # applies to these sources only
allow ip 13.108.0.0/14                     # destination CIDR: decides connections without SNI
";

const OUTSIDE: &str = "192.0.2.1";

struct Case {
    what: &'static str,
    sni: Option<&'static str>,
    src: &'static str,
    dst: Option<&'static str>,
    verdict: Verdict,
    reason: Reason,
    /// Deciding line, 0 for none.
    line: u32,
}

const fn case(what: &'static str, sni: &'static str, src: &'static str, verdict: Verdict, line: u32) -> Case {
    let reason = if line == 0 { Reason::Default } else { Reason::Rule };
    Case { what, sni: Some(sni), src, dst: None, verdict, reason, line }
}

use Verdict::{Allow, Deny};

fn run(rules: &str, default: Verdict, cases: &[Case]) {
    let set = RuleSet::new(parse_rules("t.rules", rules).unwrap(), Vec::new(), default);
    for c in cases {
        let sni = c.sni.map(|s| Name::parse(s.as_bytes(), false).unwrap());
        let src: IpAddr = c.src.parse().unwrap();
        let dst: Option<SocketAddr> = c.dst.map(|d| d.parse().unwrap());
        let d = set.decide(sni.as_ref(), src, dst);
        let line = match d.rule {
            Some(RuleRef::Line { line, .. }) => *line,
            Some(other) => panic!("{}: unexpected rule {other}", c.what),
            None => 0,
        };
        assert_eq!((d.verdict, d.reason, line), (c.verdict, c.reason, c.line), "{}", c.what);
    }
}

#[test]
fn spec_examples() {
    run(
        SPEC,
        Deny,
        &[
            case("exact name", "login.salesforce.com", OUTSIDE, Allow, 1),
            case("exact does not cover names below", "www.login.salesforce.com", OUTSIDE, Deny, 0),
            case("*. matches one level below", "acme.my.salesforce.com", OUTSIDE, Allow, 2),
            case("*. matches any depth", "a.b.c.my.salesforce.com", OUTSIDE, Allow, 2),
            case("*. is not the apex", "my.salesforce.com", OUTSIDE, Deny, 0),
            case("label boundary: evilmy is not below my", "evilmy.salesforce.com", OUTSIDE, Deny, 0),
            case(". matches the apex", "force.com", OUTSIDE, Allow, 3),
            case(". matches below", "x.y.force.com", OUTSIDE, Allow, 3),
            case(". on a boundary only", "notforce.com", OUTSIDE, Deny, 0),
            case("glob matches one label", "acme--uat.sandbox.my.salesforce.com", OUTSIDE, Allow, 4),
            case(
                "glob does not match deeper: suffix decides",
                "x.acme--uat.sandbox.my.salesforce.com",
                OUTSIDE,
                Allow,
                2,
            ),
            case("glob prefix must match: suffix decides", "other--uat.sandbox.my.salesforce.com", OUTSIDE, Allow, 2),
            case("exact deny beats suffix allow", "evil.my.salesforce.com", OUTSIDE, Deny, 5),
            case("exact beats a scoped suffix", "evil.my.salesforce.com", "10.20.1.1", Deny, 5),
            case("case-insensitive, one trailing dot", "EVIL.My.SalesForce.COM.", OUTSIDE, Deny, 5),
            case("scoped beats unscoped, same pattern", "acme.my.salesforce.com", "10.20.1.1", Allow, 6),
            case("second CIDR of the scope", "acme.my.salesforce.com", "10.30.255.1", Allow, 6),
            case("IPv4-mapped source matches an IPv4 scope", "acme.my.salesforce.com", "::ffff:10.30.0.1", Allow, 6),
            case("source outside the scope: unscoped rule", "acme.my.salesforce.com", "10.40.0.1", Allow, 2),
            case("no rule: default deny", "example.com", OUTSIDE, Deny, 0),
            Case {
                what: "no SNI: ip rule",
                sni: None,
                src: OUTSIDE,
                dst: Some("13.108.1.1:443"),
                verdict: Allow,
                reason: Reason::Rule,
                line: 7,
            },
            Case {
                what: "no SNI, other destination",
                sni: None,
                src: OUTSIDE,
                dst: Some("8.8.8.8:443"),
                verdict: Deny,
                reason: Reason::NoSni,
                line: 0,
            },
            Case {
                what: "no SNI, no destination",
                sni: None,
                src: OUTSIDE,
                dst: None,
                verdict: Deny,
                reason: Reason::NoSni,
                line: 0,
            },
            Case {
                what: "ip rules ignore SNI connections",
                sni: Some("example.com"),
                src: OUTSIDE,
                dst: Some("13.108.1.1:443"),
                verdict: Deny,
                reason: Reason::Default,
                line: 0,
            },
        ],
    );
}

#[test]
fn precedence() {
    run(
        "allow *.tie.com\ndeny .tie.com\n\
         deny *.com\nallow *.long.com\n\
         deny acme--uat.g.com\nallow acme--*.g.com\nallow .acme--dev.g.com\ndeny *.g.com\n\
         allow *.scope.com\ndeny *.scope.com from 10.0.0.0/8\n\
         deny *.over.com\nallow *.over.com from 10.0.0.0/8\n\
         allow *-prod.h.com\ndeny api-*.h.com\n",
        Deny,
        &[
            case("tie: deny wins between *. and .", "a.tie.com", OUTSIDE, Deny, 2),
            case("apex only matched by .", "tie.com", OUTSIDE, Deny, 2),
            case("longer suffix wins", "a.long.com", OUTSIDE, Allow, 4),
            case("shorter suffix elsewhere", "a.short.com", OUTSIDE, Deny, 3),
            case("exact beats glob", "acme--uat.g.com", OUTSIDE, Deny, 5),
            case("glob beats suffix", "acme--qa.g.com", OUTSIDE, Allow, 6),
            case("glob beats an apex rule on the full name", "acme--dev.g.com", OUTSIDE, Allow, 6),
            case("apex rule covers below the glob's reach", "x.acme--dev.g.com", OUTSIDE, Allow, 7),
            case("glob miss falls to suffix", "other.g.com", OUTSIDE, Deny, 8),
            case("scoped deny for its sources", "a.scope.com", "10.1.1.1", Deny, 10),
            case("unscoped allow for others", "a.scope.com", OUTSIDE, Allow, 9),
            case("scoped allow beats unscoped deny", "a.over.com", "10.1.1.1", Allow, 12),
            case("unscoped deny for others", "a.over.com", OUTSIDE, Deny, 11),
            case("two matching globs tie: deny wins", "api-prod.h.com", OUTSIDE, Deny, 14),
            case("one glob matches", "web-prod.h.com", OUTSIDE, Allow, 13),
        ],
    );
}

#[test]
fn catch_all_and_default() {
    run(
        "allow *\ndeny *.bad.com\n",
        Deny,
        &[
            case("catch-all", "anything.example", OUTSIDE, Allow, 1),
            case("more specific deny", "x.bad.com", OUTSIDE, Deny, 2),
        ],
    );
    run("deny *.bad.com\n", Allow, &[case("default allow when configured", "good.com", OUTSIDE, Allow, 0)]);
}

#[test]
fn unicode_patterns_become_a_labels() {
    run(
        "allow bücher.example\ndeny *.ÉCOLE.example\n",
        Deny,
        &[
            case("IDN exact", "xn--bcher-kva.example", OUTSIDE, Allow, 1),
            case("IDN suffix, case-folded", "a.xn--cole-9oa.example", OUTSIDE, Deny, 2),
        ],
    );
}

#[test]
fn decision_reports_how_it_matched() {
    let set = RuleSet::new(parse_rules("t.rules", SPEC).unwrap(), Vec::new(), Deny);
    let name = Name::parse(b"acme--uat.sandbox.my.salesforce.com", false).unwrap();
    let d = set.decide(Some(&name), OUTSIDE.parse().unwrap(), None);
    let m = d.matched.unwrap();
    assert_eq!((m.kind, m.labels), (Kind::Glob, 4));
    assert_eq!(d.rule.unwrap().to_string(), "t.rules:4");
    assert_eq!(d.rule.unwrap().ruleset(), "t.rules");
}
