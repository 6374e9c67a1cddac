//! The external ceiling: `wrk` posting the same signed 1 KiB webhook bodies to an `nginx` that
//! answers `return 200`, with the same number of connections: the fastest plain HTTP pipeline
//! on the machine, neither end written here. Both come from the Debian packages; when either is
//! missing the benchmark says how to install them and goes on with its own ceiling.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flock_e2e::Workdir;

use crate::measure::{CONNECTIONS, Prepared};

/// How to get the two programs.
pub(crate) const INSTALL: &str = "apt-get install nginx wrk";

/// An `nginx` serving `return 200` on a loopback port, stopped when dropped.
pub(crate) struct Nginx {
    child: Child,
    port: u16,
    _dir: Workdir,
}

/// The two programs, when both are installed.
pub(crate) struct Tools {
    nginx: PathBuf,
    wrk: PathBuf,
}

impl Tools {
    /// `nginx` and `wrk` from `PATH` (and `/usr/sbin`, where Debian puts `nginx`); `None`
    /// when either is missing.
    pub(crate) fn find() -> Option<Tools> {
        Some(Tools {
            nginx: which("nginx")?,
            wrk: which("wrk")?,
        })
    }

    /// Starts `nginx` on a free loopback port with two workers and no logs.
    pub(crate) fn start_nginx(&self) -> anyhow::Result<Nginx> {
        let dir = Workdir::new()?;
        let port = free_port()?;
        let root = dir.path().to_path_buf();
        let config = format!(
            "worker_processes 2;\n\
             daemon off;\n\
             pid {root}/nginx.pid;\n\
             error_log {root}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {root}/body;\n\
             \x20   proxy_temp_path {root}/proxy;\n\
             \x20   fastcgi_temp_path {root}/fastcgi;\n\
             \x20   uwsgi_temp_path {root}/uwsgi;\n\
             \x20   scgi_temp_path {root}/scgi;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{ return 200; }}\n\
             \x20   }}\n\
             }}\n",
            root = root.display()
        );
        let path = root.join("nginx.conf");
        std::fs::write(&path, config)?;
        let child = Command::new(&self.nginx)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.nginx.display()))?;
        let mut nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        let root = &root;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
                anyhow::bail!("nginx exited ({status}) before listening: {log}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// Requests per second of `wrk` posting `request` to `nginx` over [`CONNECTIONS`]
    /// connections on two threads for `secs` seconds.
    pub(crate) fn wrk(&self, nginx: &Nginx, request: &Prepared, secs: u32) -> anyhow::Result<f64> {
        let dir = Workdir::new()?;
        let script = dir.path().join("post.lua");
        std::fs::write(&script, lua_script(request))?;
        let output = Command::new(&self.wrk)
            .arg("-t2")
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{secs}s"))
            .arg("-s")
            .arg(&script)
            .arg(format!("http://127.0.0.1:{}/hook", nginx.port))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.wrk.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        requests_per_sec(&text).with_context(|| format!("no Requests/sec in wrk's output: {text}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx's master stops at once on SIGTERM (a fast shutdown) and takes its workers
        // with it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

/// A wrk script that posts `request`'s body with its headers on every request.
fn lua_script(request: &Prepared) -> String {
    let mut script = String::from("wrk.method = \"POST\"\n");
    let _ = writeln!(script, "wrk.body = {}", lua_string(request.body()));
    for (name, value) in request.headers() {
        let _ = writeln!(
            script,
            "wrk.headers[{}] = {}",
            lua_string(name.as_str().as_bytes()),
            lua_string(value.as_bytes())
        );
    }
    script
}

/// `bytes` as a Lua string literal, every byte that is not plain printable ASCII escaped.
fn lua_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

/// The `Requests/sec:` figure of wrk's report.
fn requests_per_sec(report: &str) -> Option<f64> {
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_parse() {
        let report = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 32 connections\n\
                      Requests/sec: 181234.56\nTransfer/sec:     13.14MB\n";
        assert_eq!(requests_per_sec(report), Some(181_234.56));
        assert_eq!(requests_per_sec("nothing"), None);
    }

    #[test]
    fn lua_strings_escape_what_lua_would_misread() {
        assert_eq!(lua_string(br#"{"a":"b\c"}"#), r#""{\"a\":\"b\\c\"}""#);
        assert_eq!(lua_string(b"x\ny\xc3"), r#""x\010y\195""#);
    }
}
