//! PRODUCT.md section 3 as a table: every example rule, plus the apex, depth, boundary,
//! case, trailing-dot, glob, tie, scope and port cases, each with the verdict, the reason and
//! the deciding line.

use std::net::{IpAddr, SocketAddr};

use snigate::{Kind, Name, Reason, RuleSet, Verdict, parse_rules};

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

/// The spec's port examples: both clauses on one rule, in either order, and a source-scoped
/// deny to rank them against.
const SPEC_PORTS: &str = "\
allow *.my.salesforce.com port 443, 8443   # these destination ports only
allow ip 13.108.0.0/14 port 443            # no-SNI and non-TLS traffic to these addresses and ports
allow *.my.salesforce.com from 10.20.0.0/16 port 443   # both clauses, in either order
allow *.my.salesforce.com port 443 from 10.30.0.0/16
deny  *.my.salesforce.com from 10.20.0.0/16
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
    /// The destination port the connection asks for; 0 for unknown.
    port: u16,
}

const fn case(what: &'static str, sni: &'static str, src: &'static str, verdict: Verdict, line: u32) -> Case {
    let reason = if line == 0 { Reason::Default } else { Reason::Rule };
    Case { what, sni: Some(sni), src, dst: None, verdict, reason, line, port: 443 }
}

/// A connection without SNI to `dst`, on `dst`'s port.
const fn no_sni(what: &'static str, dst: &'static str, src: &'static str, verdict: Verdict, line: u32) -> Case {
    let reason = if line == 0 { Reason::NoSni } else { Reason::Rule };
    Case { what, sni: None, src, dst: Some(dst), verdict, reason, line, port: 0 }
}

impl Case {
    /// The case on destination port `port`.
    const fn on(self, port: u16) -> Case {
        Case { port, ..self }
    }
}

use Verdict::{Allow, Deny};

fn run(rules: &str, default: Verdict, cases: &[Case]) {
    let set = RuleSet::new(parse_rules("t.rules", rules).unwrap(), Vec::new(), default);
    for c in cases {
        let sni = c.sni.map(|s| Name::parse(s.as_bytes(), false).unwrap());
        let src: IpAddr = c.src.parse().unwrap();
        let dst: Option<SocketAddr> = c.dst.map(|d| d.parse().unwrap());
        let port = dst.map_or(c.port, |d| d.port());
        let d = set.decide(sni.as_ref(), src, dst, port);
        let line = match d.rule {
            Some(rule) => rule.line().unwrap_or_else(|| panic!("{}: unexpected rule {rule}", c.what)),
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
                port: 443,
            },
            Case {
                what: "no SNI, other destination",
                sni: None,
                src: OUTSIDE,
                dst: Some("8.8.8.8:443"),
                verdict: Deny,
                reason: Reason::NoSni,
                line: 0,
                port: 443,
            },
            Case {
                what: "no SNI, no destination",
                sni: None,
                src: OUTSIDE,
                dst: None,
                verdict: Deny,
                reason: Reason::NoSni,
                line: 0,
                port: 443,
            },
            Case {
                what: "ip rules ignore SNI connections",
                sni: Some("example.com"),
                src: OUTSIDE,
                dst: Some("13.108.1.1:443"),
                verdict: Deny,
                reason: Reason::Default,
                line: 0,
                port: 443,
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
fn spec_port_examples() {
    run(
        SPEC_PORTS,
        Deny,
        &[
            case("a listed port", "acme.my.salesforce.com", OUTSIDE, Allow, 1),
            case("the other listed port", "acme.my.salesforce.com", OUTSIDE, Allow, 1).on(8443),
            case("a port not listed", "acme.my.salesforce.com", OUTSIDE, Deny, 0).on(80),
            case("unknown port: port-scoped rules do not apply", "acme.my.salesforce.com", OUTSIDE, Deny, 0).on(0),
            no_sni("no SNI on the listed port", "13.108.1.1:443", OUTSIDE, Allow, 2),
            no_sni("no SNI on another port", "13.108.1.1:8443", OUTSIDE, Deny, 0),
            case("both clauses (from, then port) beat `from` alone", "acme.my.salesforce.com", "10.20.1.1", Allow, 3),
            case("both clauses, port then from", "acme.my.salesforce.com", "10.30.1.1", Allow, 4),
            case("`from` alone where the port is not listed", "acme.my.salesforce.com", "10.20.1.1", Deny, 5).on(8443),
            case("`from` alone beats `port` alone", "acme.my.salesforce.com", "10.20.1.1", Deny, 5).on(80),
        ],
    );
}

#[test]
fn port_precedence() {
    run(
        "deny *.p.com
allow *.p.com port 8000-8999
deny *.p.com port 8443
         allow *.q.com port 443
deny *.q.com from 10.0.0.0/8
         deny .r.com port 443
allow *.x.r.com
         allow *.s.com port 443
allow s.com
         allow ip 10.0.0.0/8
deny ip 10.0.0.0/8 port 25
allow ip 10.1.0.0/16
",
        Deny,
        &[
            case("a port scope beats an unscoped rule", "a.p.com", OUTSIDE, Allow, 2).on(8080),
            case("the unscoped rule on other ports", "a.p.com", OUTSIDE, Deny, 1).on(80),
            case("two port-scoped rules tie: deny wins", "a.p.com", OUTSIDE, Deny, 3).on(8443),
            case("a range includes both ends", "a.p.com", OUTSIDE, Allow, 2).on(8999),
            case("just past the range", "a.p.com", OUTSIDE, Deny, 1).on(9000),
            case("a source scope beats a port scope", "a.q.com", "10.1.1.1", Deny, 5),
            case("the port scope for other sources", "a.q.com", OUTSIDE, Allow, 4),
            case("a longer suffix beats a port scope", "a.x.r.com", OUTSIDE, Allow, 7),
            case("exact beats a port-scoped suffix", "s.com", OUTSIDE, Allow, 9),
            no_sni("ip: a port scope beats an unscoped rule", "10.9.0.1:25", OUTSIDE, Deny, 11),
            no_sni("ip: the unscoped rule on other ports", "10.9.0.1:443", OUTSIDE, Allow, 10),
            no_sni("ip: a longer prefix beats a port scope", "10.1.0.1:25", OUTSIDE, Allow, 12),
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
    let d = set.decide(Some(&name), OUTSIDE.parse().unwrap(), None, 443);
    let m = d.matched.unwrap();
    assert_eq!((m.kind, m.labels), (Kind::Glob, 4));
    assert_eq!(d.rule.unwrap().to_string(), "t.rules:4");
    assert_eq!(d.rule.unwrap().ruleset(), "t.rules");
}
