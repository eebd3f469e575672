//! What a record must be: a user type deriving rkyv's traits.
//!
//! [`Data`] bundles the bounds once, so operators and exchanges say `T: Data` and nothing else.
//! Any `#[derive(Archive, Serialize, Deserialize, Clone)]` type whose fields are themselves
//! records (numbers, `String`, `Vec`, `Option`, tuples, …) is `Data` automatically.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// The serializer every exchange uses: rkyv's high-level serializer into a pooled buffer.
pub type BatchSerializer<'a> = HighSerializer<AlignedVec<16>, ArenaHandle<'a>, rancor::Error>;

/// A record: archivable, deserializable, checkable from untrusted bytes, clonable and sendable.
pub trait Data:
    Archive<
        Archived: Deserialize<Self, HighDeserializer<rancor::Error>>
                      + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    > + for<'a> Serialize<BatchSerializer<'a>>
    + Clone
    + Send
    + 'static
{
}

impl<T> Data for T where
    T: Archive<
            Archived: Deserialize<T, HighDeserializer<rancor::Error>>
                          + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
        > + for<'a> Serialize<BatchSerializer<'a>>
        + Clone
        + Send
        + 'static
{
}

/// A slice of records serialized as one `ArchivedVec`: lets a sender archive the first `n`
/// staged records without moving them into a vector of their own.
pub struct SliceBatch<'a, T>(pub &'a [T]);

impl<T: Archive> Archive for SliceBatch<'_, T> {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<T, S> Serialize<S> for SliceBatch<'_, T>
where
    T: Serialize<S>,
    S: rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedVec::<T::Archived>::serialize_from_slice(self.0, serializer)
    }
}

/// Appends `records` to `buf` as one archived vector; returns the buffer.
pub fn archive_batch<T: Data>(
    records: &[T],
    buf: AlignedVec<16>,
) -> Result<AlignedVec<16>, rancor::Error> {
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(&SliceBatch(records), buf)
}

/// Reads an archived batch and appends its records, deserialized, to `out`.
///
/// `trusted` bytes (built by this process, in this process's memory) are read without
/// validation; anything else gets rkyv's full bytecheck first.
pub fn unarchive_batch<T: Data>(
    payload: &[u8],
    trusted: bool,
    out: &mut Vec<T>,
) -> Result<(), rancor::Error> {
    let archived: &ArchivedVec<T::Archived> = if trusted {
        // SAFETY: the payload was written by `archive_batch::<T>` in this process, into a
        // 16-byte aligned buffer that no one has written to since (the ring hands a buffer to
        // one side at a time).
        unsafe { rkyv::access_unchecked::<ArchivedVec<T::Archived>>(payload) }
    } else {
        rkyv::access::<ArchivedVec<T::Archived>, rancor::Error>(payload)?
    };
    out.reserve(archived.len());
    let mut pool = rkyv::de::Pool::new();
    for a in archived.iter() {
        out.push(a.deserialize(rancor::Strategy::wrap(&mut pool))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_checked_and_trusted() {
        let records: Vec<(String, u64)> = (0..100).map(|i| (format!("w{i}"), i)).collect();
        for split in [0, 1, 37, 100] {
            let buf = archive_batch(&records[..split], AlignedVec::new()).unwrap();
            for trusted in [true, false] {
                let mut out = Vec::new();
                unarchive_batch::<(String, u64)>(&buf, trusted, &mut out).unwrap();
                assert_eq!(out, records[..split]);
            }
        }
    }

    #[test]
    fn garbage_fails_the_bytecheck() {
        let mut buf = archive_batch(&[(String::from("abc"), 1u64)], AlignedVec::new()).unwrap();
        let n = buf.len();
        // Point the vector's relative offset far outside the buffer.
        buf[n - 8..n - 4].copy_from_slice(&(-4096i32).to_le_bytes());
        let mut out: Vec<(String, u64)> = Vec::new();
        assert!(unarchive_batch(&buf, false, &mut out).is_err());
    }
}
