//! The real `samband` binary as a process: crash durability, signals, and
//! the refusals an operator sees on the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{
    PATIENCE, ServeProcess, all_history, arg, cli, cli_ok, create_channel, init_dir, node_dir,
    post, samband_bin,
};

/// Every post acknowledged before a SIGKILL is there after restart, exactly once.
#[tokio::test]
async fn sigkill_loses_no_acknowledged_post() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;

    // Posters run flat out; the kill lands while posts are in flight.
    let acked = common::Acked::default();
    let posters = common::spawn_posters(&op, &ch, 16, "", &acked);
    while acked.lock().unwrap().len() < 1500 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    node.kill9().await;
    for p in posters {
        tokio::time::timeout(PATIENCE, p)
            .await
            .expect("posters notice the kill")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    restart_with_every_acknowledged_post(&dir, &ch, &acked).await;
}

/// Restarts the node on `dir` and checks that `channel` holds every post in
/// `acked` (by seq), nothing twice and no gap, and that posting goes on.
async fn restart_with_every_acknowledged_post(
    dir: &std::path::Path,
    channel: &str,
    acked: &BTreeMap<u64, String>,
) {
    let node = ServeProcess::start(dir).await;
    let mut op = node.operator(dir).await;
    let history = all_history(&mut op, channel).await;
    let stored: BTreeMap<u64, String> = history
        .iter()
        .map(|m| (m.origin_seq, m.text.clone()))
        .collect();
    assert_eq!(stored.len(), history.len(), "no message stored twice");
    for (seq, text) in acked {
        assert_eq!(
            stored.get(seq),
            Some(text),
            "acknowledged post #{seq} lost or changed"
        );
    }
    let seqs: Vec<u64> = history.iter().map(|m| m.origin_seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free after the restart"
    );
    let next = common::post(&mut op, channel, "after the restart").await;
    assert_eq!(next.origin_seq, seqs.len() as u64 + 1);
    node.kill9().await;
}

/// A write the disk refuses (here the file-size limit, as a full disk
/// would) stops the node with an error exit, for its supervisor to restart
/// it: after a failed write or sync nothing says what reached the disk. The
/// restarted node has every acknowledged post, and posting goes on.
#[tokio::test]
async fn a_refused_write_stops_the_node_and_a_restart_keeps_every_acknowledged_post() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let mut node = ServeProcess::start_with_file_limit(&dir, 1024).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    let acked = common::Acked::default();
    let posters = common::spawn_posters(&op, &ch, 4, &"x".repeat(3000), &acked);
    for p in posters {
        tokio::time::timeout(PATIENCE, p)
            .await
            .expect("posters are answered when the write fails")
            .unwrap();
    }
    let status = tokio::time::timeout(PATIENCE, node.child.wait())
        .await
        .expect("the node stops by itself")
        .unwrap();
    assert!(!status.success(), "{status:?}");
    let log = std::fs::read_to_string(common::serve_log(&dir)).unwrap();
    assert!(log.contains("could not make a write durable"), "{log}");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "the limit was reached only after some posts"
    );
    restart_with_every_acknowledged_post(&dir, &ch, &acked).await;
}

#[tokio::test]
async fn sigterm_stops_gracefully_with_exit_zero() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let mut node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    common::post(&mut op, &ch, "hello").await;
    let pid = node.child.id().expect("pid").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(PATIENCE, node.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_is_refused() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let first = ServeProcess::start(&dir).await;
    let out = cli(&["serve", "--dir", arg(&dir)]);
    assert!(!out.success);
    assert!(
        out.stderr.contains("in use by another samband process"),
        "{}",
        out.stderr
    );
    first.kill9().await;
}

#[test]
fn serve_refuses_a_bad_config_naming_the_key() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let path = dir.join("config.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    for (from, to, key) in [
        (
            "max_body_bytes = 65536",
            "max_body_bytes = 0",
            "limits.max_body_bytes",
        ),
        ("[store]", "[store]\ncache_size = 5", "cache_size"),
        ("format = \"human\"", "format = \"loud\"", "format"),
    ] {
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let out = cli(&["serve", "--dir", arg(&dir)]);
        assert!(!out.success, "{to}");
        assert!(out.stderr.contains(key), "{to}: {}", out.stderr);
    }
}

/// The README's walk-through, as a user types it.
#[tokio::test]
async fn command_line_walkthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let run = |args: &[&str]| cli_ok(args).stdout;
    let d = dir.to_str().unwrap();
    run(&[
        "init",
        "--org",
        "police.example",
        "--dir",
        d,
        "--client-listen",
        "127.0.0.1:0",
    ]);
    let node = ServeProcess::start(&dir).await;
    let ep = node.addr.to_string();
    let alice = tmp.path().join("alice");
    let a = alice.to_str().unwrap();
    run(&["user", "add", "alice", "--dir", d, "--out", a]);
    assert!(
        run(&["channel", "create", "ops", "--dir", d, "--endpoint", &ep])
            .contains("police.example/ops")
    );
    let posted = run(&[
        "post",
        "ops",
        "Road 12 closed",
        "--identity",
        a,
        "--endpoint",
        &ep,
    ]);
    // The post says how to ask where it is; on an internal channel, nowhere else.
    let ask = posted
        .split("where it is: ")
        .nth(1)
        .expect("the receipts command")
        .trim()
        .to_owned();
    // It repeats the flags that reached the node: it runs as printed.
    let words: Vec<&str> = ask.split_whitespace().skip(1).collect();
    assert!(
        run(&words).contains("not shared with any other agency"),
        "{ask}"
    );
    // As JSON: one line per agency, each saying what the message asks.
    let mut json_words = words.clone();
    json_words.push("--json");
    let line: serde_json::Value = serde_json::from_str(run(&json_words).trim()).unwrap();
    assert_eq!(line["org"], "police.example");
    assert_eq!(line["ack_required"], false, "{line}");
    assert_eq!(line["ack_deadline_unix_ms"], 0, "{line}");
    run(&[
        "post",
        "ops",
        "Bridge open",
        "--priority",
        "urgent",
        "--identity",
        a,
        "--endpoint",
        &ep,
    ]);
    let lines = run(&[
        "history",
        "ops",
        "--json",
        "--identity",
        a,
        "--endpoint",
        &ep,
    ]);
    let msgs: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["text"], "Road 12 closed");
    assert_eq!(msgs[1]["priority"], "urgent");
    assert_eq!(msgs[1]["author"], "alice");
    let tail = run(&["tail", "ops", "-n", "1", "--identity", a, "--endpoint", &ep]);
    assert!(
        tail.contains("[URGENT] Bridge open") && !tail.contains("Road 12"),
        "{tail}"
    );
    let from = msgs[0]["cursor"].as_str().unwrap();
    let rest = run(&[
        "tail",
        "ops",
        "--from",
        from,
        "--identity",
        a,
        "--endpoint",
        &ep,
    ]);
    assert!(
        rest.contains("Bridge open") && !rest.contains("Road 12"),
        "{rest}"
    );
    // Nothing asked for, nothing shown; a page of 0 is refused with the range.
    let none = run(&["tail", "ops", "-n", "0", "--identity", a, "--endpoint", &ep]);
    assert!(none.is_empty(), "{none}");
    let zero = cli(&[
        "history",
        "ops",
        "--limit",
        "0",
        "--identity",
        a,
        "--endpoint",
        &ep,
    ]);
    assert!(
        !zero.success && zero.stderr.contains("1..=1000"),
        "{zero:?}"
    );
    let status = run(&["status", "--identity", a, "--endpoint", &ep]);
    assert!(status.contains("alice (member)"), "{status}");

    // A member may not create channels; the error says why and the exit code is non-zero.
    let out = cli(&["channel", "create", "x", "--identity", a, "--endpoint", &ep]);
    assert!(!out.success);
    assert!(out.stderr.contains("admin role"));
    // An explicit --dir wins over SAMBAND_IDENTITY: the operator acts as
    // the operator, even in a shell where a member's identity is set.
    let out = Command::new(samband_bin())
        .args([
            "channel",
            "create",
            "by-operator",
            "--dir",
            d,
            "--endpoint",
            &ep,
        ])
        .env("SAMBAND_IDENTITY", a)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a flag, the environment names the identity.
    let out = Command::new(samband_bin())
        .args(["status", "--endpoint", &ep])
        .env("SAMBAND_IDENTITY", a)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice (member)"));
    // init refuses to overwrite.
    let out = cli(&["init", "--org", "police.example", "--dir", d]);
    assert!(!out.success);
    assert!(out.stderr.contains("refusing to overwrite"));
    node.kill9().await;
}

/// A command whose output is cut short (`samband history … | head -1`)
/// stops quietly, like other Unix tools: no panic, no backtrace.
#[tokio::test]
async fn output_cut_short_stops_quietly() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    // More than a pipe holds, so that writing goes on after the reader left.
    for i in 0..400 {
        post(&mut op, &ch, &format!("{i:03} {}", "x".repeat(300))).await;
    }
    let ep = node.addr.to_string();
    let mut child = Command::new(samband_bin())
        .args(["history", &ch, "--limit", "400", "--dir"])
        .arg(&dir)
        .args(["--endpoint", &ep])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    // The reader is gone (dropped above), as `head -1` would be.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.contains("000"), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    node.kill9().await;
}

/// `samband demo` sets up three agencies, runs a flood incident (its
/// picture and a CAP warning converging on all three) and an exercise that
/// is closed everywhere, shows containment, keeps running until
/// interrupted, and cleans up after itself.
#[tokio::test]
async fn demo_converges_contains_and_cleans_up() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let mut child = tokio::process::Command::new(samband_bin())
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("Ctrl-C")) {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("demo output");
        seen.push(line);
    }
    let text = seen.join("\n");
    // The roster, 6 posts, the CAP warning's message, 3 entries and its area.
    assert!(
        text.contains("converged: police.example/flood shows the same 12 messages and the same picture (4 entries) on all three nodes"),
        "{text}"
    );
    assert!(
        text.contains("police.example/flood-drill was marked EXERCISE on every node, then closed and archived on all three"),
        "{text}"
    );
    assert!(
        text.contains("contained: police.example/internal-ops exists only on police.example"),
        "{text}"
    );
    let dir = text
        .split_whitespace()
        .find(|w| w.contains("samband-demo-"))
        .unwrap()
        .to_owned();
    assert!(std::path::Path::new(&dir).exists());
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "demo left {dir} behind"
    );
}

/// A damaged or emptied data dir stops `serve` with a clear message; it
/// never panics and never starts on a silently empty store.
#[tokio::test]
async fn a_damaged_store_is_refused_not_silently_replaced() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    common::post(&mut op, &ch, "must not vanish silently").await;
    node.kill9().await;
    let data = samband::layout::data_dir(&dir);
    let pristine = tmp.path().join("pristine");
    std::fs::create_dir(&pristine).unwrap();
    for f in ["db", "conf"] {
        std::fs::copy(data.join(f), pristine.join(f)).unwrap();
    }
    let garbage: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    type Damage<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let damages: [Damage<'_>; 3] = [
        (
            "garbage db",
            Box::new(|| std::fs::write(data.join("db"), &garbage).unwrap()),
        ),
        (
            "truncated db",
            Box::new(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(data.join("db"))
                    .unwrap()
                    .set_len(100)
                    .unwrap()
            }),
        ),
        (
            "emptied data dir",
            Box::new(|| {
                std::fs::remove_dir_all(&data).unwrap();
                std::fs::create_dir(&data).unwrap();
            }),
        ),
    ];
    for (what, damage) in damages {
        damage();
        let out = cli(&["serve", "--dir", arg(&dir)]);
        let stderr = &out.stderr;
        assert!(!out.success, "{what}: serve started on a damaged store");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stderr.contains("error:"), "{what}: {stderr}");
        // Restore for the next case.
        std::fs::create_dir_all(&data).unwrap();
        for f in ["db", "conf"] {
            std::fs::copy(pristine.join(f), data.join(f)).unwrap();
        }
    }
    // The undamaged store still has its message.
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    assert_eq!(
        all_history(&mut op, &ch).await[0].text,
        "must not vanish silently"
    );
    node.kill9().await;
}

/// A node directory is one organisation's: a `pki/` copied from another
/// org's node is refused by `serve` and by the commands that issue
/// certificates, naming the file and both orgs.
#[test]
fn a_node_directory_with_another_orgs_pki_is_refused() {
    let police = init_dir("police.example");
    let rescue = init_dir("rescue.example");
    let (dir, foreign) = (node_dir(&police), node_dir(&rescue));
    std::fs::remove_dir_all(dir.join("pki")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(foreign.join("pki"))
        .arg(dir.join("pki"))
        .status()
        .unwrap();
    assert!(copied.success());
    let out = police.path().join("alice");
    for args in [
        vec!["serve", "--dir", arg(&dir)],
        vec![
            "user",
            "add",
            "alice",
            "--dir",
            arg(&dir),
            "--out",
            arg(&out),
        ],
    ] {
        let refused = cli(&args);
        assert!(!refused.success, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains("names org rescue.example")
                && refused.stderr.contains("config.toml says police.example"),
            "{args:?}: {}",
            refused.stderr
        );
    }
    assert!(!out.exists(), "nothing issued under the foreign CA");
}

/// A data dir the node's user cannot read is reported as exactly that,
/// never as a missing or damaged store to restore from backup. (Run as
/// another user with setpriv: root reads everything.)
#[test]
fn an_unreadable_data_dir_is_reported_as_such() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    // Everything readable by the other user but the data dir itself.
    let opened = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(opened.success());
    std::fs::set_permissions(
        samband::layout::data_dir(&dir),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(samband_bin())
        .args(["serve", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot be read: permission denied") && !stderr.contains("backup"),
        "{stderr}"
    );
}

/// `tail --follow` outlives a restart of the node (on new ports, even):
/// it reconnects and goes on right after the last message it showed, like
/// `tail -F`, saying on stderr that it does; `--cursors` shows where to
/// resume by hand.
#[tokio::test]
async fn tail_follow_reconnects_after_the_node_restarts_and_goes_on_after_the_last_message() {
    use tokio::io::AsyncBufReadExt as _;
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    post(&mut op, &ch, "before the restart").await;
    let mut tail = tokio::process::Command::new(samband_bin())
        .args(["tail", &ch, "--follow", "--cursors", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    async fn next(
        lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) -> String {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("tail keeps running")
    }
    let first = next(&mut lines).await;
    assert!(
        first.contains("before the restart") && first.contains("[cursor "),
        "{first}"
    );

    node.kill9().await;
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    post(&mut op, &ch, "after the restart").await;
    let second = next(&mut lines).await;
    assert!(
        second.contains("after the restart"),
        "not shown again: {second}"
    );
    tail.start_kill().unwrap();
    let out = tail.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connection lost") && stderr.contains("reconnecting"),
        "{stderr}"
    );
    node.kill9().await;
}

/// Times are UTC unless `TZ` asks for local time, shown with its offset.
#[tokio::test]
async fn times_are_shown_in_local_time_when_tz_is_set() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let node = ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    post(&mut op, &ch, "hej").await;
    let history = |tz: Option<&str>| {
        let mut command = Command::new(samband_bin());
        command.args(["history", &ch, "--dir"]).arg(&dir);
        match tz {
            Some(tz) => command.env("TZ", tz),
            None => command.env_remove("TZ"),
        };
        String::from_utf8(command.output().unwrap().stdout).unwrap()
    };
    let utc = history(None);
    assert!(utc.contains("Z  operator@police.example#1  hej"), "{utc}");
    // A POSIX zone two hours east of UTC, which needs no tzdata.
    let local = history(Some("XYZ-2"));
    assert!(
        local.contains("+02:00  operator@police.example#1  hej"),
        "{local}"
    );
    // The certificates' ends in `status` too.
    let status = Command::new(samband_bin())
        .args(["status", "--dir"])
        .arg(&dir)
        .env("TZ", "XYZ-2")
        .output()
        .unwrap();
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(status.contains("cert      node: until 20"), "{status}");
    assert!(
        status
            .lines()
            .filter(|l| l.starts_with("cert"))
            .all(|l| l.contains("+02:00")),
        "{status}"
    );
    node.kill9().await;
}

/// Under systemd (`Type=notify`) the node says READY=1 once it listens,
/// and STOPPING=1 when told to stop: here with a real NOTIFY_SOCKET.
#[tokio::test]
async fn the_node_tells_the_service_manager_when_it_is_ready_and_stopping() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let socket_path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(samband_bin())
        .args(["serve", "--dir"])
        .arg(&dir)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// `deploy/samband.service` is a valid unit, and sandboxed: systemd's own
/// offline analysis rates its exposure at most 2.0 of 10 (20 on the scale
/// of `--threshold`).
#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/samband.service"
    ))
    .unwrap();
    // `verify` checks that ExecStart's program exists: the one just built.
    let unit = unit.replace("/usr/local/bin/samband", samband_bin());
    let path = tmp.path().join("samband.service");
    std::fs::write(&path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian: systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

/// A `--dir` that is not a node directory is named as such, with how to
/// make one, by every command that takes it (not "cannot read
/// DIR/operator/identity.toml").
#[test]
fn a_directory_that_is_not_a_node_directory_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    let out = tmp.path().join("x");
    for args in [
        vec!["serve", "--dir", arg(&dir)],
        vec!["status", "--dir", arg(&dir)],
        vec!["peer", "list", "--dir", arg(&dir)],
        vec!["audit", "export", "--dir", arg(&dir)],
        vec!["user", "add", "x", "--dir", arg(&dir), "--out", arg(&out)],
        vec!["trust", "export", "--dir", arg(&dir), "--out", arg(&out)],
    ] {
        let refused = cli(&args);
        assert!(!refused.success, "{args:?}");
        assert!(
            refused.stderr.contains("is not a samband node directory")
                && refused.stderr.contains("samband init --org ORG --dir"),
            "{args:?}: {}",
            refused.stderr
        );
    }
}
