//! How a section declares each setting once: one field gives its flag, variable, file key, help
//! and default, and `settings!` derives the rest.
//!
//! A section is two structs. `…Args` holds what was given, every field an `Option`: clap fills
//! it from flags and `CARROT_*` variables (`#[command(flatten)]`), and the same struct reads the
//! file's keys. `a.or(b)` keeps each setting of `a` that was given, else takes `b`'s, so
//! `cli.or(file).resolve()` is the whole precedence. `resolve` gives the section's `…Config`,
//! where each setting not given takes its default, or stays `None` when it has none.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};

/// A setting's type, and the type its flag, variable, file key and default are read as.
///
/// Most read as themselves; a `Duration` reads as `Seconds`, which also takes `15m`.
pub trait Setting: Sized {
    type Input: FromStr + Into<Self>;
}

macro_rules! read_as_itself {
    ($($ty:ty),*) => {
        $(impl Setting for $ty {
            type Input = $ty;
        })*
    };
}

read_as_itself!(SocketAddr, String, usize, u16, bool, PathBuf);

/// The keys of one map of the file that a part reads. Several parts can share one map: the
/// top level holds the server's, the broker's and the consumers' keys side by side.
pub trait Keys: Default {
    /// The keys this part reads, for the message naming one it does not.
    fn keys() -> Vec<&'static str>;

    /// Reads `key`'s value from `map` if `key` is one of this part's; `false` leaves it.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// Reads a whole map into `T`, refusing a key `T` does not read, and a key given twice.
///
/// This is `deny_unknown_fields` for parts that share a map, which serde's own cannot do
/// together with `#[serde(flatten)]`; reading from the file's deserializer itself also keeps
/// the key path and line of a bad value in its error.
pub fn deserialize_keys<'de, T: Keys, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    struct KeysVisitor<T>(PhantomData<T>);

    impl<'de, T: Keys> Visitor<'de> for KeysVisitor<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a map of settings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            let mut part = T::default();
            let mut seen = BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
                }
                if !part.read(&key, &mut map)? {
                    return Err(A::Error::custom(unknown_key(&key, &T::keys())));
                }
            }
            Ok(part)
        }
    }

    deserializer.deserialize_map(KeysVisitor(PhantomData))
}

/// Worded as serde's own refusal of an unknown field.
fn unknown_key(key: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|key| format!("`{key}`")).collect();
    format!(
        "unknown field `{key}`, expected one of {}",
        known.join(", ")
    )
}

/// A default as the section writes it, read like a flag's value.
pub fn parse_default<T: FromStr>(text: &str) -> T
where
    T::Err: fmt::Debug,
{
    text.parse()
        .expect("every default of a section is a valid value (checked by the config tests)")
}

/// Appends `[default: …]` to the `--help` line of `arg` if `defaults` has its id, so the help
/// shows the very text the default is parsed from.
pub fn show_default(arg: clap::Arg, defaults: &[(&str, &str)]) -> clap::Arg {
    match defaults.iter().find(|(id, _)| arg.get_id() == *id) {
        Some((_, default)) => {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {default}]"))
        }
        None => arg,
    }
}

/// A setting without a default stays an `Option` once resolved.
macro_rules! resolved_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:literal) => { $ty };
}

macro_rules! resolved_value {
    ($given:expr) => {
        $given.map(Into::into)
    };
    ($given:expr, $default:literal) => {
        $given
            .unwrap_or_else(|| $crate::config::settings::parse_default($default))
            .into()
    };
}

/// Declares a section: see the module's documentation. Each field is written
///
/// ```text
/// /// Help line (and rustdoc of both structs' fields).
/// #[arg(long, env = "CARROT_…")]
/// pub name: Type = "default",
/// ```
///
/// where the default, when there is one, is written as a user would write the flag's value.
/// Fields in `also { … }` belong to the resolved struct only; the owner fills them from other
/// parts of the config (TLS files read at start, the file's tokens).
macro_rules! settings {
    (
        $(#[$args_meta:meta])*
        pub struct $args:ident;

        $(#[$config_meta:meta])*
        pub struct $config:ident {
            $(
                $(#[doc = $doc:literal])*
                #[arg($($arg:tt)*)]
                pub $field:ident: $ty:ty $(= $default:literal)?,
            )*
        }
        $(
            also {
                $(
                    $(#[doc = $also_doc:literal])*
                    pub $also:ident: $also_ty:ty,
                )*
            }
        )?
    ) => {
        #[derive(Debug, Default, Clone, clap::Args)]
        $(#[$args_meta])*
        #[command(mut_args($args::show_default))]
        pub struct $args {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $field: Option<<$ty as $crate::config::settings::Setting>::Input>,
            )*
        }

        impl $args {
            /// Each setting given in `self`, else the one given in `under`.
            pub fn or(self, under: Self) -> Self {
                Self {
                    $($field: self.$field.or(under.$field),)*
                }
            }

            /// Each setting given, else its default.
            pub fn resolve(self) -> $config {
                $config {
                    $($field: $crate::config::settings::resolved_value!(self.$field $(, $default)?),)*
                    $($($also: Default::default(),)*)?
                }
            }

            fn show_default(arg: clap::Arg) -> clap::Arg {
                $crate::config::settings::show_default(
                    arg,
                    &[$($((stringify!($field), $default),)?)*],
                )
            }
        }

        impl $crate::config::settings::Keys for $args {
            fn keys() -> Vec<&'static str> {
                vec![$(stringify!($field)),*]
            }

            fn read<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($field) => self.$field = map.next_value()?,)*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }

        impl<'de> serde::Deserialize<'de> for $args {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::config::settings::deserialize_keys(deserializer)
            }
        }

        $(#[$config_meta])*
        #[derive(Debug, Clone)]
        pub struct $config {
            $(
                $(#[doc = $doc])*
                pub $field: $crate::config::settings::resolved_type!($ty $(, $default)?),
            )*
            $($(
                $(#[doc = $also_doc])*
                pub $also: $also_ty,
            )*)?
        }

        impl Default for $config {
            fn default() -> Self {
                $args::default().resolve()
            }
        }
    };
}

pub(crate) use {resolved_type, resolved_value, settings};
