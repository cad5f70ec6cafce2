//! JobExecutor against real child processes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hodei_agent::executor::{
    ExecutionOutcome, ExecutionRequest, ExecutionResult, ExecutorConfig, JobExecutor, LogLine,
};
use hodei_core::{CommandType, JobId, LogStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn work_root() -> PathBuf {
    std::env::temp_dir().join(format!("hodei-exec-test-{}", uuid::Uuid::new_v4().simple()))
}

fn executor() -> JobExecutor {
    JobExecutor::new(
        ExecutorConfig::default()
            .with_work_root(work_root())
            .with_kill_grace(Duration::from_millis(500)),
    )
}

fn bash(script: &str) -> ExecutionRequest {
    ExecutionRequest::new(JobId::new(), 1, CommandType::script("bash", script))
        .with_timeout(Duration::from_secs(60))
}

async fn run_with(
    exec: &JobExecutor,
    req: ExecutionRequest,
    cancel: CancellationToken,
) -> (ExecutionResult, Vec<LogLine>) {
    let (tx, mut rx) = mpsc::channel(16);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        lines
    });
    let res = exec.execute(req, tx, cancel).await;
    (res, split_groups(collector.await.unwrap()))
}

/// The executor sends groups of lines (`group_lines`, the default): the tests
/// look at single lines.
fn split_groups(entries: Vec<LogLine>) -> Vec<LogLine> {
    entries
        .into_iter()
        .flat_map(|e| {
            let stream = e.stream;
            e.data
                .split(|b| *b == b'\n')
                .map(|l| LogLine::new(stream, l.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn run(exec: &JobExecutor, req: ExecutionRequest) -> (ExecutionResult, Vec<LogLine>) {
    run_with(exec, req, CancellationToken::new()).await
}

fn text(lines: &[LogLine], stream: LogStream) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.trim().chars().next());
            state != Some('Z')
        }
    }
}

async fn gone(pid: i32) -> bool {
    for _ in 0..50 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn dir_gone(dir: &Path) -> bool {
    for _ in 0..50 {
        if !dir.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn pids(lines: &[String], prefix: &str) -> Vec<i32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|p| p.trim().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn exit_codes_and_shell_without_shell() {
    let exec = executor();
    let (res, _) = run(
        &exec,
        ExecutionRequest::new(JobId::new(), 1, CommandType::shell("sh", ["-c", "exit 3"])),
    )
    .await;
    assert_eq!(res.outcome, ExecutionOutcome::Exited);
    assert_eq!(res.exit_code, Some(3));
    assert!(!res.success());

    let (res, lines) = run(
        &exec,
        ExecutionRequest::new(
            JobId::new(),
            1,
            CommandType::shell("echo", ["$HOME;", "`id`", "*"]),
        ),
    )
    .await;
    assert!(res.success(), "{res:?}");
    assert_eq!(text(&lines, LogStream::Stdout), vec!["$HOME; `id` *"]);

    let (res, _) = run(&exec, bash("kill -9 $$")).await;
    assert_eq!(res.outcome, ExecutionOutcome::Signaled);
    assert_eq!(res.signal, Some(9));
    assert_eq!(res.exit_code, None);
}

/// The agent finds a bare program on the job's PATH itself (so it can spawn
/// without copying its own memory), and the program still sees the name it
/// was given as its `argv[0]`; the job's own PATH decides where it is found.
#[tokio::test]
async fn a_bare_program_is_found_on_the_jobs_path_and_keeps_its_name() {
    let exec = executor();
    let (res, lines) = run(
        &exec,
        ExecutionRequest::new(JobId::new(), 1, CommandType::shell("sh", ["-c", "echo $0"])),
    )
    .await;
    assert!(res.success(), "{res:?}");
    assert_eq!(text(&lines, LogStream::Stdout), vec!["sh"]);

    // A PATH of the job's own that lacks the program: not found, as execvp would say.
    let (res, _) = run(
        &exec,
        ExecutionRequest::new(JobId::new(), 1, CommandType::shell("sh", ["-c", "true"]))
            .with_env("PATH", "/nonexistent-hodei-dir"),
    )
    .await;
    assert_eq!(res.outcome, ExecutionOutcome::StartFailed, "{res:?}");
}

#[tokio::test]
async fn start_failure_is_reported() {
    let exec = executor();
    let (res, lines) = run(
        &exec,
        ExecutionRequest::new(
            JobId::new(),
            1,
            CommandType::shell("/no/such/program-xyz", Vec::<String>::new()),
        ),
    )
    .await;
    assert_eq!(res.outcome, ExecutionOutcome::StartFailed);
    assert!(res.error.unwrap().contains("/no/such/program-xyz"));
    assert!(lines.is_empty());
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart_in_order() {
    let exec = executor();
    let (res, lines) = run(
        &exec,
        bash("for i in 1 2 3; do echo out$i; echo err$i >&2; done\nprintf 'last-without-newline'"),
    )
    .await;
    assert!(res.success(), "{res:?}");
    assert_eq!(
        text(&lines, LogStream::Stdout),
        vec!["out1", "out2", "out3", "last-without-newline"]
    );
    assert_eq!(
        text(&lines, LogStream::Stderr),
        vec!["err1", "err2", "err3"]
    );
}

#[tokio::test]
async fn strict_mode_fails_scripts() {
    let exec = executor();
    for (name, script) in [
        ("set -e", "false\necho after"),
        ("set -u", "echo \"$HODEI_SURELY_UNDEFINED_VAR\"\necho after"),
        ("pipefail", "false | true\necho after"),
    ] {
        let (res, lines) = run(&exec, bash(script)).await;
        assert_eq!(res.outcome, ExecutionOutcome::Exited, "{name}");
        assert_ne!(res.exit_code, Some(0), "{name}: {res:?}");
        assert!(
            !text(&lines, LogStream::Stdout).contains(&"after".to_owned()),
            "{name} did not stop the script"
        );
    }
    // Plain sh gets `set -eu` (and pipefail when the shell has it).
    let req = ExecutionRequest::new(
        JobId::new(),
        1,
        CommandType::script("sh", "false\necho after"),
    );
    let (res, lines) = run(&exec, req).await;
    assert_eq!(res.exit_code, Some(1));
    assert!(text(&lines, LogStream::Stdout).is_empty());
    // A non-shell interpreter gets no header.
    let req = ExecutionRequest::new(JobId::new(), 1, CommandType::script("cat", "plain text"));
    let (res, lines) = run(&exec, req).await;
    assert!(res.success());
    assert_eq!(text(&lines, LogStream::Stdout), vec!["plain text"]);
}

#[tokio::test]
async fn env_working_dir_and_private_files() {
    let exec = executor();
    let job = JobId::new();
    let req = ExecutionRequest::new(
        job,
        3,
        CommandType::script(
            "bash",
            "echo \"id=$HODEI_JOB_ID attempt=$HODEI_ATTEMPT greet=$GREETING\"\n\
             echo \"manifest=${CARGO_MANIFEST_DIR:-unset}\"\n\
             echo \"pwd=$PWD\"\n\
             echo \"modes=$(stat -c %a \"$PWD\" \"$0\" | tr '\\n' ' ')\"\n\
             echo \"script=$0\"",
        ),
    )
    .with_env("GREETING", "hello world");
    let (res, lines) = run(&exec, req).await;
    assert!(res.success(), "{res:?}");
    let out = text(&lines, LogStream::Stdout);
    assert_eq!(out[0], format!("id={job} attempt=3 greet=hello world"));
    // The agent's own environment is not inherited.
    assert_eq!(out[1], "manifest=unset");
    let pwd = PathBuf::from(out[2].strip_prefix("pwd=").unwrap());
    assert!(pwd.starts_with(&exec.config().work_root), "{pwd:?}");
    assert_eq!(out[3], "modes=700 700 ");
    let script = PathBuf::from(out[4].strip_prefix("script=").unwrap());
    assert!(script.starts_with(&pwd));
    assert!(
        dir_gone(&pwd).await,
        "job directory {pwd:?} was not removed"
    );

    // An explicit working directory is used as is, and the private dir is still removed.
    let elsewhere = std::env::temp_dir();
    let req = bash("pwd").with_working_dir(&elsewhere);
    let (res, lines) = run(&exec, req).await;
    assert!(res.success());
    assert_eq!(
        PathBuf::from(&text(&lines, LogStream::Stdout)[0])
            .canonicalize()
            .unwrap(),
        elsewhere.canonicalize().unwrap()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No attempt's directory is left; an emptied one may be kept, empty, for
    // the next attempt (renamed to `.spare-…`).
    let leftover: Vec<_> = std::fs::read_dir(&exec.config().work_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let spare = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".spare-");
            !spare || std::fs::read_dir(p).unwrap().next().is_some()
        })
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}

#[tokio::test]
async fn job_dir_removed_after_failure_and_cancel() {
    let exec = executor();
    let (res, lines) = run(&exec, bash("pwd\nexit 4")).await;
    assert_eq!(res.exit_code, Some(4));
    let dir = PathBuf::from(&text(&lines, LogStream::Stdout)[0]);
    assert!(dir_gone(&dir).await);

    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let (res, lines) = run_with(&exec, bash("pwd\nsleep 100"), cancel).await;
    assert_eq!(res.outcome, ExecutionOutcome::Cancelled);
    let dir = PathBuf::from(&text(&lines, LogStream::Stdout)[0]);
    assert!(dir_gone(&dir).await);
}

const TOKEN: &str = "sup3r-s3cret-V4lue_x";
const QUOTED: &str = "q\"uote\\back/slash";
const SPACED: &str = "with space&more=1";

fn secret_script() -> &'static str {
    r#"payload=$(cat)
TOKEN=$(printf '%s' "$payload" | sed -e 's/.*"API_TOKEN":"\([^"]*\)".*/\1/')
echo "sha=$(printf '%s' "$TOKEN" | sha256sum | cut -c1-16)"
echo "token is $TOKEN and again $TOKEN$TOKEN"
echo "payload=$payload"
for p in '' 'a' 'ab'; do
  echo "b64std=$(printf '%s%s.' "$p" "$TOKEN" | base64 -w0)"
  echo "b64url=$(printf '%s%s..' "$p" "$TOKEN" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
done
echo "url=with%20space%26more%3D1 form=with+space%26more%3D1"
printf 'split start %s' "${TOKEN:0:7}"
sleep 0.3
printf '%s end\n' "${TOKEN:7}"
printf 'stderr %s\n' "$TOKEN" >&2
echo "$TOKEN" | grep -q x && echo "error mentions $TOKEN" >&2
exit 0
"#
}

fn assert_clean(all: &[u8]) {
    let hay = String::from_utf8_lossy(all);
    for s in [TOKEN, QUOTED, SPACED, "q\\\"uote\\\\back/slash"] {
        assert!(!hay.contains(s), "secret {s:?} leaked in:\n{hay}");
    }
    // No long run of the token's base64 survives at any alignment.
    for p in ["", "a", "ab"] {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{p}{TOKEN}."));
        let middle = &enc[4..enc.len() - 4];
        assert!(!hay.contains(middle), "base64 {middle} leaked:\n{hay}");
    }
}

#[tokio::test]
async fn secrets_reach_stdin_and_never_the_logs() {
    let exec = executor();
    let req = bash(secret_script())
        .with_secret("API_TOKEN", TOKEN)
        .with_secret("QUOTED", QUOTED)
        .with_secret("SPACED", SPACED);
    let (res, lines) = run(&exec, req).await;
    assert!(res.success(), "{res:?}");
    assert_eq!(res.secrets_injected, vec!["API_TOKEN", "QUOTED", "SPACED"]);
    let out = text(&lines, LogStream::Stdout);
    // The script really read the secret from stdin.
    let expected = {
        use sha2_like::hex_sha256_prefix;
        hex_sha256_prefix(TOKEN)
    };
    assert_eq!(out[0], format!("sha={expected}"));
    assert_eq!(out[1], "token is *** and again ******");
    assert_eq!(
        out[2],
        "payload={\"API_TOKEN\":\"***\",\"QUOTED\":\"***\",\"SPACED\":\"***\"}"
    );
    for l in &out[3..9] {
        assert!(l.contains("***"), "{l}");
    }
    assert_eq!(out[9], "url=*** form=***");
    assert_eq!(out[10], "split start *** end");
    let err = text(&lines, LogStream::Stderr);
    assert_eq!(err, vec!["stderr ***", "error mentions ***"]);
    let all: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.data.iter().copied().chain([b'\n']))
        .collect();
    assert_clean(&all);
}

/// sha256 via the system tool, so the test needs no extra crate.
mod sha2_like {
    pub(crate) fn hex_sha256_prefix(s: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..16].to_owned()
    }
}

#[tokio::test]
async fn secret_across_an_over_long_line_split_is_redacted() {
    let exec = JobExecutor::new(
        ExecutorConfig::default()
            .with_work_root(work_root())
            .with_max_line_bytes(32),
    );
    // The token straddles every 32-byte cut position in turn.
    let mut script =
        String::from("TOKEN=$(cat | sed -e 's/.*\"API_TOKEN\":\"\\([^\"]*\\)\".*/\\1/')\n");
    for pad in 20..40 {
        script.push_str(&format!(
            "printf '%s%s%s\\n' '{}' \"$TOKEN\" '{}'\n",
            "x".repeat(pad),
            "y".repeat(50)
        ));
    }
    let req = bash(&script).with_secret("API_TOKEN", TOKEN);
    let (res, lines) = run(&exec, req).await;
    assert!(res.success(), "{res:?}");
    assert!(lines.len() > 40);
    let all: Vec<u8> = lines.iter().flat_map(|l| l.data.iter().copied()).collect();
    assert_clean(&all);
    let hay = String::from_utf8_lossy(&all);
    assert_eq!(hay.matches("***").count(), 20, "{hay}");
    for l in &lines {
        assert!(l.data.len() <= 32 + TOKEN.len() * 2, "{}", l.data.len());
    }
}

#[tokio::test]
async fn short_secrets_are_refused_without_showing_the_value() {
    let exec = executor();
    let req = bash("echo hi")
        .with_secret("PIN", "12345")
        .with_secret("OK_ONE", "long-enough");
    let (res, lines) = run(&exec, req).await;
    assert_eq!(res.outcome, ExecutionOutcome::StartFailed);
    let err = res.error.unwrap();
    assert!(err.contains("PIN"), "{err}");
    assert!(!err.contains("12345"), "{err}");
    assert!(lines.is_empty());
}

#[tokio::test]
async fn without_secrets_stdin_is_closed() {
    let exec = executor();
    let (res, lines) = run(&exec, bash("cat\necho done")).await;
    assert!(res.success());
    assert_eq!(text(&lines, LogStream::Stdout), vec!["done"]);
    assert!(res.secrets_injected.is_empty());
}

#[tokio::test]
async fn timeout_kills_the_group_including_term_ignoring_grandchildren() {
    let exec = executor();
    let req = bash(
        "sleep 1000 &\necho \"pid $!\"\n\
         bash -c 'trap \"\" TERM; while true; do sleep 0.1; done' &\necho \"pid $!\"\n\
         sleep 1000",
    )
    .with_timeout(Duration::from_secs(1));
    let t = Instant::now();
    let (res, lines) = run(&exec, req).await;
    assert_eq!(res.outcome, ExecutionOutcome::TimedOut, "{res:?}");
    assert!(res.error.unwrap().contains("timed out"));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let pids = pids(&text(&lines, LogStream::Stdout), "pid ");
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(gone(pid).await, "grandchild {pid} survived the timeout");
    }
}

#[tokio::test]
async fn cancel_kills_the_group() {
    let exec = executor();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.cancel();
    });
    let (res, lines) = run_with(
        &exec,
        bash("sleep 1000 &\necho \"pid $!\"\nsleep 1000"),
        cancel,
    )
    .await;
    assert_eq!(res.outcome, ExecutionOutcome::Cancelled, "{res:?}");
    assert_eq!(res.signal, Some(15));
    for pid in pids(&text(&lines, LogStream::Stdout), "pid ") {
        assert!(gone(pid).await, "grandchild {pid} survived the cancel");
    }
}

#[tokio::test]
async fn background_grandchild_does_not_outlive_a_successful_job() {
    let exec = executor();
    let t = Instant::now();
    // The grandchild keeps stdout open: the executor must not wait for EOF.
    let (res, lines) = run(&exec, bash("sleep 1000 &\necho \"pid $!\"\nexit 0")).await;
    assert!(res.success(), "{res:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    for pid in pids(&text(&lines, LogStream::Stdout), "pid ") {
        assert!(gone(pid).await, "grandchild {pid} survived");
    }
}

#[tokio::test]
async fn processes_escaping_the_group_are_killed_by_marker() {
    let exec = executor();
    let t = Instant::now();
    let (res, lines) = run(
        &exec,
        bash(
            "setsid sleep 1000 &\necho \"pid $!\"\n\
             setsid bash -c 'sleep 1000 & echo \"pid $!\"; sleep 1000' &\n\
             ( setsid sleep 1001 > /dev/null 2>&1 & echo \"pid $!\" )\n\
             sleep 0.5\nexit 0",
        ),
    )
    .await;
    assert!(res.success(), "{res:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let pids = pids(&text(&lines, LogStream::Stdout), "pid ");
    assert_eq!(pids.len(), 3, "{lines:?}");
    for pid in pids {
        assert!(gone(pid).await, "escaped process {pid} survived");
    }
}

#[tokio::test]
async fn non_utf8_and_long_lines_pass_through() {
    let exec = JobExecutor::new(
        ExecutorConfig::default()
            .with_work_root(work_root())
            .with_max_line_bytes(10),
    );
    let (res, lines) = run(
        &exec,
        bash("printf '\\xff\\xfe\\x00ok\\n'\nprintf 'abcdefghijklmnopqrstuvwxyz\\n'"),
    )
    .await;
    assert!(res.success());
    let data: Vec<&[u8]> = lines.iter().map(|l| l.data.as_ref()).collect();
    assert_eq!(
        data,
        vec![
            &b"\xff\xfe\x00ok"[..],
            b"abcdefghij",
            b"klmnopqrst",
            b"uvwxyz"
        ]
    );
}

#[tokio::test]
async fn log_cap_discards_with_one_marker_and_keeps_running() {
    let exec = JobExecutor::new(
        ExecutorConfig::default()
            .with_work_root(work_root())
            .with_log_cap_bytes(Some(1000)),
    );
    // 200 lines of 49 bytes (+ newline) = 9800 bytes of line data.
    let (res, lines) = run(
        &exec,
        bash("for i in $(seq 1 200); do printf '%049d\\n' $i; done\nsleep 0.3\nfor i in 1 2 3; do echo e$i >&2; done"),
    )
    .await;
    assert!(res.success(), "{res:?}");
    let kept: usize = lines
        .iter()
        .filter(|l| l.stream != LogStream::System)
        .map(|l| l.data.len())
        .sum();
    assert!(kept <= 1000);
    assert_eq!(kept, 20 * 49);
    let system = text(&lines, LogStream::System);
    assert_eq!(system.len(), 1, "{system:?}");
    assert!(system[0].contains("exceeded 1000 bytes"));
    assert_eq!(res.log_bytes_dropped, 200 * 49 + 3 * 2 - kept as u64);
}

#[tokio::test]
async fn term_ignoring_job_is_killed_after_the_grace() {
    let exec = executor();
    let t = Instant::now();
    let req = bash("trap '' TERM\necho started\nwhile true; do sleep 0.1; done")
        .with_timeout(Duration::from_millis(500));
    let (res, lines) = run(&exec, req).await;
    assert_eq!(res.outcome, ExecutionOutcome::TimedOut, "{res:?}");
    assert_eq!(res.signal, Some(9));
    // timeout + grace, not much more.
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(text(&lines, LogStream::Stdout), vec!["started"]);
}

#[tokio::test]
async fn lines_read_together_travel_as_one_entry_and_give_back_the_same_text() {
    let script = "for i in $(seq 1 2000); do echo \"line $i\"; done\necho err >&2\n";
    let expected: String = (1..=2000).map(|i| format!("line {i}\n")).collect();
    for group in [true, false] {
        let exec = JobExecutor::new(
            ExecutorConfig::default()
                .with_work_root(std::env::temp_dir().join("hodei-group-test"))
                .with_group_lines(group),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let collector = tokio::spawn(async move {
            let mut entries = Vec::new();
            while let Some(l) = rx.recv().await {
                entries.push(l);
            }
            entries
        });
        let req = ExecutionRequest::new(JobId::new(), 1, CommandType::script("bash", script));
        let res = exec.execute(req, tx, CancellationToken::new()).await;
        assert!(res.success(), "{res:?}");
        let entries = collector.await.unwrap();
        let stdout: Vec<&LogLine> = entries
            .iter()
            .filter(|e| e.stream == LogStream::Stdout)
            .collect();
        // Printing every entry followed by a newline gives the job's output exactly.
        let text: String = stdout
            .iter()
            .map(|e| format!("{}\n", String::from_utf8_lossy(&e.data)))
            .collect();
        assert_eq!(text, expected, "group_lines={group}");
        if group {
            assert!(
                stdout.len() < 2000,
                "{} entries for 2000 lines: nothing was grouped",
                stdout.len()
            );
        } else {
            assert_eq!(stdout.len(), 2000);
        }
        assert!(
            stdout.iter().all(|e| e.data.len() <= 64 * 1024),
            "a group exceeds max_line_bytes"
        );
        assert_eq!(text_of(&entries, LogStream::Stderr), vec!["err".to_owned()]);
    }
}

fn text_of(entries: &[LogLine], stream: LogStream) -> Vec<String> {
    text(&split_groups(entries.to_vec()), stream)
}
