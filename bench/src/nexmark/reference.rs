//! The queries' results by brute force over the whole event list, in event order, on one
//! thread: the reference the tests hold the engine's results against. Written apart from
//! [`super::queries`] (its own comparisons, windows computed from the definitions), so that a
//! mistake in one is not repeated in the other. Results are sorted.

use std::collections::{BTreeMap, HashMap};

use super::model::{Auction, Bid, Event};
use super::queries::{
    BidderWindow, CategoryPrice, HighestBid, HotItem, NewSeller, Q2_SKIP, Q3_CATEGORY, Q3_STATES,
    Q3Row, Q5_SIZE, Q5_SLIDE, Q6_LAST, Q7_WINDOW, Q8_WINDOW, Q11_GAP, SellerPrice, Winner,
};

fn ms(d: std::time::Duration) -> i64 {
    d.as_millis() as i64
}

fn bids(events: &[Event]) -> impl Iterator<Item = &Bid> {
    events.iter().filter_map(Event::bid)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Bids, as `(auction, bidder, price, date_time)` for ordering.
fn bid_tuple(b: &Bid) -> (u64, u64, u64, i64) {
    (b.auction, b.bidder, b.price, b.date_time)
}

pub fn q0(events: &[Event]) -> Vec<(u64, u64, u64, i64)> {
    sorted(bids(events).map(bid_tuple).collect())
}

pub fn q1(events: &[Event]) -> Vec<(u64, u64, u64, i64)> {
    sorted(
        bids(events)
            .map(|b| (b.auction, b.bidder, b.price * 89 / 100, b.date_time))
            .collect(),
    )
}

pub fn q2(events: &[Event]) -> Vec<(u64, u64)> {
    sorted(
        bids(events)
            .filter(|b| b.auction % Q2_SKIP == 0)
            .map(|b| (b.auction, b.price))
            .collect(),
    )
}

pub fn q3(events: &[Event]) -> Vec<Q3Row> {
    let mut people = HashMap::new();
    for e in events {
        if let Event::Person(p) = e
            && Q3_STATES.contains(&p.state.as_str())
        {
            people.insert(p.id, p);
        }
    }
    let mut rows = Vec::new();
    for e in events {
        if let Event::Auction(a) = e
            && a.category == Q3_CATEGORY
            && let Some(p) = people.get(&a.seller)
        {
            rows.push(Q3Row {
                name: p.name.as_str().to_string(),
                city: p.city.as_str().to_string(),
                state: p.state.as_str().to_string(),
                auction: a.id,
            });
        }
    }
    sorted(rows)
}

/// Every auction's winning bid, by auction id.
pub fn q9(events: &[Event]) -> Vec<Winner> {
    let mut by_auction: HashMap<u64, Vec<Bid>> = HashMap::new();
    for b in bids(events) {
        by_auction.entry(b.auction).or_default().push(*b);
    }
    let mut winners = Vec::new();
    for e in events {
        let Event::Auction(a) = e else { continue };
        let Some(bids) = by_auction.get(&a.id) else {
            continue;
        };
        let mut valid: Vec<&Bid> = bids
            .iter()
            .filter(|b| a.date_time <= b.date_time && b.date_time < a.expires)
            .filter(|b| b.price >= a.reserve)
            .collect();
        // Highest price first, then the earliest, then the lowest bidder.
        valid.sort_by_key(|b| (std::cmp::Reverse(b.price), b.date_time, b.bidder));
        if let Some(best) = valid.first() {
            winners.push(Winner {
                auction: Auction::clone(a),
                bid: **best,
            });
        }
    }
    winners.sort_by_key(|w| w.auction.id);
    winners
}

/// Each category's final average (the engine's last update of it).
pub fn q4(events: &[Event]) -> Vec<CategoryPrice> {
    let mut per: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for w in q9(events) {
        let s = per.entry(w.auction.category).or_default();
        s.0 += w.bid.price;
        s.1 += 1;
    }
    per.into_iter()
        .map(|(category, (sum, n))| CategoryPrice {
            category,
            average: sum / n,
            auctions: n,
        })
        .collect()
}

pub fn q5(events: &[Event]) -> Vec<HotItem> {
    let (size, slide) = (ms(Q5_SIZE), ms(Q5_SLIDE));
    let mut counts: HashMap<(i64, u64), u64> = HashMap::new();
    for b in bids(events) {
        // The windows [end - size, end) holding the bid, `end` a multiple of the slide.
        let mut end = b.date_time.div_euclid(slide) * slide + slide;
        while end - size <= b.date_time {
            *counts.entry((end, b.auction)).or_default() += 1;
            end += slide;
        }
    }
    let mut max: HashMap<i64, u64> = HashMap::new();
    for (&(end, _), &n) in &counts {
        let m = max.entry(end).or_default();
        *m = (*m).max(n);
    }
    sorted(
        counts
            .into_iter()
            .filter(|&((end, _), n)| n == max[&end])
            .map(|((window_end, auction), bids)| HotItem {
                window_end,
                auction,
                bids,
            })
            .collect(),
    )
}

/// Every update of every seller's average, in order of closing per seller.
pub fn q6(events: &[Event]) -> Vec<SellerPrice> {
    let mut winners = q9(events);
    winners.sort_by_key(|w| (w.auction.expires, w.auction.id));
    let mut last: HashMap<u64, std::collections::VecDeque<u64>> = HashMap::new();
    let mut out = Vec::new();
    for w in winners {
        let l = last.entry(w.auction.seller).or_default();
        l.push_back(w.bid.price);
        if l.len() > Q6_LAST {
            l.pop_front();
        }
        out.push(SellerPrice {
            seller: w.auction.seller,
            date_time: w.auction.expires,
            average: l.iter().sum::<u64>() / l.len() as u64,
            auctions: l.len() as u64,
        });
    }
    sorted(out)
}

pub fn q7(events: &[Event]) -> Vec<HighestBid> {
    let size = ms(Q7_WINDOW);
    let mut max: HashMap<i64, u64> = HashMap::new();
    for b in bids(events) {
        let end = b.date_time.div_euclid(size) * size + size;
        let m = max.entry(end).or_default();
        *m = (*m).max(b.price);
    }
    sorted(
        bids(events)
            .filter_map(|b| {
                let end = b.date_time.div_euclid(size) * size + size;
                (b.price == max[&end]).then_some(HighestBid {
                    window_end: end,
                    price: b.price,
                    auction: b.auction,
                    bidder: b.bidder,
                    date_time: b.date_time,
                })
            })
            .collect(),
    )
}

pub fn q8(events: &[Event]) -> Vec<NewSeller> {
    let size = ms(Q8_WINDOW);
    let mut sellers = std::collections::HashSet::new();
    for e in events {
        if let Event::Auction(a) = e {
            sellers.insert((a.seller, a.date_time.div_euclid(size) * size));
        }
    }
    let mut out = Vec::new();
    for e in events {
        if let Event::Person(p) = e {
            let start = p.date_time.div_euclid(size) * size;
            if sellers.contains(&(p.id, start)) {
                out.push(NewSeller {
                    id: p.id,
                    name: p.name.as_str().to_string(),
                    window_start: start,
                });
            }
        }
    }
    sorted(out)
}

pub fn q11(events: &[Event]) -> Vec<BidderWindow> {
    let gap = ms(Q11_GAP);
    let mut times: HashMap<u64, Vec<i64>> = HashMap::new();
    for b in bids(events) {
        times.entry(b.bidder).or_default().push(b.date_time);
    }
    let mut out = Vec::new();
    for (bidder, mut ts) in times {
        ts.sort_unstable();
        // A bid's window is [t, t + gap); windows that touch or overlap merge.
        let (mut start, mut end, mut n) = (ts[0], ts[0] + gap, 0);
        for t in ts {
            if t > end {
                out.push(BidderWindow {
                    bidder,
                    bids: n,
                    window_start: start,
                    window_end: end,
                });
                (start, n) = (t, 0);
            }
            end = end.max(t + gap);
            n += 1;
        }
        out.push(BidderWindow {
            bidder,
            bids: n,
            window_start: start,
            window_end: end,
        });
    }
    sorted(out)
}

/// Bids per bidder (q12's windows depend on the clock; their counts add up to these).
pub fn bids_per_bidder(events: &[Event]) -> BTreeMap<u64, u64> {
    let mut per = BTreeMap::new();
    for b in bids(events) {
        *per.entry(b.bidder).or_default() += 1;
    }
    per
}
