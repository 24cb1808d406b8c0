//! The value of a job's `offsite` key: one target name (`offsite = "eu"`, the original form)
//! or several (`offsite = ["eu", "us"]`). Deserialized by hand rather than as an untagged
//! enum so that a wrong type gets an error saying what is accepted.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// `offsite = "NAME"` or `offsite = ["NAME", ...]`, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsiteNames {
    One(String),
    Many(Vec<String>),
}

impl OffsiteNames {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OffsiteNames::One(n) => vec![n],
            OffsiteNames::Many(v) => v,
        }
    }
}

impl Serialize for OffsiteNames {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OffsiteNames::One(n) => s.serialize_str(n),
            OffsiteNames::Many(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OffsiteNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamesVisitor;
        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = OffsiteNames;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an [offsite.NAME] target name or a list of them, such as \"eu\" or [\"eu\", \"us\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OffsiteNames, E> {
                Ok(OffsiteNames::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OffsiteNames, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(OffsiteNames::Many(names))
            }
        }
        d.deserialize_any(NamesVisitor)
    }
}
