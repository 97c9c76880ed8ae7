use std::fmt;
use std::sync::Arc;

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("identifier may only hold letters, digits and - _ . :")]
    BadChar,
}

fn check_id(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    // A narrow alphabet keeps ids safe in logs, metrics labels, URLs and SQL.
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(IdError::BadChar);
    }
    Ok(())
}

/// An id the hub generates for what it stores (a fence, a webhook): 16
/// random lowercase hex digits. `parse` takes any id one could have been
/// (up to 64 letters, digits, `-`, `_`) and `None` for the rest, so a path
/// with an impossible id is simply unknown.
macro_rules! generated_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn generate() -> Self {
                Self(format!("{:016x}", rand::random::<u64>()))
            }

            pub fn parse(raw: &str) -> Option<Self> {
                let plausible = (1..=64).contains(&raw.len())
                    && raw
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
                plausible.then(|| Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use generated_id;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check_id(raw)?;
                Ok(Self(Arc::from(raw)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A driver's identity, the `sub` of a driver token.
    DriverId
);
id_type!(
    /// A fleet (one customer's vehicles and dispatchers).
    FleetId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_plain_alphabet() {
        assert!(DriverId::parse("d-1_a.b:c").is_ok());
    }

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert_eq!(DriverId::parse(""), Err(IdError::Empty));
        assert_eq!(FleetId::parse(&"x".repeat(65)), Err(IdError::TooLong));
        assert_eq!(DriverId::parse("a b"), Err(IdError::BadChar));
        assert_eq!(DriverId::parse("é"), Err(IdError::BadChar));
    }
}
