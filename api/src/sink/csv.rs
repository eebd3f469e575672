//! `write_as_csv`: one CSV row per record (RFC 4180 quoting by the `csv` crate), one file per
//! shard.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use shardflow_core::JobError;
use shardflow_core::operator::OperatorContext;
use shardflow_core::operator::sink::SinkFunction;

use super::text::{WriteMode, open_part};

/// Where CSV rows go: a part file, or memory (rows encoded for the exactly-once file sink).
pub enum CsvOut {
    File(BufWriter<File>),
    Memory(std::rc::Rc<std::cell::RefCell<Vec<u8>>>),
}

impl std::io::Write for CsvOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            CsvOut::File(f) => f.write(buf),
            CsvOut::Memory(v) => v.borrow_mut().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            CsvOut::File(f) => f.flush(),
            CsvOut::Memory(_) => Ok(()),
        }
    }
}

/// Appends `record` to `buf` as one CSV row (RFC 4180 quoting): the encoder that makes
/// [`sink_to_files_with`](crate::DataStream::sink_to_files_with) write CSV exactly once.
pub fn csv_line<T: ToCsv>(record: &T, buf: &mut Vec<u8>) {
    type Encoder = (
        csv::Writer<CsvOut>,
        std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        String,
    );
    thread_local! {
        static ENCODER: std::cell::RefCell<Encoder> = std::cell::RefCell::new({
            let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(CsvOut::Memory(out.clone()));
            (writer, out, String::new())
        });
    }
    ENCODER.with(|e| {
        let (writer, out, scratch) = &mut *e.borrow_mut();
        let mut row = CsvRow {
            writer,
            scratch,
            error: None,
        };
        record.write_csv(&mut row);
        // Writing into memory cannot fail.
        let _ = writer.write_record(None::<&[u8]>);
        let _ = writer.flush();
        let mut out = out.borrow_mut();
        buf.extend_from_slice(&out);
        out.clear();
    });
}

/// Writes the fields of one CSV row.
pub struct CsvRow<'a> {
    writer: &'a mut csv::Writer<CsvOut>,
    scratch: &'a mut String,
    error: Option<csv::Error>,
}

impl CsvRow<'_> {
    /// Writes one field (its `Display` form).
    pub fn field(&mut self, value: impl std::fmt::Display) {
        use std::fmt::Write;
        if self.error.is_some() {
            return;
        }
        self.scratch.clear();
        let _ = write!(self.scratch, "{value}");
        if let Err(e) = self.writer.write_field(self.scratch.as_bytes()) {
            self.error = Some(e);
        }
    }
}

/// A record that can be written as a CSV row.
pub trait ToCsv {
    fn write_csv(&self, row: &mut CsvRow<'_>);
}

macro_rules! csv_scalar {
    ($($t:ty),*) => {$(
        impl ToCsv for $t {
            fn write_csv(&self, row: &mut CsvRow<'_>) {
                row.field(self);
            }
        }
    )*};
}
csv_scalar!(
    i8,
    i16,
    i32,
    i64,
    i128,
    u8,
    u16,
    u32,
    u64,
    u128,
    f32,
    f64,
    bool,
    char,
    String,
    &'static str
);

macro_rules! csv_tuple {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: std::fmt::Display),+> ToCsv for ($($name,)+) {
            fn write_csv(&self, row: &mut CsvRow<'_>) {
                $(row.field(&self.$idx);)+
            }
        }
    };
}
csv_tuple!(A 0);
csv_tuple!(A 0, B 1);
csv_tuple!(A 0, B 1, C 2);
csv_tuple!(A 0, B 1, C 2, D 3);
csv_tuple!(A 0, B 1, C 2, D 3, E 4);
csv_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

pub struct CsvSink {
    path: PathBuf,
    writer: csv::Writer<CsvOut>,
    scratch: String,
}

impl CsvSink {
    pub fn open(dir: &Path, mode: WriteMode, ctx: &OperatorContext) -> Result<Self, JobError> {
        let (path, out) = open_part(dir, ".csv", mode, ctx)?;
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(CsvOut::File(out));
        Ok(Self {
            path,
            writer,
            scratch: String::new(),
        })
    }

    fn error(&self, e: csv::Error) -> JobError {
        let io = match e.into_kind() {
            csv::ErrorKind::Io(io) => io,
            other => std::io::Error::other(format!("{other:?}")),
        };
        JobError::io(&self.path, "cannot write output", io)
    }
}

impl<T: ToCsv + 'static> SinkFunction<T> for CsvSink {
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        for r in batch.drain(..) {
            let mut row = CsvRow {
                writer: &mut self.writer,
                scratch: &mut self.scratch,
                error: None,
            };
            r.write_csv(&mut row);
            if let Some(e) = row.error.take() {
                return Err(self.error(e));
            }
            if let Err(e) = self.writer.write_record(None::<&[u8]>) {
                return Err(self.error(e));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), JobError> {
        self.writer
            .flush()
            .map_err(|e| JobError::io(&self.path, "cannot write output", e))
    }
}
