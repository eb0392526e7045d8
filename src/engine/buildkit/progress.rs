//! BuildKit's status stream (vertexes, statuses, logs) as the lines of
//! `docker build --progress=plain`: `#5 [2/3] RUN make`, then the step's own
//! output as it is printed, then `#5 DONE 1.2s`, `#5 CACHED` or `#5 ERROR: …`.

use std::collections::{HashMap, HashSet};

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::{StatusResponse, Vertex, VertexLog};

#[derive(Default)]
struct Step {
    number: u32,
    name: String,
    announced: bool,
    ended: bool,
    started: Option<f64>,
    /// Output after its last newline, printed once the line is complete.
    partial: String,
}

#[derive(Default)]
pub(super) struct Progress {
    steps: HashMap<String, Step>,
    numbered: u32,
    transfers_done: HashSet<(String, String)>,
    /// A step printed the kernel's "exec format error": a program of a
    /// platform the machine has no emulator for.
    pub(super) saw_exec_format: bool,
    /// Why importing `cachefrom` failed, when it did: BuildKit then builds
    /// without it, and says so only in that step's error.
    cache_import_error: Option<String>,
}

/// The name BuildKit gives the step importing a `cachefrom` reference.
const CACHE_IMPORT_STEP: &str = "importing cache manifest from ";

fn seconds(at: &Option<Timestamp>) -> Option<f64> {
    at.as_ref()
        .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

impl Progress {
    /// The error of the `cachefrom` import, if it failed.
    pub fn cache_import_error(&self) -> Option<&str> {
        self.cache_import_error.as_deref()
    }

    /// The lines this status update adds, in order.
    pub fn lines(&mut self, status: StatusResponse) -> Vec<String> {
        let mut out = Vec::new();
        // Names first and endings last, so a step's transfers and output
        // sent in the same update print between the two, as docker prints them.
        let vertexes: Vec<Vertex> = status
            .vertexes
            .into_iter()
            .filter(|vertex| self.vertex_seen(vertex, &mut out))
            .collect();
        for transfer in status.statuses {
            if transfer.completed.is_none()
                || !self
                    .transfers_done
                    .insert((transfer.vertex.clone(), transfer.id.clone()))
            {
                continue;
            }
            let amount = match transfer.total {
                0 if transfer.current == 0 => String::new(),
                0 => format!(" {}", human_bytes(transfer.current)),
                total => format!(
                    " {} / {}",
                    human_bytes(transfer.current),
                    human_bytes(total)
                ),
            };
            let prefix = self.announce(&transfer.vertex, &mut out);
            out.push(format!("{prefix} {}{amount} done", transfer.id));
        }
        for log in status.logs {
            self.output(log, &mut out);
        }
        for warning in status.warnings {
            let prefix = self.announce(&warning.vertex, &mut out);
            out.push(format!(
                "{prefix} WARN: {}",
                String::from_utf8_lossy(&warning.short)
            ));
        }
        for vertex in vertexes {
            self.vertex_end(vertex, &mut out);
        }
        out
    }

    /// Notes the step and prints its name once it runs; false while it only waits.
    fn vertex_seen(&mut self, vertex: &Vertex, out: &mut Vec<String>) -> bool {
        let step = self.steps.entry(vertex.digest.clone()).or_default();
        if step.name.is_empty() {
            step.name = vertex.name.clone();
        }
        if step.started.is_none() {
            step.started = seconds(&vertex.started);
        }
        let visible = vertex.started.is_some()
            || vertex.cached
            || vertex.completed.is_some()
            || !vertex.error.is_empty();
        if visible {
            self.announce(&vertex.digest, out);
        }
        visible
    }

    fn vertex_end(&mut self, vertex: Vertex, out: &mut Vec<String>) {
        let prefix = self.announce(&vertex.digest, out);
        let Some(step) = self.steps.get_mut(&vertex.digest) else {
            return;
        };
        if step.ended {
            return;
        }
        let ending = if vertex.cached {
            Some("CACHED".to_string())
        } else if !vertex.error.is_empty() {
            if step.name.starts_with(CACHE_IMPORT_STEP) {
                self.cache_import_error = Some(vertex.error.clone());
            }
            Some(format!("ERROR: {}", vertex.error))
        } else {
            seconds(&vertex.completed).map(|end| {
                let took = step.started.map(|start| end - start).unwrap_or(0.0);
                format!("DONE {:.1}s", took.max(0.0))
            })
        };
        if let Some(ending) = ending {
            let rest = std::mem::take(&mut step.partial);
            if !rest.is_empty() {
                out.push(format!("{prefix} {rest}"));
            }
            step.ended = true;
            out.push(format!("{prefix} {ending}"));
        }
    }

    fn output(&mut self, log: VertexLog, out: &mut Vec<String>) {
        let prefix = self.announce(&log.vertex, out);
        let Some(step) = self.steps.get_mut(&log.vertex) else {
            return;
        };
        let elapsed = match (seconds(&log.timestamp), step.started) {
            (Some(at), Some(start)) => format!(" {:.3}", (at - start).max(0.0)),
            _ => String::new(),
        };
        step.partial.push_str(&String::from_utf8_lossy(&log.msg));
        while let Some(newline) = step.partial.find('\n') {
            let line: String = step.partial.drain(..=newline).collect();
            let line = line.trim_end();
            if !line.is_empty() {
                out.push(format!("{prefix}{elapsed} {line}"));
            }
        }
    }

    /// The step's `#N`, printing its name line the first time it shows.
    fn announce(&mut self, digest: &str, out: &mut Vec<String>) -> String {
        let step = self.steps.entry(digest.to_string()).or_default();
        if !step.announced {
            self.numbered += 1;
            step.number = self.numbered;
            step.announced = true;
            out.push(
                format!("#{} {}", step.number, step.name)
                    .trim_end()
                    .to_string(),
            );
        }
        format!("#{}", step.number)
    }
}

fn human_bytes(bytes: i64) -> String {
    let bytes = bytes.max(0) as f64;
    match bytes {
        b if b >= 1e9 => format!("{:.2}GB", b / 1e9),
        b if b >= 1e6 => format!("{:.2}MB", b / 1e6),
        b if b >= 1e3 => format!("{:.2}kB", b / 1e3),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::moby::buildkit::v1::VertexStatus;

    fn at(seconds: i64, millis: i32) -> Option<Timestamp> {
        Some(Timestamp {
            seconds,
            nanos: millis * 1_000_000,
        })
    }

    fn vertex(digest: &str, name: &str) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_step_reads_as_plain_progress() {
        let mut progress = Progress::default();
        let queued = vertex("sha256:a", "[app 2/3] RUN make");
        assert!(progress
            .lines(StatusResponse {
                vertexes: vec![queued.clone()],
                ..Default::default()
            })
            .is_empty());
        let started = Vertex {
            started: at(100, 0),
            ..queued.clone()
        };
        let lines = progress.lines(StatusResponse {
            vertexes: vec![started.clone()],
            logs: vec![VertexLog {
                vertex: "sha256:a".into(),
                timestamp: at(100, 250),
                stream: 1,
                msg: b"compiling\npart".to_vec(),
            }],
            ..Default::default()
        });
        assert_eq!(lines, vec!["#1 [app 2/3] RUN make", "#1 0.250 compiling"]);
        let done = Vertex {
            completed: at(101, 500),
            ..started
        };
        let lines = progress.lines(StatusResponse {
            vertexes: vec![done.clone(), done],
            ..Default::default()
        });
        assert_eq!(lines, vec!["#1 part", "#1 DONE 1.5s"]);
    }

    #[test]
    fn cached_failed_and_transfers() {
        let mut progress = Progress::default();
        let cached = Vertex {
            cached: true,
            started: at(1, 0),
            ..vertex("sha256:c", "[1/2] FROM base")
        };
        let failed = Vertex {
            started: at(1, 0),
            error: "exit code: 1".into(),
            ..vertex("sha256:f", "[2/2] RUN false")
        };
        let transfer = VertexStatus {
            id: "transferring context:".into(),
            vertex: "sha256:c".into(),
            current: 2048,
            completed: at(1, 1),
            ..Default::default()
        };
        let lines = progress.lines(StatusResponse {
            vertexes: vec![cached, failed],
            statuses: vec![transfer.clone(), transfer],
            ..Default::default()
        });
        assert_eq!(
            lines,
            vec![
                "#1 [1/2] FROM base",
                "#2 [2/2] RUN false",
                "#1 transferring context: 2.05kB done",
                "#1 CACHED",
                "#2 ERROR: exit code: 1",
            ]
        );
    }
}
