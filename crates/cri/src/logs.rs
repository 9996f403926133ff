//! Container logs in the CRI format the kubelet reads: one line per
//! record, `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`; `P` marks a
//! partial line (longer than `max_container_log_line_size`, continued in
//! the next record), `F` the end of one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A container's log file, shared by its stdout and stderr copiers; it
/// also hands what they copy to attached clients ([`LogFile::subscribe`]).
#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
    tee: Arc<Mutex<Tee>>,
}

/// What an attached client receives of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes the container wrote to `stream` (`stdout` or `stderr`).
    Data(&'static str, Vec<u8>),
    /// `stream` reached its end (the container closed it, i.e. exited).
    End(&'static str),
}

#[derive(Debug, Default)]
struct Tee {
    subscribers: Vec<tokio::sync::mpsc::Sender<Output>>,
    ended: Vec<&'static str>,
}

/// How many chunks of output an attached client may lag behind before the
/// container's output copier waits for it (as containerd's attach writers
/// hold up the container's output).
const TEE_BACKLOG: usize = 64;

impl LogFile {
    /// Opens (appends to) `path`, creating its directory.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = open_append(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(Some(file))),
            tee: Arc::default(),
        })
    }

    /// Receives everything the copiers copy from now on, then an
    /// [`Output::End`] per stream (at once for streams already ended).
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<Output> {
        let (tx, rx) = tokio::sync::mpsc::channel(TEE_BACKLOG);
        if let Ok(mut tee) = self.tee.lock() {
            for stream in &tee.ended {
                let _ = tx.try_send(Output::End(stream));
            }
            tee.subscribers.push(tx);
        }
        rx
    }

    /// Hands `data` of `stream` (or its end, `None`) to every subscriber,
    /// waiting while one lags behind, forgetting those gone. Called on the
    /// copier threads only.
    fn tee(&self, stream: &'static str, data: Option<&[u8]>) {
        let subscribers = match self.tee.lock() {
            Ok(mut tee) => {
                if data.is_none() {
                    tee.ended.push(stream);
                }
                tee.subscribers.retain(|s| !s.is_closed());
                if tee.subscribers.is_empty() {
                    return;
                }
                tee.subscribers.clone()
            }
            Err(_) => return,
        };
        let out = match data {
            Some(d) => Output::Data(stream, d.to_vec()),
            None => Output::End(stream),
        };
        for s in subscribers {
            let _ = s.blocking_send(out.clone());
        }
    }

    /// Reopens the file at its path (after the kubelet rotated it).
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = open_append(&self.path)?;
        if let Ok(mut f) = self.file.lock() {
            *f = Some(file);
        }
        Ok(())
    }

    fn write_record(&self, stream: &str, tag: char, text: &[u8]) {
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(format!("{} {stream} {tag} ", timestamp()).as_bytes());
        line.extend_from_slice(text);
        line.push(b'\n');
        if let Ok(mut f) = self.file.lock()
            && let Some(f) = f.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "writing a container log");
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Go's `time.RFC3339Nano` of now in UTC (trailing zeros of the fraction
/// dropped, as Go writes it).
pub fn timestamp() -> String {
    let s = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    match s.strip_suffix('Z').and_then(|s| s.split_once('.')) {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{frac}Z")
            }
        }
        None => s,
    }
}

/// Copies the FIFO `fifo` (the container's `stream`) into `log` on a
/// thread until every writer closed it. `max_line` < 0: no limit. The
/// handle ends when everything the container wrote is in the log.
pub fn copy(
    fifo: PathBuf,
    stream: &'static str,
    log: LogFile,
    max_line: i64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Blocks until the shim holds the write side; EOF once it closed it.
        let mut f = match File::open(&fifo) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(fifo = %fifo.display(), error = %e, "opening a container's output");
                return;
            }
        };
        let max = usize::try_from(max_line).ok().filter(|m| *m > 0);
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0_u8; 32 << 10];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            log.tee(stream, Some(&buf[..n]));
            pending.extend_from_slice(&buf[..n]);
            emit_lines(&mut pending, stream, &log, max);
        }
        if !pending.is_empty() {
            log.write_record(stream, 'F', &pending);
        }
        log.tee(stream, None);
    })
}

/// Writes every whole line of `pending` (and `P` records for overlong
/// ones), keeping the unfinished rest.
fn emit_lines(pending: &mut Vec<u8>, stream: &str, log: &LogFile, max: Option<usize>) {
    loop {
        if let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = pending.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let mut rest = line.as_slice();
            while let Some(m) = max.filter(|m| rest.len() > *m) {
                log.write_record(stream, 'P', &rest[..m]);
                rest = &rest[m..];
            }
            log.write_record(stream, 'F', rest);
            continue;
        }
        match max {
            Some(m) if pending.len() > m => {
                let part: Vec<u8> = pending.drain(..m).collect();
                log.write_record(stream, 'P', &part);
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tagged_full_or_partial() {
        let path = std::env::temp_dir().join(format!("berth-cri-log-{}", std::process::id()));
        let log = LogFile::open(&path).expect("open");
        let mut pending = b"hello\nabcdefgh\nrest".to_vec();
        emit_lines(&mut pending, "stdout", &log, Some(4));
        assert_eq!(pending, b"rest");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::remove_file(&path).expect("rm");
        let records: Vec<&str> = text
            .lines()
            .map(|l| l.split_once(' ').map_or("", |x| x.1))
            .collect();
        assert_eq!(
            records,
            vec![
                "stdout P hell",
                "stdout F o",
                "stdout P abcd",
                "stdout F efgh"
            ]
        );
        assert!(timestamp().ends_with('Z'));
    }
}
