//! The exchange under pressure and under attack: bounded buffering with a slow consumer, and
//! corrupt frames rejected with the channel named.

use std::cell::RefCell;
use std::rc::Rc;

use shardflow::prelude::*;
use shardflow_core::data::archive_batch;
use shardflow_core::exchange::ExchangeName;
use shardflow_core::exchange::local::LocalChannel;
use shardflow_core::exchange::reader::{ReaderSettings, run_reader};
use shardflow_core::operator::sink::SinkFunction;
use shardflow_core::operator::{Batch, Push};
use shardflow_core::runtime::CancelToken;
use shardflow_shuffle::frame::{begin_frame, end_frame, write_frame};
use shardflow_shuffle::{Checksum, FrameKind, RingConfig, ring};

/// A sink that burns CPU on every record: the slow consumer.
struct Slow {
    sum: i64,
    handle: shardflow::sink::collect::CollectHandle<i64>,
    shard: u32,
}

impl SinkFunction<i64> for Slow {
    fn write(&mut self, batch: &mut Vec<i64>) -> Result<(), JobError> {
        for x in batch.drain(..) {
            let mut h = x as u64;
            for _ in 0..2_000 {
                h = std::hint::black_box(h.rotate_left(5) ^ 0x9e37_79b9);
            }
            self.sum += x + (h == 42) as i64;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        let mut one = vec![self.sum];
        let mut sink = shardflow::sink::collect::CollectSink::new(self.handle.clone(), self.shard);
        sink.write(&mut one)?;
        sink.finish()
    }
}

#[test]
fn a_slow_sink_bounds_the_bytes_buffered_in_the_exchange() {
    let _cpus = shardflow_tests::shared_cpus();
    let n = 60_000i64;
    let batch_bytes = 1024;
    let buffers = 2;
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2);
    env.config_mut().batch_bytes = batch_bytes;
    env.config_mut().channel_buffers = buffers;
    let sums = shardflow::sink::collect::CollectHandle::<i64>::new();
    let h = sums.clone();
    env.generate_sequence(1, n)
        .key_by(|x: &i64| *x)
        .reduce(|a: &mut i64, b: i64| *a += b) // streaming: every record passes on
        .sink_to("slow", move |ctx| {
            Ok(Slow {
                sum: 0,
                handle: h.clone(),
                shard: ctx.runtime.shard,
            })
        });
    let result = env.execute("backpressure").unwrap();
    assert_eq!(
        sums.take().iter().sum::<i64>(),
        n * (n + 1) / 2,
        "nothing lost"
    );
    let ex = &result.metrics.exchanges[0];
    // A buffer holds one batch frame (batch_bytes of archived records, a vector root, a header,
    // padding) and perhaps the end-of-input frame: at most batch_bytes + 64 bytes.
    let bound = buffers * (batch_bytes + 64);
    assert!(
        ex.ring_buffered_bytes_high_water <= bound,
        "{ex:?}, bound {bound}"
    );
    assert!(ex.ring_buffered_buffers_high_water <= buffers, "{ex:?}");
    // And the bound was reached: the sender really was held back.
    assert!(ex.credit_stalls > 0, "no backpressure happened: {ex:?}");
    assert_eq!(ex.ring_buffered_buffers_high_water, buffers, "{ex:?}");
}

/// A chain end that records what reaches it.
struct Record(Rc<RefCell<Vec<u64>>>, Rc<RefCell<bool>>);

impl Push<u64> for Record {
    fn push(&mut self, batch: &mut Batch<u64>) -> Result<(), JobError> {
        self.0.borrow_mut().append(&mut batch.records);
        batch.clear();
        Ok(())
    }
    fn watermark(&mut self, _watermark: i64) -> Result<(), JobError> {
        Ok(())
    }
    fn watermark_status(&mut self, _idle: bool) -> Result<(), JobError> {
        Ok(())
    }
    fn barrier(&mut self, _barrier: shardflow_core::checkpoint::Barrier) -> Result<(), JobError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        *self.1.borrow_mut() = true;
        Ok(())
    }
}

/// Runs a reader on shard 0 of 2 whose ring from shard 1 carries `buf`; returns its result and
/// the records that reached the chain.
fn read_one_buffer(
    corrupt: impl FnOnce(&mut shardflow_shuffle::Buffer),
) -> (Result<(), JobError>, Vec<u64>, bool) {
    read_buffer(|buf, channel| {
        data_frame(buf, channel, &[1, 2, 3]);
        write_frame(buf, FrameKind::End, channel, &[], Checksum::Compute).unwrap();
        corrupt(buf);
    })
}

/// Appends a DATA frame of `records` to `buf`.
fn data_frame(buf: &mut shardflow_shuffle::Buffer, channel: u32, records: &[u64]) {
    let start = begin_frame(buf);
    let taken = std::mem::take(buf);
    *buf = archive_batch(records, taken).unwrap();
    end_frame(buf, start, FrameKind::Data, channel, Checksum::Compute).unwrap();
}

/// Runs a reader on shard 0 of 2 whose ring from shard 1 carries the buffer `build` writes;
/// returns its result and the records that reached the chain.
fn read_buffer(
    build: impl FnOnce(&mut shardflow_shuffle::Buffer, u32),
) -> (Result<(), JobError>, Vec<u64>, bool) {
    let name = ExchangeName {
        name: "key_by → test".into(),
        index: 3,
        parallelism: 2,
    };
    let channel = name.channel_id(1, 0);
    let (tx, rx) = ring(channel, RingConfig::default());
    let mut buf = tx.try_take_buffer().unwrap().unwrap();
    build(&mut buf, channel);
    tx.send(buf);
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let g = Rc::new(RefCell::new(Vec::new()));
            let f = Rc::new(RefCell::new(false));
            let local = LocalChannel::<u64>::new(2);
            local.send_end();
            let settings = ReaderSettings {
                shard: 0,
                scheduling: SchedulingMode::Throughput,
                flush: FlushPolicy::WhenFullOrIdle,
                name,
                cancel: CancelToken::default(),
                ticker: shardflow_core::time::Ticker::new(Default::default(), None),
                checkpoint: None,
            };
            let r = run_reader::<u64>(
                vec![None, Some(rx)],
                local,
                Box::new(Record(g.clone(), f.clone())),
                settings,
            )
            .await;
            let got = g.borrow().clone();
            let fin = *f.borrow();
            (r.map_err(|e| e.to_string()), got, fin)
        })
        .unwrap()
        .join()
        .unwrap();
    drop(tx);
    let (r, got, fin) = result;
    (r.map_err(JobError::Graph), got, fin)
}

#[test]
fn bad_timestamp_watermark_and_status_frames_are_errors_naming_the_channel() {
    let _cpus = shardflow_tests::shared_cpus();
    type Build = Box<dyn FnOnce(&mut shardflow_shuffle::Buffer, u32)>;
    let ts = |n: usize| -> Vec<u8> { (0..n as i64).flat_map(|t| t.to_le_bytes()).collect() };
    let cases: Vec<(&str, Build)> = vec![
        (
            "2 timestamps for a batch of 3 records",
            Box::new(move |b, ch| {
                write_frame(b, FrameKind::Timestamps, ch, &ts(2), Checksum::Compute).unwrap();
                data_frame(b, ch, &[1, 2, 3]);
            }),
        ),
        (
            "not whole i64s",
            Box::new(|b, ch| {
                write_frame(b, FrameKind::Timestamps, ch, &[0; 7], Checksum::Compute).unwrap();
                data_frame(b, ch, &[1]);
            }),
        ),
        (
            "a watermark frame of 4 bytes",
            Box::new(|b, ch| {
                write_frame(b, FrameKind::Watermark, ch, &[0; 4], Checksum::Compute).unwrap();
            }),
        ),
        (
            "a status frame of 1 bytes",
            Box::new(|b, ch| {
                write_frame(b, FrameKind::Status, ch, &[2], Checksum::Compute).unwrap();
            }),
        ),
    ];
    for (what, build) in cases {
        let (r, got, finished) = read_buffer(build);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(what), "{what}: {msg}");
        assert!(
            msg.contains("shard 1 → shard 0"),
            "the channel is named: {msg}"
        );
        assert!(got.is_empty(), "{what}: records reached the chain: {got:?}");
        assert!(!finished);
    }
    // The same frames, sound: delivered.
    let (r, got, finished) = read_buffer(|b, ch| {
        write_frame(b, FrameKind::Timestamps, ch, &ts(3), Checksum::Compute).unwrap();
        data_frame(b, ch, &[4, 5, 6]);
        write_frame(
            b,
            FrameKind::Watermark,
            ch,
            &7i64.to_le_bytes(),
            Checksum::Compute,
        )
        .unwrap();
        write_frame(b, FrameKind::Status, ch, &[1], Checksum::Compute).unwrap();
        write_frame(b, FrameKind::End, ch, &[], Checksum::Compute).unwrap();
    });
    r.unwrap();
    assert_eq!(got, vec![4, 5, 6]);
    assert!(finished);
}

#[test]
fn a_sound_frame_is_delivered() {
    let _cpus = shardflow_tests::shared_cpus();
    let (r, got, finished) = read_one_buffer(|_| {});
    r.unwrap();
    assert_eq!(got, vec![1, 2, 3]);
    assert!(finished);
}

#[test]
fn a_frame_with_a_wrong_crc_or_length_never_reaches_an_operator() {
    let _cpus = shardflow_tests::shared_cpus();
    type Corruption = Box<dyn FnOnce(&mut shardflow_shuffle::Buffer)>;
    let cases: Vec<(&str, Corruption)> = vec![
        ("crc", Box::new(|b| b[20] ^= 0x10)),
        (
            "length",
            Box::new(|b| b[0..4].copy_from_slice(&100_000u32.to_le_bytes())),
        ),
        ("crc", Box::new(|b| b[4] ^= 1)),
    ];
    for (what, corrupt) in cases {
        let (r, got, finished) = read_one_buffer(corrupt);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("exchange 'key_by → test' channel 14 (shard 1 → shard 0)"),
            "{what}: {msg}"
        );
        assert!(msg.contains(what), "{what}: {msg}");
        assert!(
            got.is_empty(),
            "{what}: a corrupt frame reached the operator"
        );
        assert!(!finished);
    }
}

/// Tells the test when the lone record has reached the end of the job.
struct Signal(std::sync::mpsc::Sender<String>);

impl SinkFunction<String> for Signal {
    fn write(&mut self, batch: &mut Vec<String>) -> Result<(), JobError> {
        for line in batch.drain(..) {
            let _ = self.0.send(line);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        Ok(())
    }
}

#[test]
fn a_lone_record_is_never_held_back_waiting_for_a_batch_to_fill() {
    let _cpus = shardflow_tests::exclusive_cpus();
    // The server sends one line and then waits until the job has delivered it to its sink,
    // through an exchange, before it sends anything more or closes. If any stage held the lone
    // record back until its batch filled or the input ended, the server would give up.
    for mode in [SchedulingMode::Throughput, SchedulingMode::Latency] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"hello\n").unwrap();
            let seen = rx.recv_timeout(std::time::Duration::from_secs(60));
            s.write_all(b"bye\n").unwrap();
            seen
        });
        let tx = std::sync::Mutex::new(tx);
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2).set_scheduling_mode(mode);
        env.socket_text_stream("127.0.0.1", port)
            .key_by(|l: &String| l.clone())
            .process_by_shard(PassOn)
            .sink_to("signal", move |_| Ok(Signal(tx.lock().unwrap().clone())));
        env.execute("lone record").unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            seen.as_deref(),
            Ok("hello"),
            "{mode:?}: the lone record was held back"
        );
    }
}

#[derive(Clone)]
struct PassOn;

impl ProcessFunction<String, String> for PassOn {
    fn process_element(
        &mut self,
        x: String,
        _ctx: &RuntimeContext,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        out.collect(x);
        Ok(())
    }
}

/// Passes both inputs on, tagged by side.
#[derive(Clone)]
struct Both;

impl KeyedCoProcessFunction<u64, (u64, u64), (u64, u64), (u64, u64)> for Both {
    type State = ();
    fn process_element1(
        &mut self,
        r: (u64, u64),
        _ctx: &mut KeyedContext<u64, ()>,
        out: &mut Collector<(u64, u64)>,
    ) -> Result<(), UserError> {
        out.collect((r.0, r.1 * 2));
        Ok(())
    }
    fn process_element2(
        &mut self,
        r: (u64, u64),
        _ctx: &mut KeyedContext<u64, ()>,
        out: &mut Collector<(u64, u64)>,
    ) -> Result<(), UserError> {
        out.collect((r.0, r.1 * 2 + 1));
        Ok(())
    }
}

/// Two reader tasks (a two-input operator's inputs, or a union's) drive one exchange writer
/// downstream, which waits for credit with one waker: every task stalled on it must wake when
/// the credit comes back. When only the last to poll was woken, these jobs hung about one run
/// in three; each runs many times here, and must end with every record counted.
#[test]
fn tasks_sharing_a_downstream_exchange_all_wake_on_credit() {
    let _cpus = shardflow_tests::shared_cpus();
    let n = 100_000u64;
    let left: Vec<(u64, u64)> = (0..n).map(|i| (i % 977, i)).collect();
    let right: Vec<(u64, u64)> = (0..n).map(|i| (i % 631, i)).collect();
    // Every record's value once, keyed by the value's residue: a count per key.
    let mut want: std::collections::BTreeMap<u64, u64> = Default::default();
    for i in 0..n {
        *want.entry((2 * i) % 101).or_default() += 1;
        *want.entry((2 * i + 1) % 101).or_default() += 1;
    }
    for run in 0..12 {
        let two_input = run % 2 == 0;
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(2);
        let (l, r) = (env.from_iter(left.clone()), env.from_iter(right.clone()));
        let merged = if two_input {
            l.key_by(|x: &(u64, u64)| x.0)
                .connect(&r.key_by(|x: &(u64, u64)| x.0))
                .process(Both)
        } else {
            let l = l.rebalance().map(|x: (u64, u64)| (x.0, x.1 * 2));
            let r = r.rebalance().map(|x: (u64, u64)| (x.0, x.1 * 2 + 1));
            l.union(&r)
        };
        let counts = merged
            .map(|x: (u64, u64)| (x.1 % 101, 1u64))
            .key_by(|x: &(u64, u64)| x.0)
            .sum(|x: &mut (u64, u64)| &mut x.1)
            .collect();
        env.execute("shared downstream").unwrap();
        let mut got: std::collections::BTreeMap<u64, u64> = Default::default();
        for (k, c) in counts.take() {
            let e = got.entry(k).or_default();
            *e = (*e).max(c);
        }
        assert_eq!(got, want, "run {run} (two-input: {two_input})");
    }
}
