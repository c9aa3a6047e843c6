//! Keyword-valued settings: one table of values and spellings per type, the same in the file
//! and on the command line.

/// A keyword-valued setting: its spellings, the same in the file and on the command line.
pub trait Keyword: Sized + Copy + 'static {
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// The spelling.
    fn as_str(self) -> &'static str;
}

/// `impl Keyword` from the one table of values and spellings.
macro_rules! keywords {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Keyword for $ty {
            const ALL: &'static [Self] = &[$(<$ty>::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }
        }
    };
}
