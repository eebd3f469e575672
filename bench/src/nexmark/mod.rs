//! Nexmark, the streaming benchmark of Beam's and Flink's suites: an online auction's event
//! stream ([`generator`], [`source`]) and its queries ([`queries`]), with brute-force
//! references ([`reference`]) the tests check them against.

pub mod generator;
pub mod harness;
pub mod model;
pub mod queries;
pub mod reference;
pub mod source;

pub use generator::NexmarkConfig;
pub use model::{Auction, Bid, Event, Person};
pub use source::events;
