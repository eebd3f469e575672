//! Window functions: what a window emits when it fires.
//!
//! [`WindowFunction`] is the operator's view: contents (`Acc`) built record by record, merged
//! when session windows merge, and emitted. The user-facing shapes — a reduce function, an
//! [`AggregateFunction`], a [`ProcessWindowFunction`] over all records, or a reduce/aggregate
//! followed by a process function — are implementations of it.

use super::Window;
use super::evictors::Evictor;
use crate::operator::Collector;
use crate::operator::process::UserError;

/// What a window function knows when its window fires.
#[derive(Debug, Clone)]
pub struct WindowContext<W> {
    pub window: W,
    /// The operator's watermark when the window fired.
    pub watermark: i64,
    /// Processing time when the window fired (milliseconds).
    pub processing_time: i64,
}

/// The contents of a window and how they become output.
pub trait WindowFunction<K, T, W: Window>: Clone + Send + Sync + 'static {
    /// What a window keeps per key: keyed state, in the store.
    type Acc: crate::Data;
    type Out: 'static;

    fn create(&mut self) -> Self::Acc;
    fn add(&mut self, acc: &mut Self::Acc, record: T, timestamp: Option<i64>);
    /// Folds the contents of a window merged away into those of the window it merged into.
    fn merge(&mut self, into: &mut Self::Acc, from: Self::Acc);
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext<W>,
        acc: &mut Self::Acc,
        out: &mut Collector<Self::Out>,
    ) -> Result<(), UserError>;
}

/// An incremental aggregation: an accumulator per window, records added one at a time.
pub trait AggregateFunction<T>: Clone + Send + Sync + 'static {
    /// The accumulator: keyed state, in the store.
    type Acc: crate::Data;
    type Out: Send + 'static;
    fn create_accumulator(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, record: T);
    fn result(&self, acc: &Self::Acc) -> Self::Out;
    fn merge(&self, into: &mut Self::Acc, from: Self::Acc);
}

/// A function of all the records of a window (or of the one pre-aggregated value, when it
/// follows a reduce or an aggregate).
pub trait ProcessWindowFunction<K, I, O, W>: Clone + Send + Sync + 'static {
    fn process(
        &mut self,
        key: &K,
        ctx: &WindowContext<W>,
        records: &[I],
        out: &mut Collector<O>,
    ) -> Result<(), UserError>;
}

impl<K, I, O, W, F> ProcessWindowFunction<K, I, O, W> for F
where
    F: FnMut(&K, &WindowContext<W>, &[I], &mut Collector<O>) -> Result<(), UserError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    fn process(
        &mut self,
        key: &K,
        ctx: &WindowContext<W>,
        records: &[I],
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self(key, ctx, records, out)
    }
}

/// `reduce`: the window's records folded into one, of the same type.
#[derive(Clone)]
pub struct ReduceFn<R>(pub R);

impl<K, T, W, R> WindowFunction<K, T, W> for ReduceFn<R>
where
    T: crate::Data,
    W: Window,
    R: Fn(&mut T, T) + Clone + Send + Sync + 'static,
{
    type Acc = Option<T>;
    type Out = T;

    fn create(&mut self) -> Option<T> {
        None
    }
    #[inline]
    fn add(&mut self, acc: &mut Option<T>, record: T, _timestamp: Option<i64>) {
        match acc {
            Some(a) => (self.0)(a, record),
            None => *acc = Some(record),
        }
    }
    fn merge(&mut self, into: &mut Option<T>, from: Option<T>) {
        match (into.as_mut(), from) {
            (Some(a), Some(f)) => (self.0)(a, f),
            (None, f) => *into = f,
            (_, None) => {}
        }
    }
    fn emit(
        &mut self,
        _key: &K,
        _ctx: &WindowContext<W>,
        acc: &mut Option<T>,
        out: &mut Collector<T>,
    ) -> Result<(), UserError> {
        if let Some(a) = acc {
            out.collect(a.clone());
        }
        Ok(())
    }
}

/// `aggregate`: an [`AggregateFunction`]'s result per window.
#[derive(Clone)]
pub struct AggregateFn<A>(pub A);

impl<K, T, W: Window, A: AggregateFunction<T>> WindowFunction<K, T, W> for AggregateFn<A> {
    type Acc = A::Acc;
    type Out = A::Out;

    fn create(&mut self) -> A::Acc {
        self.0.create_accumulator()
    }
    #[inline]
    fn add(&mut self, acc: &mut A::Acc, record: T, _timestamp: Option<i64>) {
        self.0.add(acc, record)
    }
    fn merge(&mut self, into: &mut A::Acc, from: A::Acc) {
        self.0.merge(into, from)
    }
    fn emit(
        &mut self,
        _key: &K,
        _ctx: &WindowContext<W>,
        acc: &mut A::Acc,
        out: &mut Collector<A::Out>,
    ) -> Result<(), UserError> {
        out.collect(self.0.result(acc));
        Ok(())
    }
}

/// `process`: a [`ProcessWindowFunction`] over every record of the window.
pub struct ProcessAll<P, O>(pub P, pub std::marker::PhantomData<fn() -> O>);

impl<P: Clone, O> Clone for ProcessAll<P, O> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), std::marker::PhantomData)
    }
}

impl<K, T, O, W, P> WindowFunction<K, T, W> for ProcessAll<P, O>
where
    T: crate::Data,
    O: 'static,
    W: Window,
    P: ProcessWindowFunction<K, T, O, W>,
{
    type Acc = Vec<T>;
    type Out = O;

    fn create(&mut self) -> Vec<T> {
        Vec::new()
    }
    #[inline]
    fn add(&mut self, acc: &mut Vec<T>, record: T, _timestamp: Option<i64>) {
        acc.push(record);
    }
    fn merge(&mut self, into: &mut Vec<T>, mut from: Vec<T>) {
        into.append(&mut from);
    }
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext<W>,
        acc: &mut Vec<T>,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        self.0.process(key, ctx, acc, out)
    }
}

/// A pre-aggregating function followed by a process function that sees its one result (and the
/// window): `reduce` or `aggregate` with a [`ProcessWindowFunction`].
pub struct ThenProcess<F, P, O, R = ()>(
    pub F,
    pub P,
    pub std::marker::PhantomData<fn() -> O>,
    /// The pre-aggregated result of the firing window, kept for its capacity (a mutex only to
    /// make the function shareable: it is reached through `&mut self`, never locked).
    pub std::sync::Mutex<crate::operator::Batch<R>>,
);

impl<F, P, O, R> ThenProcess<F, P, O, R> {
    pub fn new(f: F, p: P) -> Self {
        Self(
            f,
            p,
            std::marker::PhantomData,
            std::sync::Mutex::new(crate::operator::Batch::new()),
        )
    }
}

impl<F: Clone, P: Clone, O, R> Clone for ThenProcess<F, P, O, R> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone(), self.1.clone())
    }
}

impl<K, T, O, W, F, P> WindowFunction<K, T, W> for ThenProcess<F, P, O, F::Out>
where
    O: 'static,
    W: Window,
    F: WindowFunction<K, T, W>,
    F::Out: Send,
    P: ProcessWindowFunction<K, F::Out, O, W>,
{
    type Acc = F::Acc;
    type Out = O;

    fn create(&mut self) -> F::Acc {
        self.0.create()
    }
    #[inline]
    fn add(&mut self, acc: &mut F::Acc, record: T, timestamp: Option<i64>) {
        self.0.add(acc, record, timestamp)
    }
    fn merge(&mut self, into: &mut F::Acc, from: F::Acc) {
        self.0.merge(into, from)
    }
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext<W>,
        acc: &mut F::Acc,
        out: &mut Collector<O>,
    ) -> Result<(), UserError> {
        let pre = self.3.get_mut().unwrap_or_else(|e| e.into_inner());
        pre.clear();
        self.0.emit(key, ctx, acc, &mut Collector::new(pre, None))?;
        self.1.process(key, ctx, &pre.records, out)
    }
}

/// A window function behind an evictor: every record is kept; when the window fires, the
/// evictor trims them and the function runs over what is left.
#[derive(Clone)]
pub struct Evicting<E, F>(pub E, pub F);

impl<K, T, W, E, F> WindowFunction<K, T, W> for Evicting<E, F>
where
    T: crate::Data,
    W: Window,
    E: Evictor<T>,
    F: WindowFunction<K, T, W>,
{
    type Acc = Vec<(T, Option<i64>)>;
    type Out = F::Out;

    fn create(&mut self) -> Self::Acc {
        Vec::new()
    }
    fn add(&mut self, acc: &mut Self::Acc, record: T, timestamp: Option<i64>) {
        acc.push((record, timestamp));
    }
    fn merge(&mut self, into: &mut Self::Acc, mut from: Self::Acc) {
        into.append(&mut from);
    }
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext<W>,
        acc: &mut Self::Acc,
        out: &mut Collector<F::Out>,
    ) -> Result<(), UserError> {
        let max = ctx.window.max_timestamp();
        self.0.evict_before(acc, max);
        let mut inner = self.1.create();
        for (x, ts) in acc.iter() {
            self.1.add(&mut inner, x.clone(), *ts);
        }
        self.1.emit(key, ctx, &mut inner, out)?;
        self.0.evict_after(acc, max);
        Ok(())
    }
}

/// Counts the records of a window, whatever their type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Out = u64;
    #[inline]
    fn create_accumulator(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _: T) {
        *acc += 1;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, into: &mut u64, from: u64) {
        *into += from;
    }
}
