//! Typed keyed state, as Flink's: a keyed function declares its states by descriptor in `open`
//! and keeps the handles it gets; every access goes through the keyed context, so it is scoped
//! to the key being processed (or whose timer fires).
//!
//! ```
//! use shardflow_core::keyed::{KeyedContext, KeyedOpenContext, KeyedProcessFunction};
//! use shardflow_core::operator::{Collector, process::UserError};
//! use shardflow_core::state::{ValueState, ValueStateDescriptor};
//!
//! /// Emits each key's running count.
//! #[derive(Clone, Default)]
//! struct Count {
//!     count: Option<ValueState<u64>>,
//! }
//!
//! impl KeyedProcessFunction<String, String, (String, u64)> for Count {
//!     type State = ();
//!     fn open(&mut self, ctx: &mut KeyedOpenContext<'_, String>) -> Result<(), UserError> {
//!         self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
//!         Ok(())
//!     }
//!     fn process_element(&mut self, word: String, ctx: &mut KeyedContext<String, ()>,
//!                        out: &mut Collector<(String, u64)>) -> Result<(), UserError> {
//!         let count = self.count.as_ref().ok_or("not opened")?;
//!         let n = count.get_or_insert_with(ctx, || 0);
//!         *n += 1;
//!         let n = *n;
//!         out.collect((word, n));
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Each state is a [`KeyedTable`] of the operator, in the shard's store (so it may be larger
//! than memory). A value is kept with the processing time it was last written (or read, as its
//! TTL says): a state with a time-to-live treats a value older than it as absent and drops it
//! when it sees it; the store's compaction drops expired values it rewrites. `ListState` and
//! `MapState` stamp each element, as Flink does.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use crate::data::Data;
use crate::error::JobError;
use crate::keyed::{KeyedContext, KeyedTable};
use crate::operator::OperatorContext;
use crate::window::AggregateFunction;

/// How long a state's values live (processing time), as Flink's `StateTtlConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtlConfig {
    pub ttl: Duration,
    pub update: TtlUpdate,
    pub visibility: TtlVisibility,
}

/// What renews a value's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlUpdate {
    /// Writes only (the default).
    #[default]
    OnCreateAndWrite,
    /// Reads too.
    OnReadAndWrite,
}

/// Whether an expired value not yet cleaned up may still be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlVisibility {
    #[default]
    NeverReturnExpired,
    ReturnExpiredIfNotCleanedUp,
}

impl StateTtlConfig {
    /// Values live `ttl` after their last write; expired values are never returned.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            update: TtlUpdate::default(),
            visibility: TtlVisibility::default(),
        }
    }

    pub fn with_update(mut self, update: TtlUpdate) -> Self {
        self.update = update;
        self
    }

    pub fn with_visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }
}

/// A state's TTL as its handle checks it.
#[derive(Debug, Clone, Copy)]
struct Ttl {
    ms: i64,
    on_read: bool,
    return_expired: bool,
}

impl Ttl {
    fn of(config: Option<StateTtlConfig>) -> Option<Ttl> {
        config.map(|c| Ttl {
            ms: i64::try_from(c.ttl.as_millis()).unwrap_or(i64::MAX),
            on_read: c.update == TtlUpdate::OnReadAndWrite,
            return_expired: c.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp,
        })
    }

    #[inline]
    fn expired(&self, stamp: i64, now: i64) -> bool {
        now.saturating_sub(stamp) >= self.ms
    }
}

/// What the store keeps per key of a state with a TTL: the value and the processing time it
/// was last written (renewed). For a list or a map, elements carry their own stamps and this
/// one is the newest of them. A state without a TTL keeps its values bare (a counter's entry
/// is then 24 bytes, not 32: the cache holds a third more of them).
pub type Stamped<X> = (X, i64);

/// The states a keyed operator's function declared, in declaration order.
pub struct StateRegistry<K> {
    /// Each state's table (`KeyedTable<K, (), X>`, or of `Stamped<X>` with a TTL), with its
    /// type's id: checked on every access instead of calling `Any::type_id` through the vtable.
    tables: Vec<(TypeId, Box<dyn Any>)>,
    /// Per table: writes its changed values to the store (its type known where it was made).
    flushes: Vec<fn(&mut dyn Any)>,
    names: Vec<String>,
    ctx: Option<OperatorContext>,
    _k: PhantomData<fn() -> K>,
}

impl<K> Default for StateRegistry<K> {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            flushes: Vec::new(),
            names: Vec::new(),
            ctx: None,
            _k: PhantomData,
        }
    }
}

/// Writes a registered table's changed values to the store.
fn flush_table<K: Data + Hash + Eq, X: Data>(table: &mut dyn Any) {
    if let Some(t) = table.downcast_mut::<KeyedTable<K, (), X>>() {
        t.flush_dirty();
    }
}

impl<K> StateRegistry<K> {
    /// Writes every state's changed values to the store (for a checkpoint).
    pub fn flush_dirty(&mut self) {
        for ((_, table), flush) in self.tables.iter_mut().zip(&self.flushes) {
            flush(table.as_mut());
        }
    }
}

impl<K: Data + Hash + Eq> StateRegistry<K> {
    /// States registered through `ctx` go into its shard's store.
    pub fn new(ctx: Option<OperatorContext>) -> Self {
        Self {
            ctx,
            ..Self::default()
        }
    }

    fn register<X: Data>(
        &mut self,
        name: &str,
        ttl: Option<StateTtlConfig>,
    ) -> Result<u32, JobError> {
        if self.names.iter().any(|n| n == name) {
            return Err(JobError::Config(format!(
                "state '{name}' is declared twice"
            )));
        }
        if ttl.is_some_and(|t| t.ttl.is_zero()) {
            return Err(JobError::Config(format!("state '{name}': a TTL of zero")));
        }
        let (entry, flush) = match Ttl::of(ttl) {
            Some(t) => {
                let table = self.make::<Stamped<X>>(name)?;
                if let Some(ctx) = &self.ctx {
                    ctx.state
                        .expire_in_compaction::<X>(&ctx.state_name(name), t.ms);
                }
                (
                    (
                        TypeId::of::<KeyedTable<K, (), Stamped<X>>>(),
                        Box::new(table) as Box<dyn Any>,
                    ),
                    flush_table::<K, Stamped<X>> as fn(&mut dyn Any),
                )
            }
            None => (
                (
                    TypeId::of::<KeyedTable<K, (), X>>(),
                    Box::new(self.make::<X>(name)?) as Box<dyn Any>,
                ),
                flush_table::<K, X> as fn(&mut dyn Any),
            ),
        };
        self.tables.push(entry);
        self.flushes.push(flush);
        self.names.push(name.to_string());
        Ok(self.tables.len() as u32 - 1)
    }

    fn make<V: Data>(&self, name: &str) -> Result<KeyedTable<K, (), V>, JobError> {
        match &self.ctx {
            Some(ctx) => ctx.keyed_state(name, KeyedTable::new()),
            None => Ok(KeyedTable::new()),
        }
    }

    #[inline]
    fn table<V: 'static>(&mut self, index: u32) -> &mut KeyedTable<K, (), V> {
        let (id, table) = &mut self.tables[index as usize];
        assert!(
            *id == TypeId::of::<KeyedTable<K, (), V>>(),
            "a state handle used with a registry that did not make it"
        );
        // SAFETY: the table's type is `KeyedTable<K, (), V>`: its id was just compared.
        unsafe { &mut *(table.as_mut() as *mut dyn Any as *mut KeyedTable<K, (), V>) }
    }
}

/// What a keyed function's `open` sees: where it runs, and the states it may declare.
pub struct KeyedOpenContext<'a, K> {
    pub(crate) runtime: &'a crate::operator::RuntimeContext,
    pub(crate) states: &'a mut StateRegistry<K>,
}

impl<K> std::ops::Deref for KeyedOpenContext<'_, K> {
    type Target = crate::operator::RuntimeContext;
    fn deref(&self) -> &Self::Target {
        self.runtime
    }
}

impl<K: Data + Hash + Eq> KeyedOpenContext<'_, K> {
    pub fn runtime(&self) -> &crate::operator::RuntimeContext {
        self.runtime
    }

    /// Registers state `name` of values `X`; returns its index and its TTL as handles check it.
    fn declare<X: Data>(
        &mut self,
        name: &str,
        ttl: Option<StateTtlConfig>,
    ) -> Result<(u32, Option<Ttl>), JobError> {
        Ok((self.states.register::<X>(name, ttl)?, Ttl::of(ttl)))
    }

    pub fn value_state<V: Data>(
        &mut self,
        d: ValueStateDescriptor<V>,
    ) -> Result<ValueState<V>, JobError> {
        let (index, ttl) = self.declare::<V>(&d.name, d.ttl)?;
        Ok(ValueState {
            index,
            ttl,
            _v: PhantomData,
        })
    }

    pub fn list_state<T: Data>(
        &mut self,
        d: ListStateDescriptor<T>,
    ) -> Result<ListState<T>, JobError> {
        let (index, ttl) = self.declare::<Vec<(T, i64)>>(&d.name, d.ttl)?;
        Ok(ListState {
            index,
            ttl,
            _t: PhantomData,
        })
    }

    pub fn map_state<UK, UV>(
        &mut self,
        d: MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<UK, UV>, JobError>
    where
        UK: Hash + Eq + 'static,
        UV: 'static,
        HashMap<UK, (UV, i64)>: Data,
    {
        let (index, ttl) = self.declare::<StampedMap<UK, UV>>(&d.name, d.ttl)?;
        Ok(MapState {
            index,
            ttl,
            _kv: PhantomData,
        })
    }

    pub fn reducing_state<T: Data, F>(
        &mut self,
        d: ReducingStateDescriptor<T, F>,
    ) -> Result<ReducingState<T, F>, JobError>
    where
        F: Fn(&mut T, T) + Clone + Send + Sync + 'static,
    {
        let (index, ttl) = self.declare::<T>(&d.name, d.ttl)?;
        Ok(ReducingState {
            index,
            ttl,
            f: d.f,
            _t: PhantomData,
        })
    }

    pub fn aggregating_state<IN, A>(
        &mut self,
        d: AggregatingStateDescriptor<IN, A>,
    ) -> Result<AggregatingState<IN, A>, JobError>
    where
        A: AggregateFunction<IN>,
    {
        let (index, ttl) = self.declare::<A::Acc>(&d.name, d.ttl)?;
        Ok(AggregatingState {
            index,
            ttl,
            agg: d.agg,
            _in: PhantomData,
        })
    }
}

macro_rules! descriptor {
    ($(#[$doc:meta])* $name:ident <$($p:ident),*> { $($field:ident : $ty:ty),* }) => {
        $(#[$doc])*
        pub struct $name<$($p),*> {
            name: String,
            ttl: Option<StateTtlConfig>,
            $($field: $ty,)*
        }

        impl<$($p),*> $name<$($p),*> {
            /// Values live as `ttl` says.
            pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
                self.ttl = Some(ttl);
                self
            }
        }
    };
}

descriptor!(
    /// A value per key: `ValueStateDescriptor::new("count")`.
    ValueStateDescriptor<V> { _v: PhantomData<fn() -> V> }
);
descriptor!(
    /// A list per key.
    ListStateDescriptor<T> { _t: PhantomData<fn() -> T> }
);
descriptor!(
    /// A map per key.
    MapStateDescriptor<UK, UV> { _kv: PhantomData<fn() -> (UK, UV)> }
);
descriptor!(
    /// A value per key that records fold into with `f`.
    ReducingStateDescriptor<T, F> { f: F, _t: PhantomData<fn() -> T> }
);
descriptor!(
    /// An accumulator per key that records are added to with an [`AggregateFunction`].
    AggregatingStateDescriptor<IN, A> { agg: A, _in: PhantomData<fn() -> IN> }
);

impl<V> ValueStateDescriptor<V> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            _v: PhantomData,
        }
    }
}

impl<T> ListStateDescriptor<T> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            _t: PhantomData,
        }
    }
}

impl<UK, UV> MapStateDescriptor<UK, UV> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            _kv: PhantomData,
        }
    }
}

impl<T, F: Fn(&mut T, T)> ReducingStateDescriptor<T, F> {
    pub fn new(name: impl Into<String>, f: F) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            f,
            _t: PhantomData,
        }
    }
}

impl<IN, A: AggregateFunction<IN>> AggregatingStateDescriptor<IN, A> {
    pub fn new(name: impl Into<String>, agg: A) -> Self {
        Self {
            name: name.into(),
            ttl: None,
            agg,
            _in: PhantomData,
        }
    }
}

// Access to the current key's entry of a state whose values are `X` (bare without a TTL,
// stamped with one). With a TTL, an expired entry is dropped when seen (or, if the TTL says so,
// still returned); writes renew it, and reads do if the TTL says so.

/// The current key's value, to read.
#[inline]
fn read<'c, K, S, X: 'static>(
    ctx: &'c mut KeyedContext<'_, K, S>,
    index: u32,
    ttl: Option<Ttl>,
) -> Option<&'c X>
where
    K: Data + Hash + Eq,
{
    let key = ctx.key;
    match ttl {
        None => ctx.states.table::<X>(index).get(key, &()),
        Some(t) if t.on_read => write::<K, S, X>(ctx, index, ttl).map(|x| &*x),
        Some(t) => {
            let now = ctx.clock.now_ms();
            let table = ctx.states.table::<Stamped<X>>(index);
            let expired = table.get(key, &()).is_some_and(|e| t.expired(e.1, now));
            if expired && !t.return_expired {
                table.remove(key, &());
                return None;
            }
            table.get(key, &()).map(|e| &e.0)
        }
    }
}

/// The current key's value, to change in place without renewing it (a list's or a map's own
/// elements carry the stamps that matter); an expired one is dropped first.
#[inline]
fn change<'c, K, S, X: 'static>(
    ctx: &'c mut KeyedContext<'_, K, S>,
    index: u32,
    ttl: Option<Ttl>,
    renew: bool,
) -> Option<&'c mut X>
where
    K: Data + Hash + Eq,
{
    let key = ctx.key;
    let Some(t) = ttl else {
        return ctx.states.table::<X>(index).get_mut(key, &());
    };
    let now = ctx.clock.now_ms();
    let table = ctx.states.table::<Stamped<X>>(index);
    let expired = table.get(key, &()).is_some_and(|e| t.expired(e.1, now));
    if expired && !t.return_expired {
        table.remove(key, &());
        return None;
    }
    let e = table.get_mut(key, &())?;
    if renew {
        e.1 = now;
    }
    Some(&mut e.0)
}

/// The current key's value, to write (renewed).
#[inline]
fn write<'c, K, S, X: 'static>(
    ctx: &'c mut KeyedContext<'_, K, S>,
    index: u32,
    ttl: Option<Ttl>,
) -> Option<&'c mut X>
where
    K: Data + Hash + Eq,
{
    change::<K, S, X>(ctx, index, ttl, true)
}

/// The current key's value to write, made by `make` if it has none (or an expired one).
#[inline]
fn upsert<'c, K, S, X: 'static>(
    ctx: &'c mut KeyedContext<'_, K, S>,
    index: u32,
    ttl: Option<Ttl>,
    make: impl FnOnce() -> X,
) -> &'c mut X
where
    K: Data + Hash + Eq,
{
    let key = ctx.key;
    match ttl {
        None => {
            ctx.states
                .table::<X>(index)
                .get_or_insert_with(key, &(), make)
                .0
        }
        Some(_) => {
            // Drops an expired value first, and renews a live one.
            let _ = write::<K, S, X>(ctx, index, ttl);
            let now = ctx.clock.now_ms();
            let e = ctx
                .states
                .table::<Stamped<X>>(index)
                .get_or_insert_with(key, &(), || (make(), now))
                .0;
            &mut e.0
        }
    }
}

/// Sets the current key's value.
#[inline]
fn put<K, S, X: 'static>(ctx: &mut KeyedContext<'_, K, S>, index: u32, ttl: Option<Ttl>, x: X)
where
    K: Data + Hash + Eq,
{
    let key = ctx.key;
    match ttl {
        None => ctx.states.table::<X>(index).insert(key, &(), x),
        Some(_) => {
            let now = ctx.clock.now_ms();
            ctx.states
                .table::<Stamped<X>>(index)
                .insert(key, &(), (x, now));
        }
    }
}

/// Drops the current key's value; returns it (expired or not).
#[inline]
fn take<K, S, X: 'static>(
    ctx: &mut KeyedContext<'_, K, S>,
    index: u32,
    ttl: Option<Ttl>,
) -> Option<X>
where
    K: Data + Hash + Eq,
{
    let key = ctx.key;
    match ttl {
        None => ctx.states.table::<X>(index).remove(key, &()),
        Some(_) => ctx
            .states
            .table::<Stamped<X>>(index)
            .remove(key, &())
            .map(|e| e.0),
    }
}

/// The processing time a write stamps (0 without a TTL: no clock read).
#[inline]
fn stamp_now<K, S>(ctx: &KeyedContext<'_, K, S>, ttl: Option<Ttl>) -> i64 {
    match ttl {
        Some(_) => ctx.clock.now_ms(),
        None => 0,
    }
}

/// A value per key (Flink's `ValueState`). Handles are cheap to clone and belong to the
/// operator that declared them.
#[derive(Debug, Clone, Copy)]
pub struct ValueState<V> {
    index: u32,
    ttl: Option<Ttl>,
    _v: PhantomData<fn() -> V>,
}

impl<V: Data> ValueState<V> {
    /// The current key's value.
    #[inline]
    pub fn value<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
    ) -> Option<&'c V> {
        read::<K, S, V>(ctx, self.index, self.ttl)
    }

    /// The current key's value, to change in place (a write).
    #[inline]
    pub fn value_mut<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
    ) -> Option<&'c mut V> {
        write::<K, S, V>(ctx, self.index, self.ttl)
    }

    /// The current key's value, made by `make` if it has none (a write).
    #[inline]
    pub fn get_or_insert_with<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
        make: impl FnOnce() -> V,
    ) -> &'c mut V {
        upsert::<K, S, V>(ctx, self.index, self.ttl, make)
    }

    /// Sets the current key's value.
    #[inline]
    pub fn update<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>, value: V) {
        put::<K, S, V>(ctx, self.index, self.ttl, value)
    }

    /// Drops the current key's value; returns it (expired or not).
    pub fn clear<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) -> Option<V> {
        take::<K, S, V>(ctx, self.index, self.ttl)
    }
}

/// A list per key (Flink's `ListState`); with a TTL, each element expires on its own.
#[derive(Debug, Clone, Copy)]
pub struct ListState<T> {
    index: u32,
    ttl: Option<Ttl>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Data> ListState<T> {
    /// The current key's elements, oldest first (empty if none).
    pub fn get<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
    ) -> impl Iterator<Item = &'c T> + 'c {
        let list: &[(T, i64)] = match self.ttl {
            None => read::<K, S, Vec<(T, i64)>>(ctx, self.index, None).map_or(&[], |l| &l[..]),
            Some(t) => {
                // Elements expire one by one: the list's own stamp is only its newest.
                let now = ctx.clock.now_ms();
                match change::<K, S, Vec<(T, i64)>>(ctx, self.index, self.ttl, t.on_read) {
                    Some(list) => {
                        if !t.return_expired {
                            list.retain(|e| !t.expired(e.1, now));
                        }
                        if t.on_read {
                            list.iter_mut().for_each(|e| e.1 = now);
                        }
                        &list[..]
                    }
                    None => &[],
                }
            }
        };
        list.iter().map(|e| &e.0)
    }

    /// Appends `x` to the current key's list.
    pub fn add<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>, x: T) {
        self.add_all(ctx, std::iter::once(x));
    }

    /// Appends every element of `xs`.
    pub fn add_all<K: Data + Hash + Eq, S>(
        &self,
        ctx: &mut KeyedContext<'_, K, S>,
        xs: impl IntoIterator<Item = T>,
    ) {
        let now = stamp_now(ctx, self.ttl);
        upsert::<K, S, Vec<(T, i64)>>(ctx, self.index, self.ttl, Vec::new)
            .extend(xs.into_iter().map(|x| (x, now)));
    }

    /// Replaces the current key's list (an empty one clears it).
    pub fn update<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>, xs: Vec<T>) {
        if xs.is_empty() {
            self.clear(ctx);
            return;
        }
        let now = stamp_now(ctx, self.ttl);
        let list = xs.into_iter().map(|x| (x, now)).collect();
        put::<K, S, Vec<(T, i64)>>(ctx, self.index, self.ttl, list);
    }

    pub fn clear<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) {
        take::<K, S, Vec<(T, i64)>>(ctx, self.index, self.ttl);
    }
}

/// A map per key (Flink's `MapState`); with a TTL, each entry expires on its own.
#[derive(Debug, Clone, Copy)]
pub struct MapState<UK, UV> {
    index: u32,
    ttl: Option<Ttl>,
    _kv: PhantomData<fn() -> (UK, UV)>,
}

type StampedMap<UK, UV> = HashMap<UK, (UV, i64)>;

impl<UK, UV> MapState<UK, UV>
where
    UK: Hash + Eq + 'static,
    UV: 'static,
    HashMap<UK, (UV, i64)>: Data,
{
    /// The current key's map for changing, its expired entries dropped (or kept, if the TTL
    /// says so). Entries expire one by one: the map's own stamp is only its newest.
    fn map_mut<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
        renew: bool,
    ) -> Option<&'c mut StampedMap<UK, UV>> {
        let now = stamp_now(ctx, self.ttl);
        let map = change::<K, S, StampedMap<UK, UV>>(ctx, self.index, self.ttl, renew)?;
        if let Some(t) = self.ttl
            && !t.return_expired
        {
            map.retain(|_, e| !t.expired(e.1, now));
        }
        Some(map)
    }

    /// The current key's map for reading: without a TTL the entry stays clean; with one, the
    /// read may drop expired entries.
    fn map<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
    ) -> Option<&'c StampedMap<UK, UV>> {
        match self.ttl {
            None => read::<K, S, StampedMap<UK, UV>>(ctx, self.index, None),
            Some(_) => self.map_mut(ctx, false).map(|m| &*m),
        }
    }

    /// The value of `uk` under the current key.
    pub fn get<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
        uk: &UK,
    ) -> Option<&'c UV> {
        if self.ttl.is_some_and(|t| t.on_read) {
            let now = stamp_now(ctx, self.ttl);
            let e = self.map_mut(ctx, true)?.get_mut(uk)?;
            e.1 = now;
            return Some(&e.0);
        }
        self.map(ctx)?.get(uk).map(|e| &e.0)
    }

    pub fn contains<K: Data + Hash + Eq, S>(
        &self,
        ctx: &mut KeyedContext<'_, K, S>,
        uk: &UK,
    ) -> bool {
        self.map(ctx).is_some_and(|m| m.contains_key(uk))
    }

    /// Sets `uk` to `uv` under the current key.
    pub fn put<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>, uk: UK, uv: UV) {
        let now = stamp_now(ctx, self.ttl);
        upsert::<K, S, StampedMap<UK, UV>>(ctx, self.index, self.ttl, HashMap::new)
            .insert(uk, (uv, now));
    }

    /// Removes `uk` under the current key; returns its value.
    pub fn remove<K: Data + Hash + Eq, S>(
        &self,
        ctx: &mut KeyedContext<'_, K, S>,
        uk: &UK,
    ) -> Option<UV> {
        let map = self.map_mut(ctx, false)?;
        let v = map.remove(uk).map(|e| e.0);
        if map.is_empty() {
            self.clear(ctx);
        }
        v
    }

    /// The current key's entries, in no particular order.
    pub fn entries<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
    ) -> impl Iterator<Item = (&'c UK, &'c UV)> + 'c {
        self.map(ctx)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, e)| (k, &e.0)))
    }

    pub fn is_empty<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) -> bool {
        self.map(ctx).is_none_or(|m| m.is_empty())
    }

    pub fn clear<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) {
        take::<K, S, StampedMap<UK, UV>>(ctx, self.index, self.ttl);
    }
}

/// A value per key that records fold into (Flink's `ReducingState`).
#[derive(Debug, Clone)]
pub struct ReducingState<T, F> {
    index: u32,
    ttl: Option<Ttl>,
    f: F,
    _t: PhantomData<fn() -> T>,
}

impl<T: Data, F: Fn(&mut T, T)> ReducingState<T, F> {
    pub fn get<'c, K: Data + Hash + Eq, S>(
        &self,
        ctx: &'c mut KeyedContext<'_, K, S>,
    ) -> Option<&'c T> {
        read::<K, S, T>(ctx, self.index, self.ttl)
    }

    /// Folds `x` into the current key's value (which `x` becomes if there is none).
    pub fn add<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>, x: T) {
        match write::<K, S, T>(ctx, self.index, self.ttl) {
            Some(acc) => (self.f)(acc, x),
            None => put::<K, S, T>(ctx, self.index, self.ttl, x),
        }
    }

    pub fn clear<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) {
        take::<K, S, T>(ctx, self.index, self.ttl);
    }
}

/// An accumulator per key that records are added to (Flink's `AggregatingState`).
#[derive(Debug, Clone)]
pub struct AggregatingState<IN, A> {
    index: u32,
    ttl: Option<Ttl>,
    agg: A,
    _in: PhantomData<fn() -> IN>,
}

impl<IN, A: AggregateFunction<IN>> AggregatingState<IN, A> {
    /// The current key's result.
    pub fn get<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) -> Option<A::Out> {
        read::<K, S, A::Acc>(ctx, self.index, self.ttl).map(|acc| self.agg.result(acc))
    }

    /// Adds `x` to the current key's accumulator (made first if there is none).
    pub fn add<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>, x: IN) {
        let acc =
            upsert::<K, S, A::Acc>(ctx, self.index, self.ttl, || self.agg.create_accumulator());
        self.agg.add(acc, x);
    }

    pub fn clear<K: Data + Hash + Eq, S>(&self, ctx: &mut KeyedContext<'_, K, S>) {
        take::<K, S, A::Acc>(ctx, self.index, self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::state::{KeyedStateHarness, StateBackend};
    use crate::time::{ManualClock, ProcessingClock};
    use std::collections::BTreeMap;

    #[derive(Clone)]
    struct Avg;
    impl AggregateFunction<u64> for Avg {
        type Acc = (u64, u64);
        type Out = u64;
        fn create_accumulator(&self) -> (u64, u64) {
            (0, 0)
        }
        fn add(&self, acc: &mut (u64, u64), x: u64) {
            acc.0 += x;
            acc.1 += 1;
        }
        fn result(&self, acc: &(u64, u64)) -> u64 {
            acc.0 / acc.1
        }
        fn merge(&self, into: &mut (u64, u64), from: (u64, u64)) {
            into.0 += from.0;
            into.1 += from.1;
        }
    }

    /// A model's read of a stamped value: gone once expired (and dropped); renewed by the read
    /// if reads renew.
    fn model_read<X: Copy>(
        slot: &mut Option<(X, i64)>,
        live: impl Fn(i64) -> bool,
        on_read: bool,
        now: i64,
    ) -> Option<X> {
        match slot {
            Some((x, stamp)) if live(*stamp) => {
                if on_read {
                    *stamp = now;
                }
                Some(*x)
            }
            _ => {
                *slot = None;
                None
            }
        }
    }

    /// The model of one key's states: (value, stamp) per kind, elements stamped one by one.
    #[derive(Default, Clone)]
    struct Model {
        value: Option<(u64, i64)>,
        list: Vec<(u64, i64)>,
        map: BTreeMap<u32, (u64, i64)>,
        reducing: Option<(u64, i64)>,
        aggregating: Option<((u64, u64), i64)>,
    }

    /// Every state kind against a model, per key, under a manual clock: without a TTL, with
    /// one renewed on writes, renewed on reads too, and one whose expired values stay
    /// readable; through a store whose budget holds a few dozen values (most accesses read
    /// back what an eviction wrote).
    #[test]
    fn every_state_kind_behaves_as_its_model() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..16u64 {
            let mut rng = SplitMix64::new(seed);
            let ttl_ms = 100i64;
            let ttl = match seed % 4 {
                0 => None,
                1 => Some(StateTtlConfig::new(Duration::from_millis(ttl_ms as u64))),
                2 => Some(
                    StateTtlConfig::new(Duration::from_millis(ttl_ms as u64))
                        .with_update(TtlUpdate::OnReadAndWrite),
                ),
                _ => Some(
                    StateTtlConfig::new(Duration::from_millis(ttl_ms as u64))
                        .with_visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp),
                ),
            };
            let on_read = seed % 4 == 2;
            let expires = seed % 4 == 1 || seed % 4 == 2;
            let manual = ManualClock::new(1_000);
            let clock = ProcessingClock::Manual(manual.clone());
            let budget = if seed >= 8 { 1_000 } else { usize::MAX };
            let backend = StateBackend::new(
                dir.path().join(format!("{seed}")),
                budget,
                0,
                128,
                clock.clone(),
            );
            let mut h: KeyedStateHarness<u32> = KeyedStateHarness::new(&backend, clock.clone());
            let mut vd = ValueStateDescriptor::<u64>::new("value");
            let mut ld = ListStateDescriptor::<u64>::new("list");
            let mut md = MapStateDescriptor::<u32, u64>::new("map");
            let mut rd = ReducingStateDescriptor::new("reducing", |a: &mut u64, x: u64| *a += x);
            let mut ad = AggregatingStateDescriptor::new("aggregating", Avg);
            if let Some(t) = ttl {
                vd = vd.with_ttl(t);
                ld = ld.with_ttl(t);
                md = md.with_ttl(t);
                rd = rd.with_ttl(t);
                ad = ad.with_ttl(t);
            }
            let (value, list, map, reducing, aggregating) = h.open(|open| {
                let states = (
                    open.value_state(vd).unwrap(),
                    open.list_state(ld).unwrap(),
                    open.map_state(md).unwrap(),
                    open.reducing_state(rd).unwrap(),
                    open.aggregating_state(ad).unwrap(),
                );
                let again = open.value_state(ValueStateDescriptor::<u64>::new("value"));
                assert!(again.is_err());
                states
            });

            let mut models: HashMap<u32, Model> = HashMap::new();
            let live = |stamp: i64, now: i64| !expires || now - stamp < ttl_ms;
            for step in 0..6_000u64 {
                if rng.below(4) == 0 {
                    manual.advance(Duration::from_millis(rng.below(40)));
                }
                let now = manual.now_ms();
                let key = rng.below(40) as u32;
                let m = models.entry(key).or_default();
                let x = rng.below(1000);
                let op = rng.below(16);
                h.with_key(&key, |ctx| match op {
                    0 => {
                        let want = model_read(&mut m.value, |s| live(s, now), on_read, now);
                        assert_eq!(value.value(ctx).copied(), want, "seed {seed} step {step}");
                    }
                    1 => {
                        let n = value.get_or_insert_with(ctx, || 0);
                        *n += x;
                        let cur = m.value.filter(|v| live(v.1, now)).map_or(0, |v| v.0);
                        m.value = Some((cur + x, now));
                    }
                    2 => {
                        value.update(ctx, x);
                        m.value = Some((x, now));
                    }
                    3 => {
                        value.clear(ctx);
                        m.value = None;
                    }
                    4 | 5 => {
                        list.add(ctx, x);
                        m.list.push((x, now));
                    }
                    6 => {
                        let got: Vec<u64> = list.get(ctx).copied().collect();
                        if on_read {
                            m.list.retain(|e| live(e.1, now));
                            m.list.iter_mut().for_each(|e| e.1 = now);
                        } else {
                            m.list.retain(|e| live(e.1, now));
                        }
                        let want: Vec<u64> = m.list.iter().map(|e| e.0).collect();
                        assert_eq!(got, want, "seed {seed} step {step}");
                    }
                    7 => {
                        list.update(ctx, vec![x, x + 1]);
                        m.list = vec![(x, now), (x + 1, now)];
                    }
                    8 => {
                        let uk = (x % 8) as u32;
                        map.put(ctx, uk, x);
                        m.map.insert(uk, (x, now));
                    }
                    9 => {
                        let uk = (x % 8) as u32;
                        m.map.retain(|_, e| live(e.1, now));
                        let want = m.map.get_mut(&uk).map(|e| {
                            if on_read {
                                e.1 = now;
                            }
                            e.0
                        });
                        assert_eq!(map.get(ctx, &uk).copied(), want, "seed {seed} step {step}");
                    }
                    10 => {
                        let uk = (x % 8) as u32;
                        m.map.retain(|_, e| live(e.1, now));
                        let want = m.map.remove(&uk).map(|e| e.0);
                        assert_eq!(map.remove(ctx, &uk), want, "seed {seed} step {step}");
                    }
                    11 => {
                        let mut got: Vec<(u32, u64)> =
                            map.entries(ctx).map(|(k, v)| (*k, *v)).collect();
                        got.sort();
                        m.map.retain(|_, e| live(e.1, now));
                        let want: Vec<(u32, u64)> = m.map.iter().map(|(k, e)| (*k, e.0)).collect();
                        assert_eq!(got, want, "seed {seed} step {step}");
                    }
                    12 => {
                        reducing.add(ctx, x);
                        let cur = m.reducing.filter(|v| live(v.1, now)).map_or(0, |v| v.0);
                        m.reducing = Some((cur + x, now));
                    }
                    13 => {
                        let want = model_read(&mut m.reducing, |s| live(s, now), on_read, now);
                        assert_eq!(reducing.get(ctx).copied(), want, "seed {seed} step {step}");
                    }
                    14 => {
                        aggregating.add(ctx, x);
                        let cur = m
                            .aggregating
                            .filter(|v| live(v.1, now))
                            .map_or((0, 0), |v| v.0);
                        m.aggregating = Some(((cur.0 + x, cur.1 + 1), now));
                    }
                    _ => {
                        let want = model_read(&mut m.aggregating, |s| live(s, now), on_read, now)
                            .map(|(sum, n)| sum / n);
                        assert_eq!(aggregating.get(ctx), want, "seed {seed} step {step}");
                    }
                });
                backend.check().unwrap();
            }
            if budget != usize::MAX {
                let (written, read) = backend.spill_counts();
                assert!(
                    written > 200 && read > 200,
                    "{written} written, {read} read"
                );
            }
        }
    }

    /// Expired values the store holds are dropped when it compacts; live ones stay.
    #[test]
    fn compaction_drops_expired_values() {
        let dir = tempfile::tempdir().unwrap();
        let manual = ManualClock::new(0);
        let clock = ProcessingClock::Manual(manual.clone());
        let backend = StateBackend::new(dir.path().to_path_buf(), 2_000, 0, 128, clock.clone());
        let mut h: KeyedStateHarness<u32> = KeyedStateHarness::new(&backend, clock);
        let value = h.open(|open| {
            open.value_state(
                ValueStateDescriptor::<u64>::new("v")
                    .with_ttl(StateTtlConfig::new(Duration::from_millis(1_000))),
            )
            .unwrap()
        });
        let mut run = |keys: std::ops::Range<u32>,
                       f: &mut dyn FnMut(u32, &mut KeyedContext<u32, ()>)| {
            for key in keys {
                h.with_key(&key, |ctx| f(key, ctx));
            }
        };
        run(0..2_000, &mut |k, ctx| value.update(ctx, k as u64));
        manual.advance(Duration::from_millis(1_500));
        run(2_000..4_000, &mut |k, ctx| value.update(ctx, k as u64));
        let stored = backend.stored_keys();
        assert!(stored > 3_000, "{stored} keys stored");
        backend.compact_now().unwrap();
        let expired = backend.expired_count();
        assert!(expired >= 1_900, "{expired} expired");
        assert!(backend.stored_keys() <= stored - expired as usize);
        run(0..4_000, &mut |k, ctx| {
            let want = (k >= 2_000).then_some(k as u64);
            assert_eq!(value.value(ctx).copied(), want, "key {k}");
        });
        backend.check().unwrap();
    }
}
