//! Op attributes as a small JSON-like tree, produced and consumed through serde.
//!
//! Ops are (de)serialised through this tree rather than `serde_json::Value`
//! because JSON turns non-finite floats into `null` (a `ConstantOfShape` filling
//! with `-inf` would not survive), and because numbers are kept as their
//! literal text: an `f32` field then parses its own literal (`0.01`), with no
//! detour through `f64` that would need 17 digits to print.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::fmt;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Attr {
    Null,
    Bool(bool),
    /// A number literal (`3`, `-1`, `0.01`, `1e-5`, `inf`, `-inf`, `NaN`).
    Num(String),
    Str(String),
    List(Vec<Attr>),
    Map(Vec<(String, Attr)>),
}

/// Errors of serialising into or deserialising from an [`Attr`].
#[derive(Debug)]
pub(crate) struct AttrError(pub String);

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AttrError {}

impl ser::Error for AttrError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        AttrError(msg.to_string())
    }
}

impl de::Error for AttrError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        AttrError(msg.to_string())
    }
}

pub(crate) fn to_attr<T: Serialize + ?Sized>(v: &T) -> Result<Attr, AttrError> {
    v.serialize(AttrSer)
}

pub(crate) fn from_attr<T: de::DeserializeOwned>(a: Attr) -> Result<T, AttrError> {
    T::deserialize(a)
}

/// Whether `s` prints bare (as an identifier) in attribute and dim position.
pub(crate) fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Identifiers that mean something else in attribute position and so must be quoted as strings.
fn is_keyword(s: &str) -> bool {
    matches!(s, "null" | "true" | "false")
}

/// Writes `s` as a double-quoted string with escapes.
pub(crate) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a string attribute: bare when it is an identifier, quoted otherwise.
pub(crate) fn write_str_attr(out: &mut String, s: &str) {
    if is_ident(s) && !is_keyword(s) {
        out.push_str(s);
    } else {
        write_quoted(out, s);
    }
}

pub(crate) fn write_attr(out: &mut String, a: &Attr) {
    match a {
        Attr::Null => out.push_str("null"),
        Attr::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Attr::Num(s) => out.push_str(if s == "NaN" { "nan" } else { s }),
        Attr::Str(s) => write_str_attr(out, s),
        Attr::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_attr(out, x);
            }
            out.push(']');
        }
        Attr::Map(entries) => write_map(out, entries),
    }
}

/// Writes `{k: v, ...}`, leaving out `null` entries: they are `None` options,
/// which deserialise from a missing field as well.
pub(crate) fn write_map(out: &mut String, entries: &[(String, Attr)]) {
    out.push('{');
    let mut first = true;
    for (k, v) in entries {
        if *v == Attr::Null {
            continue;
        }
        if !first {
            out.push_str(", ");
        }
        first = false;
        write_str_attr(out, k);
        out.push_str(": ");
        write_attr(out, v);
    }
    out.push('}');
}

// ---------------------------------------------------------------- serialiser

struct AttrSer;

pub(crate) struct SeqSer {
    variant: Option<&'static str>,
    items: Vec<Attr>,
}

pub(crate) struct MapSer {
    variant: Option<&'static str>,
    entries: Vec<(String, Attr)>,
    key: Option<String>,
}

fn wrap(variant: Option<&'static str>, a: Attr) -> Attr {
    match variant {
        Some(v) => Attr::Map(vec![(v.to_string(), a)]),
        None => a,
    }
}

fn num(v: impl fmt::Display) -> Result<Attr, AttrError> {
    Ok(Attr::Num(v.to_string()))
}

impl ser::Serializer for AttrSer {
    type Ok = Attr;
    type Error = AttrError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = SeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = MapSer;

    fn serialize_bool(self, v: bool) -> Result<Attr, AttrError> {
        Ok(Attr::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_i16(self, v: i16) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_i32(self, v: i32) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_i64(self, v: i64) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_u8(self, v: u8) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_u16(self, v: u16) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_u32(self, v: u32) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_u64(self, v: u64) -> Result<Attr, AttrError> {
        num(v)
    }
    fn serialize_f32(self, v: f32) -> Result<Attr, AttrError> {
        Ok(Attr::Num(format!("{v:?}")))
    }
    fn serialize_f64(self, v: f64) -> Result<Attr, AttrError> {
        Ok(Attr::Num(format!("{v:?}")))
    }
    fn serialize_char(self, v: char) -> Result<Attr, AttrError> {
        Ok(Attr::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Attr, AttrError> {
        Ok(Attr::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Attr, AttrError> {
        Ok(Attr::List(
            v.iter().map(|b| Attr::Num(b.to_string())).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Attr, AttrError> {
        Ok(Attr::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Attr, AttrError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Attr, AttrError> {
        Ok(Attr::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Attr, AttrError> {
        Ok(Attr::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Attr, AttrError> {
        Ok(Attr::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Attr, AttrError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Attr, AttrError> {
        Ok(wrap(Some(variant), v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, AttrError> {
        Ok(SeqSer {
            variant: None,
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, AttrError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqSer, AttrError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer, AttrError> {
        Ok(SeqSer {
            variant: Some(variant),
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapSer, AttrError> {
        Ok(MapSer {
            variant: None,
            entries: vec![],
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapSer, AttrError> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<MapSer, AttrError> {
        Ok(MapSer {
            variant: Some(variant),
            entries: vec![],
            key: None,
        })
    }
}

impl SeqSer {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AttrError> {
        self.items.push(v.serialize(AttrSer)?);
        Ok(())
    }
    fn done(self) -> Result<Attr, AttrError> {
        Ok(wrap(self.variant, Attr::List(self.items)))
    }
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AttrError> {
        self.push(v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AttrError> {
        self.push(v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AttrError> {
        self.push(v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

impl ser::SerializeTupleVariant for SeqSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AttrError> {
        self.push(v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

impl MapSer {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> Result<(), AttrError> {
        self.entries.push((key.to_string(), v.serialize(AttrSer)?));
        Ok(())
    }
    fn done(self) -> Result<Attr, AttrError> {
        Ok(wrap(self.variant, Attr::Map(self.entries)))
    }
}

impl ser::SerializeMap for MapSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), AttrError> {
        self.key = Some(match k.serialize(AttrSer)? {
            Attr::Str(s) | Attr::Num(s) => s,
            other => {
                return Err(AttrError(format!(
                    "map key must be a string, got {other:?}"
                )))
            }
        });
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), AttrError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| AttrError("map value without a key".into()))?;
        self.field(&key, v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

impl ser::SerializeStruct for MapSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), AttrError> {
        self.field(key, v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

impl ser::SerializeStructVariant for MapSer {
    type Ok = Attr;
    type Error = AttrError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), AttrError> {
        self.field(key, v)
    }
    fn end(self) -> Result<Attr, AttrError> {
        self.done()
    }
}

// -------------------------------------------------------------- deserialiser

impl Attr {
    fn describe(&self) -> String {
        let mut s = String::new();
        write_attr(&mut s, self);
        if s.len() > 40 {
            let cut = (0..=40).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            s.truncate(cut);
            s.push('…');
        }
        s
    }

    fn float_text(&self) -> Option<&str> {
        match self {
            Attr::Num(s) | Attr::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn bad(a: &Attr, expected: &str) -> AttrError {
    AttrError(format!("expected {expected}, found `{}`", a.describe()))
}

impl<'de> IntoDeserializer<'de, AttrError> for Attr {
    type Deserializer = Attr;
    fn into_deserializer(self) -> Attr {
        self
    }
}

impl<'de> de::Deserializer<'de> for Attr {
    type Error = AttrError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AttrError> {
        match self {
            Attr::Null => visitor.visit_unit(),
            Attr::Bool(b) => visitor.visit_bool(b),
            Attr::Num(s) => {
                if let Ok(u) = s.parse::<u64>() {
                    visitor.visit_u64(u)
                } else if let Ok(i) = s.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(f) = s.parse::<f64>() {
                    visitor.visit_f64(f)
                } else {
                    Err(AttrError(format!("`{s}` is not a number")))
                }
            }
            Attr::Str(s) => visitor.visit_string(s),
            Attr::List(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter());
                let v = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(v)
            }
            Attr::Map(entries) => {
                let mut map = MapDeserializer::new(entries.into_iter());
                let v = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(v)
            }
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AttrError> {
        match self.float_text().and_then(|s| s.parse::<f32>().ok()) {
            Some(f) => visitor.visit_f32(f),
            None => Err(bad(&self, "a number")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AttrError> {
        match self.float_text().and_then(|s| s.parse::<f64>().ok()) {
            Some(f) => visitor.visit_f64(f),
            None => Err(bad(&self, "a number")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AttrError> {
        match self {
            Attr::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, AttrError> {
        match self {
            Attr::Null => visitor.visit_unit(),
            other => Err(bad(&other, "null")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, AttrError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, AttrError> {
        match self {
            Attr::Str(s) => visitor.visit_enum(EnumDe {
                variant: s,
                value: Attr::Null,
            }),
            Attr::Map(mut entries) if entries.len() == 1 => {
                let (variant, value) = entries.remove(0);
                visitor.visit_enum(EnumDe { variant, value })
            }
            other => Err(bad(&other, "a variant name or `{variant: {...}}`")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct EnumDe {
    variant: String,
    value: Attr,
}

impl<'de> de::EnumAccess<'de> for EnumDe {
    type Error = AttrError;
    type Variant = Attr;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Attr), AttrError> {
        let v = seed.deserialize(IntoDeserializer::<AttrError>::into_deserializer(
            self.variant,
        ))?;
        Ok((v, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for Attr {
    type Error = AttrError;
    fn unit_variant(self) -> Result<(), AttrError> {
        match self {
            Attr::Null => Ok(()),
            Attr::Map(m) if m.is_empty() => Ok(()),
            other => Err(bad(&other, "no attributes")),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, AttrError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, AttrError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, AttrError> {
        match self {
            // A struct variant written without attributes: every field takes its default (`None`).
            Attr::Null => de::Deserializer::deserialize_any(Attr::Map(vec![]), visitor),
            other => de::Deserializer::deserialize_any(other, visitor),
        }
    }
}
