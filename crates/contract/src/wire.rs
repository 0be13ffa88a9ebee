//! The two declaration macros the contract is written with, so that each concept is declared once:
//!
//! - `table_enum!` declares an enum of wire codes together with one row of facts per variant
//!   (name, permissions, sizes). The decoder (`from_u8`/`from_u32`), the list of every variant and the per-variant
//!   facts are derived from that one table; adding a row is the whole change, and every `match` over the enum
//!   elsewhere then fails to compile until it handles the new variant.
//! - `wire_struct!` declares a struct that lives at fixed byte offsets of a record (or an
//!   image header): `field: Type @ offset`, once. Its encoder (`put`) and decoder (`get`) are generated from that
//!   list, so they cannot disagree, and [`FieldLayout`] lists the layout for tests and for the check against
//!   `docs/device-interface.md`.
//!
//! Hand-written rather than a derive crate: the contract depends on nothing but `bitflags`, the two macros are small,
//! and a derive crate would still need the offsets spelled out per field.

/// Where one field of a struct declared with `wire_struct!` lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// Field name in the Rust struct.
    pub name: &'static str,
    /// Byte offset from the start of the record (or header).
    pub offset: usize,
    /// Bytes the field occupies.
    pub size: usize,
}

/// A field held a value its type does not accept (an enum byte outside its table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field name.
    pub field: &'static str,
    /// Byte offset of the field.
    pub offset: usize,
    /// The raw little-endian value found there.
    pub value: u64,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}` at byte {} holds {:#x}, which is not a valid value", self.field, self.offset, self.value)
    }
}

impl std::error::Error for FieldError {}

/// A value with a fixed little-endian encoding of `SIZE` bytes (contract §4: all fields are little-endian).
pub trait Wire: Copy {
    /// Encoded bytes.
    const SIZE: usize;
    /// Writes the value into `b`, which is exactly `SIZE` bytes.
    fn put(self, b: &mut [u8]);
    /// Reads a value from `b` (exactly `SIZE` bytes); `None` if the bytes are not a valid value.
    fn get(b: &[u8]) -> Option<Self>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn put(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn get(b: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(b.try_into().ok()?))
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64);

impl<const N: usize> Wire for [u8; N] {
    const SIZE: usize = N;
    #[inline(always)]
    fn put(self, b: &mut [u8]) {
        b.copy_from_slice(&self);
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Option<Self> {
        b.try_into().ok()
    }
}

/// The raw little-endian value of up to 8 bytes, for error reports.
#[doc(hidden)]
pub fn raw_le(b: &[u8]) -> u64 {
    b.iter().take(8).rev().fold(0, |v, &x| v << 8 | x as u64)
}

/// Declares a struct stored at fixed byte offsets, once, and derives its encoder and decoder.
///
/// ```text
/// wire_struct! {
///     /// Doc.
///     pub struct EventWait {
///         /// The watched queue.
///         pub queue: u16 @ 16,
///         /// The awaited id.
///         pub event_id: u32 @ 20,
///     }
/// }
/// ```
///
/// generates the struct, `EventWait::FIELDS` (its [`FieldLayout`]), `put(&self, &mut [u8])`, which writes every
/// field at its offset and nothing else (callers start from zeroed bytes, so reserved bytes stay 0), and
/// `get(&[u8]) -> Result<Self, FieldError>`. Offsets count from the start of the record, so a body's offsets are the
/// ones the contract's tables give. Every field type implements [`Wire`] and is one token (`u32`, `Memory`,
/// `[u8; 48]`), which is what lets `@` follow it in a `macro_rules!` pattern.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:tt @ $off:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        #[allow(dead_code)]
        impl $name {
            /// Where each field lives (declared once, with the struct).
            pub const FIELDS: &'static [$crate::wire::FieldLayout] = &[$(
                $crate::wire::FieldLayout {
                    name: stringify!($field),
                    offset: $off,
                    size: <$ty as $crate::wire::Wire>::SIZE,
                },
            )*];

            /// Bytes up to the end of the last field: the smallest buffer [`Self::put`] and [`Self::get`] accept.
            pub const END: usize = {
                let mut end = 0;
                $( if $off + <$ty as $crate::wire::Wire>::SIZE > end {
                    end = $off + <$ty as $crate::wire::Wire>::SIZE;
                } )*
                end
            };

            /// Writes every field at its offset in `b`, and nothing else.
            ///
            /// # Panics
            /// If `b` is shorter than [`Self::END`].
            #[inline(always)]
            pub fn put(&self, b: &mut [u8]) {
                $( $crate::wire::Wire::put(self.$field, &mut b[$off..$off + <$ty as $crate::wire::Wire>::SIZE]); )*
            }

            /// Reads every field from its offset in `b`.
            ///
            /// # Panics
            /// If `b` is shorter than [`Self::END`].
            #[inline]
            pub fn get(b: &[u8]) -> Result<Self, $crate::wire::FieldError> {
                Ok($name {$(
                    $field: {
                        let raw = &b[$off..$off + <$ty as $crate::wire::Wire>::SIZE];
                        <$ty as $crate::wire::Wire>::get(raw).ok_or($crate::wire::FieldError {
                            field: stringify!($field),
                            offset: $off,
                            value: $crate::wire::raw_le(raw),
                        })?
                    },
                )*})
            }
        }
    };
}

/// Declares an enum of wire codes with one row of facts per variant, and derives everything else from that table.
///
/// ```text
/// table_enum! {
///     /// Doc.
///     pub enum FaultCode: u32, from_u32, FaultInfo {
///         /// Doc.
///         Iommu = 1 => { name: "IOMMU", describe: "..." },
///     }
/// }
/// ```
///
/// generates the `#[repr]` enum with those discriminants, `ALL` (every variant in table order, sized by the
/// macro), `from_u32` (the decoder: `None` for every value not in the table) and `info(self) -> &'static FaultInfo`,
/// whose struct literal is the row (the `FaultInfo` struct is declared by hand next to the table, with its docs).
macro_rules! table_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident, $from:ident, $info:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => { $($row:tt)* } ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Every variant, in table order.
            pub const ALL: [$name; [$(stringify!($variant)),*].len()] = [$($name::$variant),*];

            /// Decodes a wire value; `None` for a value not in the table.
            #[inline]
            pub const fn $from(v: $repr) -> Option<$name> {
                match v {
                    $( $value => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// This variant's row of the table.
            #[inline]
            pub const fn info(self) -> &'static $info {
                match self {
                    $( $name::$variant => {
                        const ROW: $info = $info { $($row)* };
                        &ROW
                    } )*
                }
            }
        }
    };
}

pub(crate) use {table_enum, wire_struct};
