//! Objects whose fields are resolved in place, one after the other.
//!
//! async-graphql resolves every field of an object as a future of its own: boxed, pushed into a
//! `FuturesUnordered` (a task allocated per field, with its waker) and polled through it. For a
//! field that reads a value the object already holds, that machinery is most of its cost: on a
//! history page of 50 jobs it is several hundred tasks per request. [`Inline`] resolves the
//! fields that never wait in place, and runs only the fields that may wait (a loader, the
//! database) side by side as before, so a field that waits still does not hold up the others.
//!
//! A list of such objects, [`InlineList`], polls its items in place too, side by side, where
//! async-graphql allocates a task per item of a list longer than 30.
//!
//! The schema does not change: `Inline<T>` is the type `T`, with `T`'s name and fields. What a
//! field answers does not change either: it is the same resolver, called the same way. Only
//! selections that async-graphql would treat the same way are taken in place (fields without
//! custom directives, and fragments); anything else goes through `T`'s own resolution. The
//! schema's one extension (`traces`) looks at operations, not at fields, so skipping the
//! extensions' field hook changes nothing it records.
//!
//! Where a request allows it ([`WrittenInPlace`]: its document passed validation and selects no
//! response key twice, so no value of it is ever merged), an object is written as JSON as its
//! fields resolve instead of built as a value: the fields a type writes itself
//! ([`InlineFields::write_field`]) go straight into its text, the others as their values
//! serialize. The text travels up as a value of bytes (`graphql::json::raw`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::LazyLock;

use async_graphql::futures_util::FutureExt as _;
use async_graphql::futures_util::future::join_all;
use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry;
use async_graphql::indexmap::map::raw_entry_v1::{RawEntryApiV1 as _, RawEntryMut};
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{
    ContainerType, Context, ContextSelectionSet, ID, Name, OutputType, Positioned, ScalarType,
    ServerResult, Value,
};

use smallvec::SmallVec;

use super::json;

/// What becomes of a field of an [`InlineFields`] type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// It may wait for something outside the object (a loader, the database): such fields run
    /// side by side.
    Waits,
    /// The type writes its value itself ([`InlineFields::write_field`] with this number): a
    /// field of the object alone, of a scalar or an enum type.
    Writes(usize),
    /// It is resolved in place, through the object's resolver.
    Resolves,
    /// An object the object may hold already (a job's submitter read with its page), written
    /// by the type ([`InlineFields::write_field`] with this number) where it can, straight
    /// into the object's text ([`write_nested`]); it waits otherwise.
    Nests(usize),
}

/// An object type whose fields are known to wait or not.
pub trait InlineFields: ContainerType + OutputType {
    /// The plan of the field `name` (the schema's name): one lookup tells it all.
    fn plan(name: &str) -> Plan;

    /// Appends the JSON of the value of the field that [`InlineFields::plan`] numbered `at`,
    /// as its resolver gives it; `false`, with nothing appended, when it cannot.
    fn write_field(&self, _ctx: &Context<'_>, _at: usize, _out: &mut Vec<u8>) -> bool {
        false
    }
}

impl<T: InlineFields> InlineFields for &T {
    fn plan(name: &str) -> Plan {
        T::plan(name)
    }

    fn write_field(&self, ctx: &Context<'_>, at: usize, out: &mut Vec<u8>) -> bool {
        T::write_field(self, ctx, at, out)
    }
}

/// Request data saying that the request's objects may be written as JSON as they are
/// resolved: its document selects no response key twice (`Document::keys_unique`), so no
/// value of it is merged with another (which needs them as values).
pub struct WrittenInPlace;

/// A value a field resolver returns, written as JSON as async-graphql would write it.
pub trait WriteJson {
    /// Appends the JSON; `false` when it cannot (the resolver's error), with `out` as it was.
    fn write_json(&self, out: &mut Vec<u8>) -> bool;
}

impl WriteJson for str {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        json::write_str(out, self).is_ok()
    }
}

impl WriteJson for String {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        self.as_str().write_json(out)
    }
}

impl WriteJson for ID {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        self.as_str().write_json(out)
    }
}

impl<T: WriteJson + ?Sized> WriteJson for &T {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        T::write_json(self, out)
    }
}

impl<T: WriteJson> WriteJson for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Some(value) => value.write_json(out),
            None => {
                out.extend_from_slice(b"null");
                true
            }
        }
    }
}

impl<T: WriteJson, E> WriteJson for Result<T, E> {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        self.as_ref().is_ok_and(|value| value.write_json(out))
    }
}

/// Scalars written from the value their `ScalarType` gives, as async-graphql resolves them.
macro_rules! write_json_by_value {
    ($($ty:ty),* $(,)?) => {$(
        impl WriteJson for $ty {
            fn write_json(&self, out: &mut Vec<u8>) -> bool {
                json::write_value(out, &ScalarType::to_value(self)).is_ok()
            }
        }
    )*};
}

write_json_by_value!(bool, i32, i64, f64);

impl WriteJson for chrono::DateTime<chrono::Utc> {
    /// As async-graphql writes a time (`to_rfc3339`: `+00:00`, and the fraction of a second in
    /// 3, 6 or 9 digits as it needs), written digit by digit rather than formatted into a
    /// string of its own. Years of other than four digits, and leap seconds, are left to chrono.
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        use chrono::{Datelike as _, Timelike as _};
        let time = self.naive_utc();
        let (year, nano) = (time.year(), time.nanosecond());
        if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
            return json::write_value(out, &ScalarType::to_value(self)).is_ok();
        }
        // `"YYYY-MM-DDTHH:MM:SS.fffffffff+00:00"` at most.
        let mut text = [0u8; 38];
        let mut at = 0;
        let mut put = |value: u32, width: usize, then: Option<u8>| {
            let mut value = value;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
            at += width;
            if let Some(then) = then {
                text[at] = then;
                at += 1;
            }
        };
        put(0, 0, Some(b'"'));
        put(year as u32, 4, Some(b'-'));
        put(time.month(), 2, Some(b'-'));
        put(time.day(), 2, Some(b'T'));
        put(time.hour(), 2, Some(b':'));
        put(time.minute(), 2, Some(b':'));
        put(time.second(), 2, None);
        if nano != 0 {
            put(0, 0, Some(b'.'));
            if nano % 1_000_000 == 0 {
                put(nano / 1_000_000, 3, None);
            } else if nano % 1_000 == 0 {
                put(nano / 1_000, 6, None);
            } else {
                put(nano, 9, None);
            }
        }
        out.extend_from_slice(&text[..at]);
        out.extend_from_slice(b"+00:00\"");
        true
    }
}

impl WriteJson for async_graphql::Json<serde_json::Value> {
    fn write_json(&self, out: &mut Vec<u8>) -> bool {
        // As async-graphql resolves it.
        let value = async_graphql::to_value(&self.0).ok().unwrap_or_default();
        json::write_value(out, &value).is_ok()
    }
}

/// Enums written by the name async-graphql gives their values (`enum_value`, without the value).
macro_rules! write_json_of_enums {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::graphql::inline::WriteJson for $ty {
            fn write_json(&self, out: &mut Vec<u8>) -> bool {
                use async_graphql::resolver_utils::EnumType as _;
                <$ty>::items()
                    .iter()
                    .find(|item| item.value == *self)
                    .is_some_and(|item| $crate::graphql::json::write_str(out, item.name).is_ok())
            }
        }
    )*};
}
pub(crate) use write_json_of_enums;

/// A Rust field name as the schema spells it (`tool_version`: `toolVersion`).
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The [`InlineFields`] of `$ty`, from its fields as their resolvers are declared
/// (`name(args)`): a field that takes the object alone (`(&self)`) is written by `$ty` itself,
/// one that takes anything more (the request's context) may wait. Fields not named are
/// resolved in place. A field named under `nested` (`name => writer`) is an object field
/// (`Plan::Nests`) its `writer` (`fn(&$ty, &Context, &mut Vec<u8>) -> bool`) writes where the
/// object holds its value already, with [`write_nested`].
macro_rules! inline_fields {
    ($ty:ty { $($name:ident $args:tt),* $(,)? } $(nested { $($nested:ident => $writer:expr),* $(,)? })?) => {
        impl $crate::graphql::inline::InlineFields for $ty {
            fn plan(name: &str) -> $crate::graphql::inline::Plan {
                Self::fields()
                    .0
                    .get(name)
                    .copied()
                    .unwrap_or($crate::graphql::inline::Plan::Resolves)
            }

            fn write_field(
                &self,
                ctx: &async_graphql::Context<'_>,
                at: usize,
                out: &mut Vec<u8>,
            ) -> bool {
                Self::fields().1.get(at).is_some_and(|write| write(self, ctx, out))
            }
        }

        impl $ty {
            /// The plans of the fields by name, and the writers they number.
            #[allow(clippy::type_complexity)]
            fn fields() -> &'static (
                rustc_hash::FxHashMap<String, $crate::graphql::inline::Plan>,
                Vec<fn(&$ty, &async_graphql::Context<'_>, &mut Vec<u8>) -> bool>,
            ) {
                type Write = fn(&$ty, &async_graphql::Context<'_>, &mut Vec<u8>) -> bool;
                // Asked for every field of every object of a page: a map hashed with FxHash.
                static FIELDS: std::sync::LazyLock<(
                    rustc_hash::FxHashMap<String, $crate::graphql::inline::Plan>,
                    Vec<Write>,
                )> = std::sync::LazyLock::new(|| {
                    let mut plans = rustc_hash::FxHashMap::default();
                    let mut writers: Vec<Write> = Vec::new();
                    $(
                        let name = $crate::graphql::inline::camel_case(stringify!($name));
                        let written: Option<Write> =
                            $crate::graphql::inline::written!($ty, $name $args);
                        let plan = match written {
                            Some(write) => {
                                writers.push(write);
                                $crate::graphql::inline::Plan::Writes(writers.len() - 1)
                            }
                            None => $crate::graphql::inline::Plan::Waits,
                        };
                        plans.insert(name, plan);
                    )*
                    $($(
                        writers.push($writer);
                        plans.insert(
                            $crate::graphql::inline::camel_case(stringify!($nested)),
                            $crate::graphql::inline::Plan::Nests(writers.len() - 1),
                        );
                    )*)?
                    (plans, writers)
                });
                &FIELDS
            }
        }
    };
}
pub(crate) use inline_fields;

/// The writer of a field whose resolver takes the object alone; none for the others.
macro_rules! written {
    ($ty:ty, $name:ident (&self)) => {
        Some(
            |object: &$ty, ctx: &async_graphql::Context<'_>, out: &mut Vec<u8>| {
                $crate::graphql::inline::write_ready(object.$name(ctx), out)
            },
        )
    };
    ($ty:ty, $name:ident $args:tt) => {
        None
    };
}
pub(crate) use written;

/// Writes the value of a resolver's future that is ready at once (a field of the object alone);
/// `false` for one that is not.
pub fn write_ready<F: Future<Output: WriteJson>>(future: F, out: &mut Vec<u8>) -> bool {
    future
        .now_or_never()
        .is_some_and(|value| value.write_json(out))
}

/// `T`, with the fields that do not wait resolved in place.
pub struct Inline<T>(pub T);

impl<T: InlineFields> OutputType for Inline<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn qualified_type_name() -> String {
        T::qualified_type_name()
    }

    fn introspection_type_name(&self) -> Cow<'static, str> {
        self.0.introspection_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let mut fields = Fields::new();
        if !collect(ctx, &self.0, ctx.item, &mut fields) {
            return self.0.resolve(ctx, field).await;
        }
        if ctx.data_opt::<WrittenInPlace>().is_some() {
            return Ok(self.written(ctx, &fields).await);
        }
        // The fields that wait are left `None` here, and resolved next.
        let mut values: Vec<Option<ServerResult<Value>>> = Vec::with_capacity(fields.len());
        for field in &fields {
            let name = field.node.name.node.as_str();
            if name == "__typename" {
                values.push(Some(Ok(Value::String(
                    self.0.introspection_type_name().into_owned(),
                ))));
            } else if matches!(
                plan_of::<T>(&field.node.name.node),
                Plan::Waits | Plan::Nests(_)
            ) {
                values.push(None);
            } else {
                values.push(Some(value_of(ctx, &self.0, field).await));
            }
        }
        let first = values.iter().position(Option::is_none);
        let more = first.is_some_and(|first| values[first + 1..].iter().any(Option::is_none));
        match first {
            None => {}
            Some(at) if !more => values[at] = Some(value_of(ctx, &self.0, fields[at]).await),
            Some(_) => {
                let waiting: Vec<usize> = values
                    .iter()
                    .enumerate()
                    .filter_map(|(at, value)| value.is_none().then_some(at))
                    .collect();
                let done =
                    join_in_order(waiting.iter().map(|at| value_of(ctx, &self.0, fields[*at])))
                        .await;
                for (at, value) in waiting.into_iter().zip(done) {
                    values[at] = Some(value);
                }
            }
        }
        let mut object = IndexMap::with_capacity_and_hasher(fields.len(), HASHER.clone());
        for (field, value) in fields.iter().zip(values) {
            match value.expect("every field was resolved") {
                Ok(value) => insert_key(&mut object, field.node.response_key().node.clone(), value),
                Err(err) => ctx.add_error(err),
            }
        }
        Ok(if object.is_empty() {
            Value::Null
        } else {
            Value::Object(object)
        })
    }
}

impl<T: InlineFields> Inline<T> {
    /// The object as JSON written as its fields are resolved ([`json::raw`]): the fields that
    /// wait side by side first, then each in order, written by `T` itself where it can
    /// ([`InlineFields::write_field`]), from its resolved value otherwise. A field whose
    /// resolver fails is left out, its error added, as in the object resolved as a value.
    async fn written(&self, ctx: &ContextSelectionSet<'_>, fields: &[&Positioned<Field>]) -> Value {
        let mut plans = plans_of::<T>(fields);
        // An object field written in place is written in turn; beside fields that wait, it
        // waits with them (it may have to, and then side by side with them).
        if plans.contains(&Some(Plan::Waits)) {
            for plan in &mut plans {
                if let Some(Plan::Nests(_)) = plan {
                    *plan = Some(Plan::Waits);
                }
            }
        }
        // The values of the fields that wait, side by side, popped in their order.
        let waiting: Fields<'_> = fields
            .iter()
            .zip(&plans)
            .filter(|(_, plan)| **plan == Some(Plan::Waits))
            .map(|(field, _)| *field)
            .collect();
        let mut waited: SmallVec<[ServerResult<Value>; 1]> = match waiting.as_slice() {
            [] => SmallVec::new(),
            [field] => smallvec::smallvec![value_of(ctx, &self.0, field).await],
            _ => join_in_order(waiting.iter().map(|field| value_of(ctx, &self.0, field)))
                .await
                .into(),
        };
        waited.reverse();
        let mut out = Vec::with_capacity(expected_size(ctx.item, fields.len()));
        out.push(b'{');
        let mut empty = true;
        for (field, plan) in fields.iter().zip(plans) {
            let before = out.len();
            write_key(&mut out, field, empty);
            let written = match plan {
                None => self.0.introspection_type_name().write_json(&mut out),
                Some(Plan::Waits) => {
                    let value = waited.pop().expect("a value for each field that waits");
                    write_resolved(ctx, value, &mut out)
                }
                Some(Plan::Writes(at) | Plan::Nests(at))
                    if self.0.write_field(&ctx.with_field(field), at, &mut out) =>
                {
                    true
                }
                Some(_) => write_resolved(ctx, value_of(ctx, &self.0, field).await, &mut out),
            };
            if written {
                empty = false;
            } else {
                out.truncate(before);
            }
        }
        if empty {
            return Value::Null;
        }
        out.push(b'}');
        remember_size(ctx.item, out.len());
        json::raw(out)
    }
}

/// The plans of `fields` of `T`; `None` for `__typename`.
fn plans_of<T: InlineFields>(fields: &[&Positioned<Field>]) -> SmallVec<[Option<Plan>; 16]> {
    fields
        .iter()
        .map(|field| match field.node.name.node.as_str() {
            "__typename" => None,
            _ => Some(plan_of::<T>(&field.node.name.node)),
        })
        .collect()
}

/// Appends the response key of `field` (a comma before it unless `first`) and its colon.
fn write_key(out: &mut Vec<u8>, field: &Positioned<Field>, first: bool) {
    if !first {
        out.push(b',');
    }
    // A response key is a name: letters, digits and `_`, nothing to escape.
    out.push(b'"');
    out.extend_from_slice(field.node.response_key().node.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `object`, the value of the object field `ctx` is at, as the JSON `Inline<T>` would
/// write for it, straight into its parent's text: for an object its parent holds already (a
/// job's submitter read with its page). Where the parent's resolver would give it as a value
/// of its own text, copied into the parent's, nothing is copied. Only when every field it
/// selects writes itself; false otherwise, with `out` as it was and nothing added to the
/// response (no error), so that the field is then resolved as any other.
pub fn write_nested<T: InlineFields>(object: &T, ctx: &Context<'_>, out: &mut Vec<u8>) -> bool {
    write_object(
        object,
        &ctx.with_selection_set(&ctx.item.node.selection_set),
        out,
    )
}

/// Appends `object` as [`write_nested`] does, or `null` for none: the value of a nullable object
/// field.
pub fn write_nested_or_null<T: InlineFields>(
    object: Option<&T>,
    ctx: &Context<'_>,
    out: &mut Vec<u8>,
) -> bool {
    match object {
        Some(object) => write_nested(object, ctx, out),
        None => {
            out.extend_from_slice(b"null");
            true
        }
    }
}

/// Appends `object` with the fields `ctx`'s selection set selects, when every one of them
/// writes itself; false otherwise, with `out` as it was and nothing added to the response. A
/// selection set with a field that waits or is resolved is held as refused ([`REFUSED`]), so
/// that the other objects of a page selected by it are refused before anything is written.
fn write_object<T: InlineFields>(
    object: &T,
    ctx: &ContextSelectionSet<'_>,
    out: &mut Vec<u8>,
) -> bool {
    let of = tag_of::<T>();
    if refused(ctx.item, of) {
        return false;
    }
    let mut fields = Fields::new();
    if !collect(ctx, object, ctx.item, &mut fields) {
        refuse(ctx.item, of);
        return false;
    }
    let start = out.len();
    out.push(b'{');
    for (at, field) in fields.iter().enumerate() {
        write_key(out, field, at == 0);
        let written = match field.node.name.node.as_str() {
            "__typename" => object.introspection_type_name().write_json(out),
            _ => match plan_of::<T>(&field.node.name.node) {
                Plan::Writes(at) | Plan::Nests(at) => {
                    object.write_field(&ctx.with_field(field), at, out)
                }
                Plan::Waits | Plan::Resolves => {
                    refuse(ctx.item, of);
                    false
                }
            },
        };
        if !written {
            out.truncate(start);
            return false;
        }
    }
    if fields.is_empty() {
        // As an object with no field left is answered.
        out.truncate(start);
        out.extend_from_slice(b"null");
    } else {
        out.push(b'}');
    }
    true
}

/// Selection sets found lately, on this thread, not to write themselves for a type (a field
/// waits or is resolved, or a selection is async-graphql's to resolve), by their address and the
/// type's tag ([`tag_of`]). A hint only: should a dropped document's address be reused by
/// another, an object that could have been written in place is resolved, as any other.
const REFUSED_SLOTS: usize = 16;

thread_local! {
    static REFUSED: RefCell<[(usize, usize); REFUSED_SLOTS]> =
        const { RefCell::new([(0, 0); REFUSED_SLOTS]) };
}

fn refused_slot(set: &Positioned<SelectionSet>, of: usize) -> (usize, usize) {
    let address = std::ptr::from_ref(set) as usize;
    (address, ((address >> 4) ^ (of >> 4)) % REFUSED_SLOTS)
}

fn refused(set: &Positioned<SelectionSet>, of: usize) -> bool {
    let (address, at) = refused_slot(set, of);
    REFUSED.with_borrow(|refused| refused[at] == (address, of))
}

fn refuse(set: &Positioned<SelectionSet>, of: usize) {
    let (address, at) = refused_slot(set, of);
    REFUSED.with_borrow_mut(|refused| refused[at] = (address, of));
}

/// The sizes of this thread's recently written objects, by the address of their selection set
/// (one allocation of a parsed document, shared by every object of a page and by every request
/// of the cached document), each in the slot that address picks: an object of a page is
/// written into a buffer the size of the one before it, rather than grown as it is written.
const SIZE_SLOTS: usize = 16;

thread_local! {
    static SIZES: RefCell<[(usize, usize); SIZE_SLOTS]> = const { RefCell::new([(0, 0); SIZE_SLOTS]) };
}

fn size_slot(set: &Positioned<SelectionSet>) -> (usize, usize) {
    let address = std::ptr::from_ref(set) as usize;
    (address, (address >> 4) % SIZE_SLOTS)
}

/// The buffer to write an object of `set` into: a quarter larger than the last one written (an
/// object's names and texts vary in length), or a guess from its number of fields.
fn expected_size(set: &Positioned<SelectionSet>, fields: usize) -> usize {
    let (address, at) = size_slot(set);
    SIZES.with_borrow(|sizes| match sizes[at] {
        (held, size) if held == address => size + size / 4,
        _ => 32 * fields,
    })
}

fn remember_size(set: &Positioned<SelectionSet>, size: usize) {
    let (address, at) = size_slot(set);
    SIZES.with_borrow_mut(|sizes| sizes[at] = (address, size));
}

/// Appends a field's resolved value; `false` for an error, which is added to the response.
fn write_resolved(
    ctx: &ContextSelectionSet<'_>,
    value: ServerResult<Value>,
    out: &mut Vec<u8>,
) -> bool {
    match value {
        Ok(value) => json::write_value(out, &value).is_ok(),
        Err(err) => {
            ctx.add_error(err);
            false
        }
    }
}

/// The value of `field` of `root`, as `root`'s own resolver gives it (null for a field it does
/// not know, as async-graphql has it).
async fn value_of<'a, T: ContainerType>(
    ctx: &'a ContextSelectionSet<'a>,
    root: &'a T,
    field: &'a Positioned<Field>,
) -> ServerResult<Value> {
    root.resolve_field(&ctx.with_field(field))
        .await
        .map(Option::unwrap_or_default)
}

/// A list of objects whose items are resolved side by side, as async-graphql resolves a list,
/// but joined in place ([`join_in_order`]). async-graphql joins a list of more than 30 items
/// through a `FuturesOrdered`: a task allocated per item, into which each item's future is
/// moved. Where the request's objects are written in place ([`WrittenInPlace`]) and every
/// field the items select writes itself, the list is written whole, item after item, into one
/// text.
pub struct InlineList<T>(pub Vec<Inline<T>>);

impl<T: InlineFields> OutputType for InlineList<T> {
    fn type_name() -> Cow<'static, str> {
        Vec::<Inline<T>>::type_name()
    }

    fn qualified_type_name() -> String {
        Vec::<Inline<T>>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Vec::<Inline<T>>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        if ctx.data_opt::<WrittenInPlace>().is_some()
            && let Some(written) = self.written(ctx)
        {
            return Ok(written);
        }
        let items = self
            .0
            .iter()
            .enumerate()
            .map(|(at, item)| item_value(ctx, item, at, field));
        join_in_order(items)
            .await
            .into_iter()
            .collect::<ServerResult<Vec<_>>>()
            .map(Value::List)
    }
}

impl<T: InlineFields> InlineList<T> {
    /// The list as JSON, each item written by [`write_object`]; none when an item cannot be
    /// (a field that waits or is resolved), with nothing added to the response.
    fn written(&self, ctx: &ContextSelectionSet<'_>) -> Option<Value> {
        let items = self.0.len();
        let mut out = Vec::with_capacity(2 + items * expected_size(ctx.item, 8));
        out.push(b'[');
        for (at, item) in self.0.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            if !write_object(&item.0, ctx, &mut out) {
                return None;
            }
        }
        out.push(b']');
        if let Some(size) = out.len().checked_div(items) {
            remember_size(ctx.item, size);
        }
        Some(json::raw(out))
    }
}

/// The value of the item at `at` of a list, errors placed at its index, as async-graphql has it.
async fn item_value<'a, T: OutputType>(
    ctx: &'a ContextSelectionSet<'a>,
    item: &'a T,
    at: usize,
    field: &'a Positioned<Field>,
) -> ServerResult<Value> {
    let ctx_item = ctx.with_index(at);
    item.resolve(&ctx_item, field)
        .await
        .map_err(|err| ctx_item.set_error_path(err))
}

/// Runs `futures` side by side and gives their outputs in their order. futures-util joins up to
/// 30 futures in place, from one allocation, and more through a `FuturesOrdered`: they are
/// joined in groups of 30, and the groups joined alike.
async fn join_in_order<F: Future>(mut futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    const IN_PLACE: usize = 30;
    let (len, _) = futures.size_hint();
    if len <= IN_PLACE {
        return join_all(futures).await;
    }
    let groups = (0..len.div_ceil(IN_PLACE)).map(|_| join_all(futures.by_ref().take(IN_PLACE)));
    let mut outputs = Vec::with_capacity(len);
    for group in join_all(groups.collect::<Vec<_>>()).await {
        outputs.extend(group);
    }
    outputs.extend(join_all(futures).await);
    outputs
}

/// The fields an object selects: on the stack for the objects of most selections.
type Fields<'a> = SmallVec<[&'a Positioned<Field>; 16]>;

/// Gathers the fields that `set` selects on `root`, through its fragments that apply to it.
/// False when a selection needs async-graphql's own resolution: a field with a directive
/// (`@skip` and `@include` are gone by now; a custom one wraps its field), or an unknown
/// fragment (its error is async-graphql's to give).
fn collect<'a, T: OutputType>(
    ctx: &ContextSelectionSet<'a>,
    root: &T,
    set: &'a Positioned<SelectionSet>,
    fields: &mut Fields<'a>,
) -> bool {
    for selection in &set.node.items {
        let (condition, set) = match &selection.node {
            Selection::Field(field) => {
                if !field.node.directives.is_empty() {
                    return false;
                }
                fields.push(field);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let Some(fragment) = ctx.query_env.fragments.get(&spread.node.fragment_name.node)
                else {
                    return false;
                };
                (
                    Some(fragment.node.type_condition.node.on.node.as_str()),
                    &fragment.node.selection_set,
                )
            }
            Selection::InlineFragment(fragment) => (
                fragment
                    .node
                    .type_condition
                    .as_ref()
                    .map(|condition| condition.node.on.node.as_str()),
                &fragment.node.selection_set,
            ),
        };
        // As async-graphql decides: the object's own type, an interface it implements, or no
        // condition at all.
        let applies = condition.is_none_or(|condition| {
            let name = root.introspection_type_name();
            name == condition
                || T::type_name() == condition
                || ctx
                    .schema_env
                    .registry
                    .implements
                    .get(&*name)
                    .is_some_and(|interfaces| interfaces.contains(condition))
        });
        if applies && !collect(ctx, root, set, fields) {
            return false;
        }
    }
    true
}

/// The hasher of the objects resolved in place: one for all of them, so that a response key's
/// hash, worked out once ([`key_hash`]), serves every object of a page that has the key. It is
/// seeded at random as any map's, once per process.
static HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// What this thread worked out lately about names of documents (response keys, field names),
/// each in one of the two slots its address picks. A name of a document is one allocation,
/// shared by every object of a page and by every request of the cached document, so one
/// comparison of addresses finds it; a slot holds its name, so no other name can take that
/// address while it is there. `of` tells apart what is worked out for different types. Two
/// slots per place: with one, two names of a document that picked the same slot (one time in
/// two for a dozen names among 64 slots) took it from each other at every object of a page.
struct Recent<V: Copy> {
    slots: Vec<Option<(Name, usize, V)>>,
}

const SLOTS: usize = 64;
/// Longer names (aliases) are worked out each time rather than held.
const MAX_HELD_KEY: usize = 64;

impl<V: Copy> Recent<V> {
    fn new() -> Self {
        Recent {
            slots: vec![None; SLOTS],
        }
    }

    /// What `work` gives for `name` and `of`, as it gave it last time when that is held.
    fn get(&mut self, name: &Name, of: usize, work: impl FnOnce() -> V) -> V {
        if name.len() > MAX_HELD_KEY {
            return work();
        }
        let address = name.as_str().as_ptr() as usize;
        // The address and the tag mixed (Fibonacci hashing): the top bits pick a pair of slots.
        let mixed = (address ^ of.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let pairs = SLOTS / 2;
        let first = (mixed >> (usize::BITS - pairs.trailing_zeros())) * 2;
        for at in [first, first + 1] {
            if let Some((held, held_of, value)) = &self.slots[at]
                && held.as_str().as_ptr() as usize == address
                && held.len() == name.len()
                && *held_of == of
            {
                return *value;
            }
        }
        // The newest first; the older of the two is let go.
        let value = work();
        self.slots[first + 1] = self.slots[first].take();
        self.slots[first] = Some((name.clone(), of, value));
        value
    }
}

thread_local! {
    static KEYS: RefCell<Recent<u64>> = RefCell::new(Recent::new());
    static PLANS: RefCell<Recent<Plan>> = RefCell::new(Recent::new());
}

/// The hash of `key` by [`HASHER`].
fn key_hash(key: &Name) -> u64 {
    KEYS.with_borrow_mut(|keys| keys.get(key, 0, || HASHER.hash_one(key)))
}

/// [`InlineFields::plan`] of the field `name` of `T`, looked up once per field of a document
/// rather than once per object.
fn plan_of<T: InlineFields>(name: &Name) -> Plan {
    let of = tag_of::<T>();
    PLANS.with_borrow_mut(|plans| plans.get(name, of, || T::plan(name.as_str())))
}

/// What tells apart what is worked out for `T` from what is for other types: the address of its
/// [`InlineFields::plan`].
fn tag_of<T: InlineFields>() -> usize {
    T::plan as fn(&str) -> Plan as usize
}

/// [`insert`] into an object made with [`HASHER`], hashing the key through [`key_hash`].
fn insert_key(object: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    let hash = key_hash(&key);
    match object
        .raw_entry_mut_v1()
        .from_hash(hash, |held| *held == key)
    {
        RawEntryMut::Vacant(entry) => {
            entry.insert_hashed_nocheck(hash, key, value);
        }
        RawEntryMut::Occupied(mut entry) => merge(entry.get_mut(), value),
    }
}

/// Adds a field's value under its response key; a key selected twice keeps its first value,
/// with the objects under it merged, as async-graphql does.
fn insert(object: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    // One lookup: the key is hashed once, and the map's keys are hashed with SipHash.
    let mut into = match object.entry(key) {
        Entry::Vacant(entry) => {
            entry.insert(value);
            return;
        }
        Entry::Occupied(entry) => entry,
    };
    merge(into.get_mut(), value);
}

/// Merges `value` into the value already under its key: objects key by key, lists of objects
/// item by item; anything else keeps the first value.
fn merge(into: &mut Value, value: Value) {
    // The objects below may come from async-graphql's own resolution, with hashers of their
    // own: they are merged through `insert`, which hashes with the map's hasher.
    match (into, value) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                insert(into, key, value);
            }
        }
        (Value::List(into), Value::List(from)) => {
            for (into, from) in into.iter_mut().zip(from) {
                if let (Value::Object(into), Value::Object(from)) = (into, from) {
                    for (key, value) in from {
                        insert(into, key, value);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_as_the_map_hashes_it_whichever_slot_it_shares() {
        // More keys than slots, each asked twice: slots are shared and taken over.
        let keys: Vec<Name> = (0..SLOTS * 4)
            .map(|i| Name::new(format!("field{i}")))
            .chain([Name::new("x".repeat(MAX_HELD_KEY + 1))])
            .collect();
        let mut object = IndexMap::with_capacity_and_hasher(keys.len(), HASHER.clone());
        for round in 0..2 {
            for (i, key) in keys.iter().enumerate() {
                assert_eq!(key_hash(key), HASHER.hash_one(key), "{key}");
                // A key equal to a held one but at another address.
                let copy = Name::new(key.as_str());
                assert_eq!(key_hash(&copy), HASHER.hash_one(&copy), "{key}");
                insert_key(
                    &mut object,
                    key.clone(),
                    Value::from((i + round * 1000) as i64),
                );
            }
        }
        // Found by the map's own lookups, each holding its first value.
        assert_eq!(object.len(), keys.len());
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(object.get(key), Some(&Value::from(i as i64)), "{key}");
        }
    }

    #[test]
    fn what_is_held_for_a_name_is_told_apart_by_what_it_was_worked_out_for() {
        let mut recent: Recent<(usize, usize)> = Recent::new();
        let names: Vec<Name> = (0..SLOTS * 4).map(|i| Name::new(format!("f{i}"))).collect();
        // Two kinds of answer (as two types' plans), with tags that share slots too.
        for round in 0..3 {
            for (i, name) in names.iter().enumerate() {
                for of in [0x1000, 0x2000, 0x1010] {
                    let copy = Name::new(name.as_str());
                    for name in [name, &copy] {
                        let got = recent.get(name, of, || (i, of));
                        assert_eq!(got, (i, of), "{name} of {of:#x}, round {round}");
                    }
                }
            }
        }
        // Asked again at once, the same name and tag is held, not worked out.
        let name = &names[0];
        recent.get(name, 0x1000, || (0, 0x1000));
        let mut worked = false;
        recent.get(name, 0x1000, || {
            worked = true;
            (0, 0)
        });
        assert!(!worked, "held");
    }

    #[test]
    fn a_time_is_written_as_async_graphql_writes_it() {
        use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
        let by_value = |time: &DateTime<Utc>| {
            let mut out = Vec::new();
            json::write_value(&mut out, &ScalarType::to_value(time)).unwrap();
            String::from_utf8(out).unwrap()
        };
        let mut times: Vec<DateTime<Utc>> = vec![
            DateTime::UNIX_EPOCH,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 15, 12, 30, 5).unwrap(),
            // A leap second.
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap()
                .and_utc(),
        ];
        // Times across the centuries, with every kind of fraction of a second.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let seconds = (seed % 400_000_000_000) as i64 - 62_000_000_000;
            let nanos = match seed % 5 {
                0 => 0,
                1 => (seed >> 8) as u32 % 1_000 * 1_000_000,
                2 => (seed >> 8) as u32 % 1_000_000 * 1_000,
                _ => (seed >> 8) as u32 % 1_000_000_000,
            };
            times.extend(DateTime::from_timestamp(seconds, nanos));
        }
        for time in &times {
            let mut out = Vec::new();
            assert!(time.write_json(&mut out));
            assert_eq!(String::from_utf8(out).unwrap(), by_value(time), "{time:?}");
        }
    }
}
