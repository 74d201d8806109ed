//! Reads an object field by field, recording every problem with its path instead of stopping at the
//! first (which is all serde's derive can do), and flags the keys nobody asked for as unknown.

use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::problems::{Problems, child, index};

pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
    asked: Vec<&'static str>,
}

/// Type name for messages: what the input holds where something else was expected.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl<'a> Fields<'a> {
    /// `None` (and a problem) when `value` is not a mapping.
    pub(crate) fn of(value: &'a Value, path: &str, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self { map, path: path.to_string(), asked: Vec::new() }),
            other => {
                problems.push(path, format!("expected a mapping, found {}", kind_of(other)));
                None
            }
        }
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// The raw value, if present and not null.
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.asked.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A value of any serde type; a type mismatch becomes a problem at the field's path.
    pub(crate) fn get<T: DeserializeOwned>(&mut self, key: &'static str, problems: &mut Problems) -> Option<T> {
        let v = self.raw(key)?;
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(self.path_of(key), e.to_string());
                None
            }
        }
    }

    pub(crate) fn required<T: DeserializeOwned>(&mut self, key: &'static str, problems: &mut Problems) -> Option<T> {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.asked.push(key);
            problems.push(self.path_of(key), "required");
            return None;
        }
        self.get(key, problems)
    }

    pub(crate) fn string(&mut self, key: &'static str, problems: &mut Problems) -> Option<String> {
        let v = self.raw(key)?;
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                problems.push(self.path_of(key), format!("expected a string, found {}", kind_of(other)));
                None
            }
        }
    }

    /// A string parsed with `FromStr`; the parser's message becomes the problem.
    pub(crate) fn parsed<T>(&mut self, key: &'static str, problems: &mut Problems) -> Option<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let s = self.string(key, problems)?;
        match s.parse() {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(self.path_of(key), e.to_string());
                None
            }
        }
    }

    /// A list of strings each parsed with `FromStr`; each bad item is a problem at `key[i]`.
    pub(crate) fn parsed_list<T>(&mut self, key: &'static str, problems: &mut Problems) -> Vec<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.string_list(key, problems)
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| match s.parse::<T>() {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(index(&self.path_of(key), i), e.to_string());
                    None
                }
            })
            .collect()
    }

    pub(crate) fn string_list(&mut self, key: &'static str, problems: &mut Problems) -> Vec<String> {
        let Some(v) = self.raw(key) else { return Vec::new() };
        let Value::Array(items) = v else {
            problems.push(self.path_of(key), format!("expected a list, found {}", kind_of(v)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => {
                    problems.push(index(&self.path_of(key), i), format!("expected a string, found {}", kind_of(other)))
                }
            }
        }
        out
    }

    /// An integer within `range`; out-of-range and non-integers are problems.
    pub(crate) fn int_in(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<i64>,
        problems: &mut Problems,
    ) -> Option<i64> {
        let v = self.raw(key)?;
        match v.as_i64() {
            Some(n) if range.contains(&n) => Some(n),
            Some(n) => {
                problems.push(self.path_of(key), format!("{n} is out of range {}..={}", range.start(), range.end()));
                None
            }
            None => {
                problems.push(self.path_of(key), format!("expected an integer, found {}", kind_of(v)));
                None
            }
        }
    }

    /// Reports every key that no reader asked for. Call after reading all known fields.
    pub(crate) fn finish(self, problems: &mut Problems) {
        for key in self.map.keys() {
            if !self.asked.contains(&key.as_str()) {
                let mut known = self.asked.clone();
                known.sort_unstable();
                known.dedup();
                problems.push(child(&self.path, key), format!("unknown key (known keys here: {})", known.join(", ")));
            }
        }
    }
}
