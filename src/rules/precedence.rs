//! The kinds of rule and the precedence between them, stated once.
//!
//! [`Precedence::new`] is the only place that ranks rules. The compiled matcher's packed order,
//! the order it sorts `*` and `ip` rules in, `snigate check`'s "wins" and the naive reference
//! are all derived from it, and tests tie each derived form back to it.

/// What kind of rule matched: one vocabulary for rule files, the compiled matcher and
/// explanations. The numbering is the matcher's packed form (3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// `name`: exactly that name.
    Exact = 0,
    /// `pre*suf.parent`: one label directly below `parent`.
    Glob = 1,
    /// `.name`: the name and every name below it.
    Apex = 2,
    /// `*.name`: every name strictly below it.
    Below = 3,
    /// `*`: every name.
    Any = 4,
    /// `ip CIDR`: the destination of a connection without SNI.
    Ip = 5,
}

impl Kind {
    /// Every kind, in packed order.
    pub const ALL: [Kind; 6] = [Kind::Exact, Kind::Glob, Kind::Apex, Kind::Below, Kind::Any, Kind::Ip];

    /// The kind packed as `bits` (the low three bits of a compiled action).
    pub(crate) const fn from_bits(bits: u32) -> Kind {
        match bits & 7 {
            0 => Kind::Exact,
            1 => Kind::Glob,
            2 => Kind::Apex,
            3 => Kind::Below,
            4 => Kind::Any,
            _ => Kind::Ip,
        }
    }

    /// `.name` and `*.name`: the two suffix forms, equally specific where both match.
    pub const fn is_suffix(self) -> bool {
        matches!(self, Kind::Apex | Kind::Below)
    }
}

/// The precedence of a matching rule: the greatest wins. Rules equal in precedence are
/// resolved by load order (the first loaded wins), which only changes which rule is reported.
///
/// Fields compare in declaration order (the derived `Ord`):
/// 1. how specific the pattern is: exact > leftmost-label glob > suffix > `*`;
/// 2. among suffixes, the one with more labels (`*.my.salesforce.com` and
///    `.my.salesforce.com` tie); among `ip` rules, the longer prefix;
/// 3. a source-scoped rule (`from`) over one without;
/// 4. a port-scoped rule (`port`) over one without;
/// 5. `deny` over `allow`.
///
/// A rule with both clauses therefore outranks one with `from` only, which outranks one with
/// `port` only. The source scope comes first because it names who a rule is for, and an
/// exception written for some clients should hold on every port they use; a port scope
/// describes the destination service and usually applies to every client.
///
/// `ip` rules are only ever compared with each other: they decide connections without SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Precedence {
    /// 0 `*`, 1 suffix or `ip`, 2 glob, 3 exact.
    tier: u8,
    /// Labels of a suffix, or an `ip` rule's prefix length; 0 where length does not rank.
    length: u8,
    /// The rule has a `from` clause (that admitted the source).
    scoped: bool,
    /// The rule has a `port` clause (that admitted the destination port).
    ports: bool,
    /// The rule denies.
    deny: bool,
}

impl Precedence {
    /// The precedence of a rule of `kind` whose key has `labels` labels (the prefix length for
    /// `ip` rules), with a `from` clause (`scoped`) or not, with a `port` clause (`ports`) or
    /// not, that denies or not.
    pub const fn new(kind: Kind, labels: u8, scoped: bool, ports: bool, deny: bool) -> Precedence {
        let (tier, length) = match kind {
            Kind::Any => (0, 0),
            Kind::Apex | Kind::Below | Kind::Ip => (1, labels),
            Kind::Glob => (2, 0),
            Kind::Exact => (3, 0),
        };
        Precedence { tier, length, scoped, ports, deny }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: Kind, labels: u8) -> Precedence {
        Precedence::new(kind, labels, false, false, false)
    }

    #[test]
    fn the_order_of_the_spec() {
        assert!(p(Kind::Exact, 2) > p(Kind::Glob, 5));
        assert!(p(Kind::Glob, 1) > p(Kind::Apex, 127));
        assert!(p(Kind::Below, 3) > p(Kind::Apex, 2));
        assert_eq!(p(Kind::Below, 3), p(Kind::Apex, 3));
        assert!(p(Kind::Below, 1) > p(Kind::Any, 0));
        assert!(p(Kind::Ip, 24) > p(Kind::Ip, 16));
        let scoped = Precedence::new(Kind::Apex, 2, true, false, false);
        let deny = Precedence::new(Kind::Apex, 2, false, false, true);
        assert!(scoped > deny, "scope outranks deny");
        assert!(deny > p(Kind::Apex, 2), "deny wins ties");
        assert!(p(Kind::Apex, 3) > scoped, "a longer suffix outranks scope");
    }

    #[test]
    fn source_scope_then_port_scope_then_deny() {
        let r = |scoped, ports, deny| Precedence::new(Kind::Below, 3, scoped, ports, deny);
        // Best first: both clauses, `from` only, `port` only, neither; deny breaks each tie.
        let order = [
            r(true, true, true),
            r(true, true, false),
            r(true, false, true),
            r(true, false, false),
            r(false, true, true),
            r(false, true, false),
            r(false, false, true),
            r(false, false, false),
        ];
        assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
        assert!(p(Kind::Exact, 2) > r(true, true, true), "a port scope does not outrank a more specific pattern");
        assert!(Precedence::new(Kind::Ip, 24, false, false, false) > Precedence::new(Kind::Ip, 16, true, true, true));
    }

    #[test]
    fn kinds_round_trip_their_packed_form() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_bits(kind as u32), kind);
        }
    }
}
