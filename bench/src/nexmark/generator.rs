//! Nexmark's event generator, after the one Beam's and Flink's Nexmark suites use.
//!
//! Event `i` of the stream is a pure function of the seed and `i`: one in 50 is a person, three
//! an auction, 46 a bid (Nexmark's 1:3:46). Ids grow with the stream; an auction's seller and a
//! bid's bidder are one of the recently active people (a few "hot" ones most of the time), a
//! bid's auction one of those still in flight (a hot one half the time), a few ids ahead of
//! the last one made, so a bid can precede its auction. Event time advances at `rate` events
//! per second from [`NexmarkConfig::base_time_ms`].
//!
//! Shards take the stream in blocks of [`NexmarkConfig::block`] events dealt round robin, so
//! every shard's events move through event time together (contiguous splits would put one
//! shard seconds of event time ahead of another and hold every window open until the slowest
//! caught up). The union of the shards' events is the same stream at any parallelism.

use shardflow::types::ShortString;
use shardflow_core::rng::{SplitMix64, mix64};

use super::model::{Auction, Bid, Event, Person};

/// Events of each kind in every [`PROPORTION_DENOMINATOR`] events.
pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
/// Few categories, so that the queries find results on small inputs.
pub const NUM_CATEGORIES: u64 = 5;
/// Ids that may be chosen ahead of the last one made.
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// Hot sellers, bidders and auctions are the first (second, for bidders) of each batch of
/// this many recent ones.
const HOT_BATCH: u64 = 100;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// The start of event time of the generated stream (2026-01-01T00:00:00Z).
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// How the stream is generated.
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// Events in the stream.
    pub events: u64,
    /// Events per second of event time (Flink's Nexmark default: 10 million).
    pub rate: u64,
    pub seed: u64,
    pub base_time_ms: i64,
    /// People an auction's seller or a bid's bidder is drawn from (the most recent ones).
    pub active_people: u64,
    /// Auctions a bid's auction is drawn from (the most recent ones).
    pub in_flight_auctions: u64,
    /// One in this many bids is for a random in-flight auction, the rest for a hot one.
    pub hot_auction_ratio: u64,
    /// One in this many auctions has a random active seller, the rest a hot one.
    pub hot_sellers_ratio: u64,
    /// One in this many bids has a random active bidder, the rest a hot one.
    pub hot_bidders_ratio: u64,
    /// Events per block dealt to the shards.
    pub block: u64,
}

impl Default for NexmarkConfig {
    /// Beam's and Flink's defaults: 10 M events/s of event time, 1,000 active people, 100
    /// auctions in flight, hot ratios 2, 4 and 4.
    fn default() -> Self {
        Self {
            events: 10_000_000,
            rate: 10_000_000,
            seed: 42,
            base_time_ms: EPOCH_MS,
            active_people: 1_000,
            in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            block: 1_024,
        }
    }
}

/// What kind event `i` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Auction,
    Bid,
}

#[inline]
pub fn kind_of(i: u64) -> Kind {
    let r = i % PROPORTION_DENOMINATOR;
    if r < PERSON_PROPORTION {
        Kind::Person
    } else if r < PERSON_PROPORTION + AUCTION_PROPORTION {
        Kind::Auction
    } else {
        Kind::Bid
    }
}

/// The last person id made by event `i` (0-based; `i`'s own when `i` makes a person).
#[inline]
pub fn last_base0_person_id(i: u64) -> u64 {
    let epoch = i / PROPORTION_DENOMINATOR;
    let offset = i % PROPORTION_DENOMINATOR;
    // An auction or a bid: the epoch's last person.
    let offset = if offset < PERSON_PROPORTION {
        offset
    } else {
        PERSON_PROPORTION - 1
    };
    epoch * PERSON_PROPORTION + offset
}

/// The last auction id made by event `i` (0-based; `i`'s own when `i` makes an auction). Before
/// the first auction this wraps below zero, as Beam's does; callers add an offset or clamp.
#[inline]
pub fn last_base0_auction_id(i: u64) -> u64 {
    let epoch = (i / PROPORTION_DENOMINATOR) as i64;
    let offset = i % PROPORTION_DENOMINATOR;
    let (epoch, offset) = if offset < PERSON_PROPORTION {
        // A person: the last auction of the previous epoch.
        (epoch - 1, AUCTION_PROPORTION - 1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        // A bid: the last auction of this epoch.
        (epoch, AUCTION_PROPORTION - 1)
    } else {
        (epoch, offset - PERSON_PROPORTION)
    };
    (epoch * AUCTION_PROPORTION as i64 + offset as i64).max(0) as u64
}

impl NexmarkConfig {
    /// Event `i`'s time.
    #[inline]
    pub fn timestamp(&self, i: u64) -> i64 {
        let rate = self.rate.max(1);
        let ms = match i.checked_mul(1000) {
            Some(x) => x / rate,
            None => (i as u128 * 1000 / rate as u128) as u64,
        };
        self.base_time_ms + ms as i64
    }

    /// Event `i` of the stream.
    pub fn event(&self, i: u64) -> Event {
        let mut rng = SplitMix64::new(mix64(self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let ts = self.timestamp(i);
        match kind_of(i) {
            Kind::Person => Event::Person(Box::new(self.person(i, &mut rng, ts))),
            Kind::Auction => Event::Auction(Box::new(self.auction(i, &mut rng, ts))),
            Kind::Bid => Event::Bid(self.bid(i, &mut rng, ts)),
        }
    }

    /// A random recently active person (0-based), a few possibly not made yet.
    fn next_base0_person_id(&self, i: u64, rng: &mut SplitMix64) -> u64 {
        let people = last_base0_person_id(i) + 1;
        let active = people.min(self.active_people);
        people - active + rng.below(active + PERSON_ID_LEAD)
    }

    /// A random auction still likely in flight (0-based), a few possibly not made yet.
    fn next_base0_auction_id(&self, i: u64, rng: &mut SplitMix64) -> u64 {
        let max = last_base0_auction_id(i);
        let min = max.saturating_sub(self.in_flight_auctions);
        min + rng.below(max - min + 1 + AUCTION_ID_LEAD)
    }

    fn person(&self, i: u64, rng: &mut SplitMix64, ts: i64) -> Person {
        let id = last_base0_person_id(i) + FIRST_PERSON_ID;
        let mut name = String::with_capacity(14);
        name.push_str(pick(rng, &FIRST_NAMES));
        name.push(' ');
        name.push_str(pick(rng, &LAST_NAMES));
        let mut email = String::with_capacity(18);
        push_letters(rng, 7, &mut email);
        email.push('@');
        push_letters(rng, 5, &mut email);
        email.push_str(".com");
        let mut credit_card = String::with_capacity(19);
        for k in 0..4 {
            if k > 0 {
                credit_card.push(' ');
            }
            let n = rng.below(10_000);
            for d in [n / 1000, n / 100 % 10, n / 10 % 10, n % 10] {
                credit_card.push((b'0' + d as u8) as char);
            }
        }
        Person {
            id,
            name: ShortString::from(name),
            email,
            credit_card,
            city: ShortString::from(pick(rng, &US_CITIES)),
            state: ShortString::from(pick(rng, &US_STATES)),
            date_time: ts,
        }
    }

    fn auction(&self, i: u64, rng: &mut SplitMix64, ts: i64) -> Auction {
        let id = last_base0_auction_id(i) + FIRST_AUCTION_ID;
        let seller = if rng.below(self.hot_sellers_ratio) > 0 {
            last_base0_person_id(i) / HOT_BATCH * HOT_BATCH
        } else {
            self.next_base0_person_id(i, rng)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = next_price(rng);
        // Auctions last on average as long as it takes to make `in_flight_auctions` more.
        let ahead = self.in_flight_auctions * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let horizon = (self.timestamp(i + ahead) - ts).max(0) as u64;
        let expires = ts + 1 + rng.below((horizon * 2).max(1)) as i64;
        let mut item_name = String::with_capacity(20);
        push_words(rng, 20, &mut item_name);
        let mut description = String::with_capacity(100);
        push_words(rng, 100, &mut description);
        let reserve = initial_bid + next_price(rng);
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: ts,
            expires,
            seller,
            category,
        }
    }

    fn bid(&self, i: u64, rng: &mut SplitMix64, ts: i64) -> Bid {
        let auction = if rng.below(self.hot_auction_ratio) > 0 {
            last_base0_auction_id(i) / HOT_BATCH * HOT_BATCH
        } else {
            self.next_base0_auction_id(i, rng)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.below(self.hot_bidders_ratio) > 0 {
            // The second of its batch, so that hot bidders and hot sellers differ.
            last_base0_person_id(i) / HOT_BATCH * HOT_BATCH + 1
        } else {
            self.next_base0_person_id(i, rng)
        } + FIRST_PERSON_ID;
        Bid {
            auction,
            bidder,
            price: next_price(rng),
            date_time: ts,
        }
    }
}

#[inline]
fn pick<'a>(rng: &mut SplitMix64, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

/// A price in cents, log-uniform from $1 to $1,000,000 (Nexmark's `10^(6u) * 100`, rounded),
/// by `exp` rather than `powf` (a fifth of the generator's time went to `pow`).
#[inline]
fn next_price(rng: &mut SplitMix64) -> u64 {
    ((rng.next_f64() * 6.0 * std::f64::consts::LN_10).exp() * 100.0 + 0.5) as u64
}

/// Eight letters from one draw: each byte picks a letter by multiply-shift.
#[inline]
fn letters(rng: &mut SplitMix64) -> [u8; 8] {
    rng.next_u64()
        .to_le_bytes()
        .map(|b| b'a' + ((b as u16 * 26) >> 8) as u8)
}

fn push_letters(rng: &mut SplitMix64, n: usize, out: &mut String) {
    let mut left = n;
    while left > 0 {
        let l = letters(rng);
        let take = left.min(8);
        // ASCII letters.
        out.push_str(std::str::from_utf8(&l[..take]).expect("ASCII"));
        left -= take;
    }
}

/// Between 3 and `max` characters of lowercase letters, about one in 13 a space between
/// words (never first or last).
fn push_words(rng: &mut SplitMix64, max: u64, out: &mut String) {
    let len = (3 + rng.below(max - 2)) as usize;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        let r = rng.next_u64().to_le_bytes();
        for b in r {
            if bytes.len() == len {
                break;
            }
            // One byte in 13 (20 of 256) a space, the rest a letter.
            let space = b < 20 && !bytes.is_empty() && bytes.len() + 1 < len;
            bytes.push(if space {
                b' '
            } else {
                b'a' + ((b as u16 * 26) >> 8) as u8
            });
        }
    }
    out.push_str(std::str::from_utf8(&bytes).expect("ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_proportions() {
        // Over epochs, every person and auction id is made once, in order.
        let (mut persons, mut auctions) = (Vec::new(), Vec::new());
        for i in 0..50 * 40 {
            match kind_of(i) {
                Kind::Person => persons.push(last_base0_person_id(i)),
                Kind::Auction => auctions.push(last_base0_auction_id(i)),
                Kind::Bid => {
                    // A bid refers back to what the epoch has made.
                    assert_eq!(last_base0_person_id(i), i / 50);
                    assert_eq!(last_base0_auction_id(i), i / 50 * 3 + 2);
                }
            }
        }
        assert_eq!(persons, (0..40).collect::<Vec<_>>());
        assert_eq!(auctions, (0..120).collect::<Vec<_>>());
    }

    #[test]
    fn prices_span_a_dollar_to_a_million() {
        let mut rng = SplitMix64::new(7);
        let prices: Vec<u64> = (0..100_000).map(|_| next_price(&mut rng)).collect();
        assert!(prices.iter().all(|&p| (100..=100_000_000).contains(&p)));
        // Log-uniform: about a sixth of them in each decade.
        let below_1000 = prices.iter().filter(|&&p| p < 1_000).count();
        assert!((15_000..18_500).contains(&below_1000), "{below_1000}");
    }
}
