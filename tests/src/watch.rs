//! A function's real binary under `cargo lambda watch` on 127.0.0.1, for end-to-end tests and
//! benchmarks: started in its own process group with the function's environment, and stopped,
//! with everything it started, when dropped.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `cargo lambda watch` may take to listen (it listens before the first build).
const LISTEN: Duration = Duration::from_secs(60);

pub struct LambdaWatch {
    child: Child,
    /// The function, when started here rather than by the watch.
    function: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// The name the emulator serves the function under.
    name: String,
}

/// What to run: a package the watch builds and runs (with cargo's dev profile), or a binary
/// already built, which runs against the watch's Lambda APIs
/// (`--only-lambda-apis`) so that nothing is compiled.
pub struct WatchSpec<'a> {
    pub package: &'a str,
    pub binary: Option<PathBuf>,
    /// The function's environment; the caller's `AWS_*` variables (the local endpoints) are added.
    pub env: BTreeMap<String, String>,
}

impl LambdaWatch {
    /// Starts the watch and waits until it listens. Panics (tests and benchmarks only) when it
    /// cannot start or does not listen in time, with the tail of its log.
    pub fn start(spec: WatchSpec<'_>) -> LambdaWatch {
        let mut env = spec.env;
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_") {
                env.entry(k).or_insert(v);
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "vnmask-watch-{}-{}-{}",
            spec.package,
            std::process::id(),
            crate::now()
        ));
        std::fs::create_dir_all(&dir).expect("watch directory");
        let out = std::fs::File::create(dir.join("watch.log")).expect("watch log");
        let port = free_port();
        let mut cmd = Command::new(cargo_lambda());
        cmd.args(["lambda", "watch", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--package", spec.package, "--ignore-changes"]);
        if spec.binary.is_some() {
            cmd.arg("--only-lambda-apis");
        }
        // The function inherits the watch's environment. Not through `--env-file`: the watch
        // logs those variables, secrets included, at INFO.
        let child = without_cargo_test_env(&mut cmd)
            .current_dir(workspace())
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("watch log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("cargo lambda watch starts");
        let mut watch = LambdaWatch {
            child,
            function: None,
            dir,
            port,
            // The only function of an `--only-lambda-apis` watch is its default one, `_`.
            name: if spec.binary.is_some() {
                "_".to_owned()
            } else {
                spec.package.to_owned()
            },
        };
        let deadline = Instant::now() + LISTEN;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = watch.child.try_wait().ok().flatten().is_some();
            assert!(
                !exited && Instant::now() < deadline,
                "cargo lambda watch did not listen:\n{}",
                watch.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(binary) = spec.binary {
            let out = std::fs::File::create(watch.dir.join("function.log")).expect("function log");
            watch.function = Some(
                Command::new(&binary)
                    .envs(&env)
                    .env(
                        "AWS_LAMBDA_RUNTIME_API",
                        format!("http://127.0.0.1:{port}/.rt"),
                    )
                    .env("AWS_LAMBDA_FUNCTION_NAME", "_")
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().expect("function log"))
                    .stderr(out)
                    .spawn()
                    .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display())),
            );
        }
        watch
    }

    /// Where an HTTP function is served: `http://127.0.0.1:<port>/lambda-url/<function>`.
    pub fn function_url(&self) -> String {
        format!("http://127.0.0.1:{}/lambda-url/{}", self.port, self.name)
    }

    /// Where any function is invoked with an event: `…/2015-03-31/functions/<function>/invocations`.
    pub fn invoke_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{}/invocations",
            self.port, self.name
        )
    }

    /// The output so far: cargo's, the watch's and the function's.
    pub fn log(&self) -> String {
        let mut log = std::fs::read(self.dir.join("watch.log")).unwrap_or_default();
        log.extend(std::fs::read(self.dir.join("function.log")).unwrap_or_default());
        String::from_utf8_lossy(&log).into_owned()
    }

    /// The last few kilobytes of the output, for failures.
    pub fn log_tail(&self) -> String {
        tail(&self.log(), 4000)
    }
}

/// The last `bytes` bytes of `text` (or a little fewer, to end on a character boundary).
pub fn tail(text: &str, bytes: usize) -> String {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// The tails of each log file in `dir`, headed by their names: what a failed test prints, since
/// CI keeps nothing but the test's output.
pub fn log_tails(dir: &Path, bytes_each: usize) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    logs.retain(|p| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("log" | "out" | "err")
        )
    });
    logs.sort();
    logs.iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
            format!("==> {} <==\n{}\n", p.display(), tail(&text, bytes_each))
        })
        .collect()
}

impl Drop for LambdaWatch {
    fn drop(&mut self) {
        if let Some(mut function) = self.function.take() {
            let _ = function.kill();
            let _ = function.wait();
        }
        // The group holds cargo, cargo-watch and the function: signal it whole, by its id.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the variables cargo sets for the test being run (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`,
/// …) from a command that runs cargo. Build scripts such as ring's rerun when they change, so a
/// nested build that saw the test's values would rebuild ring and everything above it (rustls,
/// the AWS SDK) in the shared target directory, and again for the next test crate.
pub fn without_cargo_test_env(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let per_crate = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || matches!(
                name,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if per_crate {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// `cargo-lambda` from the Makefile's virtualenv, else from `PATH`.
pub fn cargo_lambda() -> PathBuf {
    let local = workspace().join(".venv/bin/cargo-lambda");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("cargo-lambda"))
                .find(|p| p.exists())
        })
        .expect("cargo-lambda is not installed: run `make deps` (it goes into .venv/bin)")
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_show_the_end_of_each_log_and_skip_other_files() {
        let dir = std::env::temp_dir().join(format!("vnmask-log-tails-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dev.err"), "an early line, cut off\nthe cause\n").unwrap();
        std::fs::write(dir.join("functions.log"), "é".repeat(10) + "x").unwrap();
        std::fs::write(dir.join("dev.env"), "export SECRET=x\n").unwrap();

        let tails = log_tails(&dir, 20);
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(tails.contains("the cause\n"), "{tails}");
        assert!(!tails.contains("early line"), "{tails}");
        // 20 bytes back from the end of 21 lands inside the first two-byte character: the tail
        // starts after it.
        assert!(tails.contains("functions.log <==\néééééééééx\n"), "{tails}");
        assert!(!tails.contains("SECRET"), "{tails}");
        assert!(tails.find("dev.err").unwrap() < tails.find("functions.log").unwrap());
    }
}
