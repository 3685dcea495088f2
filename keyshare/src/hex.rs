//! Lowercase hex for fixed-size identifiers (public but hidden: a helper for the sibling crates), and the macro that gives a 32-byte newtype its
//! Display / FromStr / serde impls (hex in human-readable formats, raw bytes in postcard).

use crate::error::ParseHexError;

#[doc(hidden)]
pub use serde;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex.
#[doc(hidden)]
pub fn write_hex(f: &mut core::fmt::Formatter<'_>, bytes: &[u8]) -> core::fmt::Result {
    for byte in bytes {
        let pair = [
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 0x0f)],
        ];
        // Both bytes come from DIGITS, which is ASCII.
        f.write_str(core::str::from_utf8(&pair).map_err(|_| core::fmt::Error)?)?;
    }
    Ok(())
}

#[doc(hidden)]
/// Parses exactly `N` bytes from `2 * N` hex digits (either case).
pub fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], ParseHexError> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return Err(ParseHexError::Length {
            expected: 2 * N,
            actual: text.chars().count(),
        });
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        let high = nibble(digits[2 * i]).ok_or(ParseHexError::Character { position: 2 * i })?;
        let low = nibble(digits[2 * i + 1]).ok_or(ParseHexError::Character {
            position: 2 * i + 1,
        })?;
        *byte = (high << 4) | low;
    }
    Ok(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Implements `Display`, `Debug`, `FromStr`, `AsRef<[u8]>` and serde for a `struct X([u8; 32])`.
/// Exported so the other crates' 32-byte ids (member keys, transaction ids, block hashes) print
/// and parse the same way.
#[macro_export]
#[doc(hidden)]
macro_rules! impl_bytes32 {
    ($name:ident) => {
        impl $name {
            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                $crate::hex::write_hex(f, &self.0)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                $crate::hex::write_hex(f, &self.0)?;
                write!(f, ")")
            }
        }

        impl core::str::FromStr for $name {
            type Err = $crate::ParseHexError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $crate::hex::parse_hex::<32>(text).map(Self)
            }
        }

        impl $crate::hex::serde::Serialize for $name {
            fn serialize<S: $crate::hex::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    $crate::hex::serde::Serialize::serialize(&self.0, serializer)
                }
            }
        }

        impl<'de> $crate::hex::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::hex::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str> as $crate::hex::serde::Deserialize>::deserialize(deserializer)?;
                    text.parse().map_err($crate::hex::serde::de::Error::custom)
                } else {
                    <[u8; 32] as $crate::hex::serde::Deserialize>::deserialize(deserializer).map(Self)
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hex<'a>(&'a [u8]);

    impl core::fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write_hex(f, self.0)
        }
    }

    #[test]
    fn round_trips_and_rejects() {
        let bytes = [0x00, 0x7f, 0xa5, 0xff];
        let text = Hex(&bytes).to_string();
        assert_eq!(text, "007fa5ff");
        assert_eq!(parse_hex::<4>(&text), Ok(bytes));
        assert_eq!(parse_hex::<4>("007FA5FF"), Ok(bytes));
        assert_eq!(
            parse_hex::<4>("007fa5f"),
            Err(ParseHexError::Length {
                expected: 8,
                actual: 7
            })
        );
        assert_eq!(
            parse_hex::<4>("007fa5fg"),
            Err(ParseHexError::Character { position: 7 })
        );
        assert!(matches!(
            parse_hex::<2>("ééé"),
            Err(ParseHexError::Length { .. }) | Err(ParseHexError::Character { .. })
        ));
    }
}
