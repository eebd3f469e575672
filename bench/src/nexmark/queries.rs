//! Nexmark's queries, written against the DataStream API as a user would write them. Each
//! takes the event stream and returns the query's result stream; event time comes from the
//! source (each event's `date_time`, with the source's watermarks).
//!
//! Semantics follow Flink's Nexmark suite (its SQL) where Beam's and Flink's differ, with the
//! ties those leave open broken deterministically, so that a run's output can be checked
//! against [`super::reference`]:
//! - q0 passes the bids through; q1 converts their prices to euros (`price * 89 / 100`); q2
//!   selects the bids on every 123rd auction.
//! - q3 joins new people in Oregon, Idaho or California with their auctions of category 10.
//! - q9 finds each auction's winning bid: the highest (earliest on a tie, then lowest bidder)
//!   of the bids made while it was open, if at least its reserve. q4 averages the winning
//!   prices per category (an update per closed auction), q6 per seller over their last ten
//!   closed auctions (in order of closing).
//! - q5 counts the bids per auction in sliding windows of 10 s every 2 s and gives each window's
//!   most bid-on auctions; q7 gives each 10 s window's highest bids.
//! - q8 gives the people who made an auction in the 10 s window they registered in.
//! - q11 counts each bidder's bids per session (10 s of inactivity ends one); q12 per 10 s
//!   processing-time window.

use std::time::Duration;

use rkyv::{Archive, Deserialize, Serialize};
use shardflow::prelude::*;
use shardflow::types::ShortString;
use shardflow_core::window::{
    AggregateFunction, Count, SessionWindows, SlidingWindows, TimeWindow, TumblingWindows,
    WindowContext,
};

use super::model::{Auction, Bid, Event};

/// The queries the harness runs.
pub const QUERIES: [&str; 12] = [
    "q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q11", "q12",
];

/// q5's and q7's and q8's windows.
pub const Q5_SIZE: Duration = Duration::from_secs(10);
pub const Q5_SLIDE: Duration = Duration::from_secs(2);
pub const Q7_WINDOW: Duration = Duration::from_secs(10);
pub const Q8_WINDOW: Duration = Duration::from_secs(10);
pub const Q11_GAP: Duration = Duration::from_secs(10);
pub const Q12_WINDOW: Duration = Duration::from_secs(10);
/// q2 selects the bids on auctions whose id is a multiple of this.
pub const Q2_SKIP: u64 = 123;
/// q3's states and category.
pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];
pub const Q3_CATEGORY: u64 = 10;
/// q6 averages over each seller's last this many closed auctions.
pub const Q6_LAST: usize = 10;

/// The bids of the stream.
pub fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events.flat_map(|e: Event, out: &mut Collector<Bid>| {
        if let Event::Bid(b) = e {
            out.collect(b)
        }
    })
}

/// q0: pass-through.
pub fn q0(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events)
}

/// q1: currency conversion (dollars to euros).
pub fn q1(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events).map(|b: Bid| Bid {
        price: b.price * 89 / 100,
        ..b
    })
}

/// q2: selection.
pub fn q2(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    events.flat_map(|e: Event, out: &mut Collector<(u64, u64)>| {
        if let Event::Bid(b) = e
            && b.auction % Q2_SKIP == 0
        {
            out.collect((b.auction, b.price))
        }
    })
}

/// q3's output: a seller of the chosen states and an auction of theirs in the chosen category.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize)]
pub struct Q3Row {
    pub name: String,
    pub city: String,
    pub state: String,
    pub auction: u64,
}

/// q3: local item suggestion, an incremental join (people are kept; auctions wait for their
/// seller).
pub fn q3(events: &DataStream<Event>) -> DataStream<Q3Row> {
    let persons = events.flat_map(|e: Event, out: &mut Collector<(u64, Seller)>| {
        if let Event::Person(p) = e
            && Q3_STATES.contains(&p.state.as_str())
        {
            out.collect((
                p.id,
                Seller {
                    name: p.name,
                    city: p.city,
                    state: p.state,
                },
            ))
        }
    });
    let auctions = events.flat_map(|e: Event, out: &mut Collector<(u64, u64)>| {
        if let Event::Auction(a) = e
            && a.category == Q3_CATEGORY
        {
            out.collect((a.seller, a.id))
        }
    });
    persons
        .key_by(|p: &(u64, Seller)| p.0)
        .connect(&auctions.key_by(|a: &(u64, u64)| a.0))
        .process(LocalItems)
        .name("q3 join")
}

#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Seller {
    pub name: ShortString,
    pub city: ShortString,
    pub state: ShortString,
}

/// Per person id: the person once seen, and the auctions that came before them.
#[derive(Debug, Clone, Default, Archive, Serialize, Deserialize)]
pub struct LocalItemsState {
    person: Option<Seller>,
    waiting: Vec<u64>,
}

#[derive(Clone)]
struct LocalItems;

fn q3_row(p: &Seller, auction: u64) -> Q3Row {
    Q3Row {
        name: p.name.as_str().to_string(),
        city: p.city.as_str().to_string(),
        state: p.state.as_str().to_string(),
        auction,
    }
}

impl KeyedCoProcessFunction<u64, (u64, Seller), (u64, u64), Q3Row> for LocalItems {
    type State = LocalItemsState;

    fn process_element1(
        &mut self,
        (_, person): (u64, Seller),
        ctx: &mut KeyedContext<'_, u64, LocalItemsState>,
        out: &mut Collector<Q3Row>,
    ) -> Result<(), UserError> {
        let s = ctx.state_or_insert_with(LocalItemsState::default);
        for a in s.waiting.drain(..) {
            out.collect(q3_row(&person, a));
        }
        s.person = Some(person);
        Ok(())
    }

    fn process_element2(
        &mut self,
        (_, auction): (u64, u64),
        ctx: &mut KeyedContext<'_, u64, LocalItemsState>,
        out: &mut Collector<Q3Row>,
    ) -> Result<(), UserError> {
        let s = ctx.state_or_insert_with(LocalItemsState::default);
        match &s.person {
            Some(p) => out.collect(q3_row(p, auction)),
            None => s.waiting.push(auction),
        }
        Ok(())
    }
}

/// q9's output: an auction and its winning bid.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Winner {
    pub auction: Auction,
    pub bid: Bid,
}

/// Whether bid `a` beats bid `b`: higher price, then earlier, then the lower bidder.
#[inline]
pub fn beats(a: &Bid, b: &Bid) -> bool {
    (
        a.price,
        std::cmp::Reverse(a.date_time),
        std::cmp::Reverse(a.bidder),
    ) > (
        b.price,
        std::cmp::Reverse(b.date_time),
        std::cmp::Reverse(b.bidder),
    )
}

/// Whether `bid` counts for `auction`: made while it was open, at least its reserve.
#[inline]
pub fn valid_bid(auction: &Auction, bid: &Bid) -> bool {
    bid.date_time >= auction.date_time
        && bid.date_time < auction.expires
        && bid.price >= auction.reserve
}

/// Per auction id: the auction once seen, its best valid bid, and the bids that came before
/// it (a bid may precede its auction across shards).
#[derive(Debug, Clone, Default, Archive, Serialize, Deserialize)]
pub struct AuctionState {
    auction: Option<Auction>,
    best: Option<Bid>,
    waiting: Vec<Bid>,
}

#[derive(Clone)]
struct WinningBids;

impl KeyedCoProcessFunction<u64, Auction, Bid, Winner> for WinningBids {
    type State = AuctionState;

    fn process_element1(
        &mut self,
        auction: Auction,
        ctx: &mut KeyedContext<'_, u64, AuctionState>,
        _out: &mut Collector<Winner>,
    ) -> Result<(), UserError> {
        ctx.register_event_time_timer(auction.expires);
        let s = ctx.state_or_insert_with(AuctionState::default);
        for b in std::mem::take(&mut s.waiting) {
            if valid_bid(&auction, &b) && s.best.is_none_or(|best| beats(&b, &best)) {
                s.best = Some(b);
            }
        }
        s.auction = Some(auction);
        Ok(())
    }

    fn process_element2(
        &mut self,
        bid: Bid,
        ctx: &mut KeyedContext<'_, u64, AuctionState>,
        _out: &mut Collector<Winner>,
    ) -> Result<(), UserError> {
        let watermark = ctx.current_watermark();
        let s = ctx.state_or_insert_with(AuctionState::default);
        let wait = match &s.auction {
            Some(a) => {
                if valid_bid(a, &bid) && s.best.is_none_or(|best| beats(&bid, &best)) {
                    s.best = Some(bid);
                }
                false
            }
            // Every auction up to the watermark has arrived: a bid older than it whose
            // auction is not here was made before the auction opened (or after it closed).
            None if bid.date_time <= watermark => false,
            None => {
                s.waiting.push(bid);
                true
            }
        };
        if wait {
            // When event time passes the bid, its auction (if it is ever valid for it) has
            // arrived.
            ctx.register_event_time_timer(bid.date_time);
        } else if ctx
            .state()
            .is_some_and(|s| s.auction.is_none() && s.waiting.is_empty())
        {
            ctx.clear_state();
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: i64,
        ctx: &mut KeyedContext<'_, u64, AuctionState>,
        out: &mut Collector<Winner>,
    ) -> Result<(), UserError> {
        let Some(s) = ctx.state_mut() else {
            return Ok(());
        };
        let done = match &s.auction {
            Some(a) if time >= a.expires => {
                if let Some(bid) = s.best {
                    out.collect(Winner {
                        auction: a.clone(),
                        bid,
                    });
                }
                true
            }
            Some(_) => false,
            None => {
                s.waiting.retain(|b| b.date_time > time);
                s.waiting.is_empty()
            }
        };
        if done {
            ctx.clear_state();
        }
        Ok(())
    }
}

/// q9: winning bids.
pub fn q9(events: &DataStream<Event>) -> DataStream<Winner> {
    let auctions = events.flat_map(|e: Event, out: &mut Collector<Auction>| {
        if let Event::Auction(a) = e {
            out.collect(*a)
        }
    });
    auctions
        .key_by(|a: &Auction| a.id)
        .connect(&bids(events).key_by(|b: &Bid| b.auction))
        .process(WinningBids)
        .name("q9 winning bids")
}

/// q4's output: a category's average winning price so far, over `auctions` closed auctions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
pub struct CategoryPrice {
    pub category: u64,
    pub average: u64,
    pub auctions: u64,
}

#[derive(Clone)]
struct AveragePerCategory;

impl KeyedProcessFunction<u64, Winner, CategoryPrice> for AveragePerCategory {
    /// Sum and count of the winning prices.
    type State = (u64, u64);

    fn process_element(
        &mut self,
        w: Winner,
        ctx: &mut KeyedContext<'_, u64, (u64, u64)>,
        out: &mut Collector<CategoryPrice>,
    ) -> Result<(), UserError> {
        let s = ctx.state_or_insert_with(|| (0, 0));
        s.0 += w.bid.price;
        s.1 += 1;
        out.collect(CategoryPrice {
            category: w.auction.category,
            average: s.0 / s.1,
            auctions: s.1,
        });
        Ok(())
    }
}

/// q4: average price for a category.
pub fn q4(events: &DataStream<Event>) -> DataStream<CategoryPrice> {
    q9(events)
        .key_by(|w: &Winner| w.auction.category)
        .process(AveragePerCategory)
        .name("q4 average per category")
}

/// q5's output: one of the auctions with the most bids in a window.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
pub struct HotItem {
    pub window_end: i64,
    pub auction: u64,
    pub bids: u64,
}

/// The counts of a window with the most bids (all of them on a tie).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hottest;

impl AggregateFunction<HotItem> for Hottest {
    type Acc = Vec<HotItem>;
    type Out = Vec<HotItem>;
    fn create_accumulator(&self) -> Vec<HotItem> {
        Vec::new()
    }
    #[inline]
    fn add(&self, acc: &mut Vec<HotItem>, h: HotItem) {
        match acc.first().map(|a| a.bids) {
            Some(max) if h.bids < max => {}
            Some(max) if h.bids == max => acc.push(h),
            _ => {
                acc.clear();
                acc.push(h);
            }
        }
    }
    fn result(&self, acc: &Vec<HotItem>) -> Vec<HotItem> {
        acc.clone()
    }
    fn merge(&self, into: &mut Vec<HotItem>, from: Vec<HotItem>) {
        for h in from {
            self.add(into, h);
        }
    }
}

/// q5: hot items.
pub fn q5(events: &DataStream<Event>) -> DataStream<HotItem> {
    bids(events)
        .key_by(|b: &Bid| b.auction)
        .window(SlidingWindows::event_time(Q5_SIZE, Q5_SLIDE))
        .aggregate_two_phase_with(
            Count,
            |auction: &u64,
             ctx: &WindowContext<TimeWindow>,
             counts: &[u64],
             out: &mut Collector<HotItem>| {
                for &bids in counts {
                    out.collect(HotItem {
                        window_end: ctx.window.end,
                        auction: *auction,
                        bids,
                    });
                }
                Ok(())
            },
        )
        .name("q5 bids per auction")
        // Every count of a window carries the window's last timestamp: a tumbling window of
        // the slide gathers exactly one window's counts, and keeps only the highest.
        .key_by(|h: &HotItem| h.window_end)
        .window(TumblingWindows::event_time(Q5_SLIDE))
        .aggregate_with(
            Hottest,
            |_end: &i64,
             _ctx: &WindowContext<TimeWindow>,
             hottest: &[Vec<HotItem>],
             out: &mut Collector<HotItem>| {
                for h in hottest.iter().flatten() {
                    out.collect(*h);
                }
                Ok(())
            },
        )
        .name("q5 hottest")
}

/// q6's output: a seller's average winning price over their last closed auctions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
pub struct SellerPrice {
    pub seller: u64,
    /// When the auction that updated it closed.
    pub date_time: i64,
    pub average: u64,
    /// Auctions averaged (up to ten).
    pub auctions: u64,
}

/// Per seller: winning bids not yet in order (`(closed at, auction, price)`), and the prices
/// of the last ten in order.
#[derive(Debug, Clone, Default, Archive, Serialize, Deserialize)]
pub struct SellerState {
    pending: Vec<(i64, u64, u64)>,
    last: Vec<u64>,
}

#[derive(Clone)]
struct AveragePerSeller;

impl KeyedProcessFunction<u64, Winner, SellerPrice> for AveragePerSeller {
    type State = SellerState;

    fn process_element(
        &mut self,
        w: Winner,
        ctx: &mut KeyedContext<'_, u64, SellerState>,
        _out: &mut Collector<SellerPrice>,
    ) -> Result<(), UserError> {
        // Winners come from every shard in no particular order: put them in order of closing
        // once event time has passed them.
        let closed = w.auction.expires;
        ctx.register_event_time_timer(closed);
        ctx.state_or_insert_with(SellerState::default)
            .pending
            .push((closed, w.auction.id, w.bid.price));
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: i64,
        ctx: &mut KeyedContext<'_, u64, SellerState>,
        out: &mut Collector<SellerPrice>,
    ) -> Result<(), UserError> {
        let seller = *ctx.current_key();
        let Some(s) = ctx.state_mut() else {
            return Ok(());
        };
        let mut due: Vec<(i64, u64, u64)> = Vec::new();
        s.pending.retain(|p| {
            let keep = p.0 > time;
            if !keep {
                due.push(*p);
            }
            keep
        });
        due.sort_unstable();
        for (closed, _, price) in due {
            if s.last.len() == Q6_LAST {
                s.last.remove(0);
            }
            s.last.push(price);
            out.collect(SellerPrice {
                seller,
                date_time: closed,
                average: s.last.iter().sum::<u64>() / s.last.len() as u64,
                auctions: s.last.len() as u64,
            });
        }
        Ok(())
    }
}

/// q6: average selling price by seller.
pub fn q6(events: &DataStream<Event>) -> DataStream<SellerPrice> {
    q9(events)
        .key_by(|w: &Winner| w.auction.seller)
        .process(AveragePerSeller)
        .name("q6 average per seller")
}

/// q7's output: one of the highest bids of a window.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
pub struct HighestBid {
    pub window_end: i64,
    pub price: u64,
    pub auction: u64,
    pub bidder: u64,
    pub date_time: i64,
}

/// The highest price and the bids that offered it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxBids;

impl AggregateFunction<Bid> for MaxBids {
    type Acc = (u64, Vec<Bid>);
    type Out = (u64, Vec<Bid>);
    fn create_accumulator(&self) -> Self::Acc {
        (0, Vec::new())
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, b: Bid) {
        if b.price > acc.0 || acc.1.is_empty() {
            acc.0 = b.price;
            acc.1.clear();
            acc.1.push(b);
        } else if b.price == acc.0 {
            acc.1.push(b);
        }
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        acc.clone()
    }
    fn merge(&self, into: &mut Self::Acc, from: Self::Acc) {
        for b in from.1 {
            self.add(into, b);
        }
    }
}

/// q7: highest bid (per shard, then across them).
pub fn q7(events: &DataStream<Event>) -> DataStream<HighestBid> {
    bids(events)
        .window_all(TumblingWindows::event_time(Q7_WINDOW))
        .aggregate_two_phase_with(
            MaxBids,
            |_: &(),
             ctx: &WindowContext<TimeWindow>,
             results: &[(u64, Vec<Bid>)],
             out: &mut Collector<HighestBid>| {
                for (_, bids) in results {
                    for b in bids {
                        out.collect(HighestBid {
                            window_end: ctx.window.end,
                            price: b.price,
                            auction: b.auction,
                            bidder: b.bidder,
                            date_time: b.date_time,
                        });
                    }
                }
                Ok(())
            },
        )
        .name("q7 highest bid")
}

/// q8's output: a person who made an auction in the window they registered in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize)]
pub struct NewSeller {
    pub id: u64,
    pub name: String,
    pub window_start: i64,
}

/// q8: monitor new users (a window co-group of people and auctions by person).
pub fn q8(events: &DataStream<Event>) -> DataStream<NewSeller> {
    type Side = Either<(u64, ShortString), u64>;
    events
        .flat_map(|e: Event, out: &mut Collector<Side>| match e {
            Event::Person(p) => out.collect(Either::Left((p.id, p.name))),
            Event::Auction(a) => out.collect(Either::Right(a.seller)),
            Event::Bid(_) => {}
        })
        .key_by(|s: &Side| match s {
            Either::Left((id, _)) => *id,
            Either::Right(seller) => *seller,
        })
        .window(TumblingWindows::event_time(Q8_WINDOW))
        .process(
            |id: &u64,
             ctx: &WindowContext<TimeWindow>,
             sides: &[Side],
             out: &mut Collector<NewSeller>| {
                let person = sides.iter().find_map(|s| match s {
                    Either::Left((_, name)) => Some(name),
                    Either::Right(_) => None,
                });
                if let Some(name) = person
                    && sides.iter().any(|s| matches!(s, Either::Right(_)))
                {
                    out.collect(NewSeller {
                        id: *id,
                        name: name.as_str().to_string(),
                        window_start: ctx.window.start,
                    });
                }
                Ok(())
            },
        )
        .name("q8 new sellers")
}

/// q11's and q12's output: a bidder's bids in a window (a session for q11).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
pub struct BidderWindow {
    pub bidder: u64,
    pub bids: u64,
    pub window_start: i64,
    pub window_end: i64,
}

fn bidder_window(
    bidder: &u64,
    ctx: &WindowContext<TimeWindow>,
    counts: &[u64],
    out: &mut Collector<BidderWindow>,
) -> Result<(), UserError> {
    for &bids in counts {
        out.collect(BidderWindow {
            bidder: *bidder,
            bids,
            window_start: ctx.window.start,
            window_end: ctx.window.end,
        });
    }
    Ok(())
}

/// q11: user sessions.
pub fn q11(events: &DataStream<Event>) -> DataStream<BidderWindow> {
    bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(SessionWindows::event_time(Q11_GAP))
        .aggregate_with(Count, bidder_window)
        .name("q11 sessions")
}

/// q12: bids per bidder in processing-time windows.
pub fn q12(events: &DataStream<Event>) -> DataStream<BidderWindow> {
    bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(TumblingWindows::processing_time(Q12_WINDOW))
        .aggregate_with(Count, bidder_window)
        .name("q12 processing-time windows")
}
