//! Nexmark's three kinds of event, as the queries read them.
//!
//! The fields are Nexmark's (Beam's and Flink's `Person`, `Auction`, `Bid`) less the `extra`
//! padding strings, which no query reads; a bid is therefore 32 bytes rather than ~100. Person
//! and auction events are rare (3 and 6 in 100) and boxed, so that an [`Event`] costs a bid's
//! size and every bid's archived form stays inline.

use rkyv::{Archive, Deserialize, Serialize};
use shardflow::types::ShortString;

/// A new user of the auction site.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Person {
    pub id: u64,
    pub name: ShortString,
    pub email: String,
    pub credit_card: String,
    pub city: ShortString,
    pub state: ShortString,
    /// Event time, milliseconds since the Unix epoch.
    pub date_time: i64,
}

/// A new auction: open from `date_time` until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: u64,
    pub reserve: u64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: u64,
    pub category: u64,
}

/// A bid on an auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    /// Cents.
    pub price: u64,
    pub date_time: i64,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Event {
    Person(Box<Person>),
    Auction(Box<Auction>),
    Bid(Bid),
}

impl Event {
    /// The event's time, milliseconds since the Unix epoch.
    #[inline]
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    #[inline]
    pub fn bid(&self) -> Option<&Bid> {
        match self {
            Event::Bid(b) => Some(b),
            _ => None,
        }
    }

    /// The event's bytes in a stable little-endian form (the generator's determinism test
    /// compares these across parallelisms).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let s = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        match self {
            Event::Person(p) => {
                out.push(0);
                out.extend_from_slice(&p.id.to_le_bytes());
                s(out, p.name.as_str());
                s(out, &p.email);
                s(out, &p.credit_card);
                s(out, p.city.as_str());
                s(out, p.state.as_str());
                out.extend_from_slice(&p.date_time.to_le_bytes());
            }
            Event::Auction(a) => {
                out.push(1);
                for v in [a.id, a.initial_bid, a.reserve] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                s(out, &a.item_name);
                s(out, &a.description);
                for v in [a.date_time, a.expires] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                for v in [a.seller, a.category] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Event::Bid(b) => {
                out.push(2);
                for v in [b.auction, b.bidder, b.price] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&b.date_time.to_le_bytes());
            }
        }
    }
}
