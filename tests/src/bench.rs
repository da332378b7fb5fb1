//! What benchmarks share: where their report goes and how latencies are summarised.
//!
//! Each benchmark writes one Markdown section. Under `make bench` (infra/bench/run.sh) the
//! section goes to `$VNMASK_BENCH_DIR/<name>.md`, which the script assembles into BENCHMARKS.md;
//! run alone, the section is printed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `VNMASK_BENCH_DIR`, when set to something.
fn report_dir() -> Option<std::ffi::OsString> {
    std::env::var_os("VNMASK_BENCH_DIR").filter(|d| !d.is_empty())
}

/// Publishes a benchmark's Markdown section.
pub fn publish(name: &str, markdown: &str) {
    match report_dir() {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!("{name}.md"));
            std::fs::create_dir_all(&dir).expect("bench report directory");
            std::fs::write(&path, markdown).expect("bench report");
            eprintln!("{name}: section written to {}", path.display());
        }
        None => println!("{markdown}"),
    }
}

/// Records how a target fared, for the summary at the top of BENCHMARKS.md.
pub fn target(section: &str, target: &str, result: &str) {
    let row = format!("| {target} | {section} | {result} |\n");
    match report_dir() {
        Some(dir) => {
            use std::io::Write;
            std::fs::create_dir_all(&dir).expect("bench report directory");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(std::path::Path::new(&dir).join("targets.md"))
                .and_then(|mut f| f.write_all(row.as_bytes()))
                .expect("targets file");
        }
        None => println!("{row}"),
    }
}

/// Latencies, sorted once, summarised by percentile.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Latencies(samples)
    }

    /// The nearest-rank percentile `p` (0–100).
    pub fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A duration in the unit that reads best for it: ns below a microsecond, µs below a
/// millisecond, else ms.
pub fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        format!("{:.0} ns", us * 1000.0)
    } else if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// The machine, for a section's header line: cores and CPU model.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} × {model}")
}

/// Busy intervals of the requests that went through a proxy: from a request's first byte to
/// its response's last byte.
#[derive(Clone, Default)]
pub struct Busy(Arc<Mutex<Vec<(Instant, Instant)>>>);

impl Busy {
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// How long at least one request was outstanding between `from` and `to`.
    pub fn within(&self, from: Instant, to: Instant) -> Duration {
        let mut spans: Vec<(Instant, Instant)> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|&(a, b)| (a.max(from), b.min(to)))
            .filter(|(a, b)| a < b)
            .collect();
        spans.sort();
        let mut total = Duration::ZERO;
        let mut current: Option<(Instant, Instant)> = None;
        for (a, b) in spans {
            match current {
                Some((s, e)) if a <= e => current = Some((s, e.max(b))),
                Some((s, e)) => {
                    total += e - s;
                    current = Some((a, b));
                }
                None => current = Some((a, b)),
            }
        }
        if let Some((s, e)) = current {
            total += e - s;
        }
        total
    }
}

/// A loopback TCP proxy to the plain-HTTP endpoint `upstream` (`http://127.0.0.1:PORT`) that
/// records when requests are outstanding; returns its own endpoint URL.
pub async fn timing_proxy(upstream: &str, busy: Busy) -> String {
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let busy = busy.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // The start of the request in flight on this connection, if any.
                let pending: Arc<Mutex<Option<Instant>>> = Arc::default();
                let up = {
                    let pending = pending.clone();
                    async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = cr.read(&mut buf).await {
                            pending.lock().unwrap().get_or_insert_with(Instant::now);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    }
                };
                let down = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let now = Instant::now();
                        let mut spans = busy.0.lock().unwrap();
                        match pending.lock().unwrap().take() {
                            Some(start) => spans.push((start, now)),
                            // A later chunk of the same response extends its span.
                            None => {
                                if let Some(last) = spans.last_mut() {
                                    last.1 = last.1.max(now);
                                }
                            }
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    format!("http://{addr}")
}
