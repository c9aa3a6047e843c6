//! The compiled matcher (and the Aho-Corasick engine) against the naive reference: random
//! rule sets over a tiny label alphabet, so that patterns collide, nest and tie often, with
//! source and port scopes drawn from small sets that overlap, and random names built from the
//! same labels, asked for from random sources on random ports.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use snigate::internal::{AcMatcher, Reference};
use snigate::{ListSpec, Name, PublicSuffixWildcards, RuleSet, Verdict, parse_list, parse_rules_with};

const LABELS: &[&str] = &["a", "b", "ab", "ba", "a-b"];
const TLDS: &[&str] = &["com", "net"];
const SCOPES: &[&str] = &["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "10.0.0.0/8, 192.168.0.0/16", "::/0"];
const SOURCES: &[&str] = &["10.1.2.3", "10.9.9.9", "192.168.1.1", "8.8.8.8", "::ffff:10.1.2.3", "2001:db8::1"];
const DSTS: &[&str] = &["10.1.2.3:443", "192.168.7.7:8443", "8.8.8.8:443", "[2001:db8::1]:443"];
const NETS: &[&str] = &["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "0.0.0.0/0", "2001:db8::/32"];
const PORT_SCOPES: &[&str] = &["443", "8443", "443, 8443", "8000-8999", "1-1024, 8443", "25"];
/// Query ports; 0 is unknown, which only rules without `port` admit.
const PORTS: &[u16] = &[443, 8443, 8080, 25, 0];

fn name() -> impl Strategy<Value = String> {
    (prop::collection::vec(prop::sample::select(LABELS), 0..4), prop::sample::select(TLDS)).prop_map(|(mut l, tld)| {
        l.push(tld);
        l.join(".")
    })
}

fn pattern() -> impl Strategy<Value = String> {
    let affix = prop::sample::select(&["", "a", "b", "ab"][..]);
    prop_oneof![
        3 => name(),
        3 => name().prop_map(|n| format!("*.{n}")),
        3 => name().prop_map(|n| format!(".{n}")),
        2 => (affix.clone(), affix, name())
            .prop_filter("one side fixed", |(p, s, _)| !(p.is_empty() && s.is_empty()))
            .prop_map(|(p, s, n)| format!("{p}*{s}.{n}")),
        1 => Just("*".to_string()),
        1 => prop::sample::select(NETS).prop_map(|n| format!("ip {n}")),
    ]
}

fn rule_line() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        pattern(),
        prop::option::weighted(0.3, prop::sample::select(SCOPES)),
        prop::option::weighted(0.3, prop::sample::select(PORT_SCOPES)),
        any::<bool>(),
    )
        .prop_map(|(deny, p, from, ports, port_first)| {
            let action = if deny { "deny" } else { "allow" };
            let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
            let ports = ports.map(|p| format!(" port {p}")).unwrap_or_default();
            match port_first {
                true => format!("{action} {p}{ports}{from}"),
                false => format!("{action} {p}{from}{ports}"),
            }
        })
}

fn list_line() -> impl Strategy<Value = String> {
    prop_oneof![
        name(),
        name().prop_map(|n| format!("*.{n}")),
        name().prop_map(|n| format!("0.0.0.0 {n}")),
        name().prop_map(|n| format!("||{n}^")),
    ]
}

type Query = (Option<String>, &'static str, Option<&'static str>, u16);

fn query() -> impl Strategy<Value = Query> {
    (
        prop::option::weighted(0.85, name()),
        prop::sample::select(SOURCES),
        prop::option::weighted(0.7, prop::sample::select(DSTS)),
        prop::sample::select(PORTS),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_engines_agree_with_the_reference(
        lines in prop::collection::vec(rule_line(), 0..24),
        list in prop::option::of((any::<bool>(), prop::collection::vec(list_line(), 0..8))),
        default_allow in any::<bool>(),
        queries in prop::collection::vec(query(), 1..40),
    ) {
        // The engines are compared on every pattern, public suffixes too: the guard that refuses
        // those at load is tested on its own.
        let rules = parse_rules_with("p.rules", &lines.join("\n"), PublicSuffixWildcards::Allow).expect("generated rules parse");
        let lists: Vec<_> = list.into_iter().map(|(deny, entries)| {
            let spec = ListSpec { name: "plist".into(), verdict: if deny { Verdict::Deny } else { Verdict::Allow }, lenient: false };
            parse_list(&spec, &entries.join("\n")).expect("generated list parses")
        }).collect();
        let default = if default_allow { Verdict::Allow } else { Verdict::Deny };
        let reference = Reference::new(&rules, &lists, default);
        let compiled = RuleSet::new(rules, lists, default);
        let ac = AcMatcher::new(&compiled).expect("automaton builds");
        for (sni, src, dst, port) in queries {
            let sni = sni.map(|s| Name::parse(s.as_bytes(), false).expect("generated name is valid"));
            let src: IpAddr = src.parse().unwrap();
            let dst: Option<SocketAddr> = dst.map(|d| d.parse().unwrap());
            let want = reference.decide(sni.as_ref(), src, dst, port);
            let got = compiled.decide(sni.as_ref(), src, dst, port);
            prop_assert_eq!(got, want, "hash engine: sni {:?} src {} dst {:?} port {}\n{}", sni, src, dst, port, lines.join("\n"));
            let got_ac = ac.decide(&compiled, sni.as_ref(), src, dst, port);
            prop_assert_eq!(got_ac, want, "aho-corasick engine: sni {:?} src {} dst {:?} port {}\n{}", sni, src, dst, port, lines.join("\n"));
        }
    }
}
