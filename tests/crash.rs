//! Crash suite: a node and its federated partner run as processes under
//! continuous posting; the node is killed with SIGKILL at varying points and
//! restarted, again and again. After every cycle, every post acknowledged
//! before the kill is on the node exactly once; at the end the partner holds
//! the identical history.
//!
//! `cargo test` runs 10 cycles; `SAMBAND_CRASH_CYCLES=100 cargo test --test
//! crash -- --nocapture` runs a longer soak.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{PATIENCE, ServeProcess, all_history, init_dir, node_dir};
use samband::proto;

#[tokio::test]
async fn repeated_sigkill_loses_nothing_acknowledged_here_or_at_the_partner() {
    let cycles: usize = std::env::var("SAMBAND_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (a_tmp, b_tmp) = (init_dir("police.example"), init_dir("rescue.example"));
    let (a_dir, b_dir) = (node_dir(&a_tmp), node_dir(&b_tmp));
    let b = ServeProcess::start(&b_dir).await;
    let mut a = ServeProcess::start(&a_dir).await;
    let a_addrs = [a.addr.to_string(), a.fed_addr.to_string()];
    // Mutual trust; A dials B, B dials A back.
    for (from, from_dir, to, to_dir) in [(&a, &a_dir, &b, &b_dir), (&b, &b_dir, &a, &a_dir)] {
        let bundle = to
            .admin(to_dir)
            .await
            .export_trust(proto::ExportTrustRequest {})
            .await
            .unwrap()
            .into_inner();
        let req = proto::AddPeerRequest {
            bundle: bundle.text,
            fingerprint: bundle.fingerprint,
            endpoint: to.fed_addr.to_string(),
            accept: 0,
        };
        from.admin(from_dir).await.add_peer(req).await.unwrap();
    }
    let mut op = a.operator(&a_dir).await;
    let ch = common::create_channel(&mut op, "crisis").await;
    let req = proto::ShareChannelRequest {
        channel: ch.clone(),
        orgs: vec!["rescue.example".into()],
        ..Default::default()
    };
    a.admin(&a_dir).await.share_channel(req).await.unwrap();

    let acked = common::Acked::default();
    for cycle in 0..cycles {
        let posters = common::spawn_posters(&op, &ch, 8, &format!("c{cycle}"), &acked);
        // Kill at a different point each cycle: after 20 to ~400 more acks.
        let target = acked.lock().unwrap().len() + 20 + (cycle * 97) % 380;
        while acked.lock().unwrap().len() < target {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        a.kill9().await;
        for p in posters {
            tokio::time::timeout(PATIENCE, p).await.unwrap().unwrap();
        }
        a = ServeProcess::start_with(
            &a_dir,
            &[
                "--client-listen",
                &a_addrs[0],
                "--federation-listen",
                &a_addrs[1],
            ],
        )
        .await;
        op = a.operator(&a_dir).await;
        let history = all_history(&mut op, &ch).await;
        let stored: BTreeMap<u64, String> = history
            .iter()
            .map(|m| (m.origin_seq, m.text.clone()))
            .collect();
        assert_eq!(
            stored.len(),
            history.len(),
            "cycle {cycle}: a message stored twice"
        );
        for (seq, text) in acked.lock().unwrap().iter() {
            assert_eq!(
                stored.get(seq),
                Some(text),
                "cycle {cycle}: acknowledged post #{seq} lost or changed"
            );
        }
    }
    // The partner converges on exactly the node's history.
    let a_history = all_history(&mut op, &ch).await;
    let mut b_op = b.operator(&b_dir).await;
    let b_history = common::wait_for_history(&mut b_op, &ch, a_history.len()).await;
    let ids = |h: &[proto::Message]| {
        h.iter()
            .map(|m| (m.origin.clone(), m.origin_seq, m.text.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&b_history),
        ids(&a_history),
        "the partner's history differs"
    );
    eprintln!(
        "crash suite: {cycles} cycles, {} acknowledged posts, all present on both nodes",
        acked.lock().unwrap().len()
    );
    a.kill9().await;
    b.kill9().await;
}

/// SIGKILL leaves the kernel's page cache intact, so the suite above cannot
/// see a write that never reached the disk. sled's own flush stops at
/// `sync_file_range`, which survives a process crash but not a power cut. So
/// every acknowledged post must also have been `fdatasync`ed: with posts made
/// one at a time, each is its own flush, and strace must see one `fdatasync`
/// of sled's log file per post.
#[tokio::test]
async fn every_acknowledged_post_was_fdatasynced() {
    const POSTS: usize = 20;
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let trace = tmp.path().join("fdatasync.trace");
    let node = ServeProcess::start_traced(&dir, &trace).await;
    let mut op = node.operator(&dir).await;
    let ch = common::create_channel(&mut op, "crisis").await;
    let before = synced_log_file(&trace, &dir);
    for i in 0..POSTS {
        op.post(common::post_request(&ch, format!("m{i}")))
            .await
            .unwrap();
    }
    node.signal_traced("TERM").await;
    let after = synced_log_file(&trace, &dir);
    assert!(
        after >= before + POSTS,
        "{POSTS} acknowledged posts, but sled's log file was fdatasynced only {} times \
         ({before} before the posts, {after} at the end); the trace:\n{}",
        after.saturating_sub(before),
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
}

/// A channel is created by the writer, like a post: each acknowledged
/// creation was `fdatasync`ed (one flush each, made one at a time).
#[tokio::test]
async fn every_acknowledged_channel_creation_was_fdatasynced() {
    const CHANNELS: usize = 10;
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let trace = tmp.path().join("fdatasync.trace");
    let node = ServeProcess::start_traced(&dir, &trace).await;
    let mut op = node.operator(&dir).await;
    let before = synced_log_file(&trace, &dir);
    for i in 0..CHANNELS {
        common::create_channel(&mut op, &format!("ops-{i}")).await;
    }
    node.signal_traced("TERM").await;
    let after = synced_log_file(&trace, &dir);
    assert!(
        after >= before + CHANNELS,
        "{CHANNELS} acknowledged channels, but sled's log file was fdatasynced only {} times",
        after.saturating_sub(before)
    );
}

/// sled writes a log item over 128 KiB (here: each of these messages) to a
/// file of its own under `data/blobs/`, with no sync at all. Each such file
/// must be `fdatasync`ed before the post that wrote it is acknowledged.
#[tokio::test]
async fn large_messages_sled_keeps_apart_are_fdatasynced_too() {
    const POSTS: usize = 3;
    let tmp = common::init_dir_with("police.example", |l| {
        l.member_posts_per_second = 0;
        l.max_body_bytes = 1 << 20;
    });
    let dir = node_dir(&tmp);
    let trace = tmp.path().join("fdatasync.trace");
    let node = ServeProcess::start_traced(&dir, &trace).await;
    let mut op = node.operator(&dir).await;
    let ch = common::create_channel(&mut op, "crisis").await;
    for i in 0..POSTS {
        let text = format!("{i}").repeat(300 * 1024);
        op.post(common::post_request(&ch, text)).await.unwrap();
    }
    // SIGKILL: no flush at shutdown, so what the trace shows was synced
    // before the posts were acknowledged.
    node.signal_traced("KILL").await;
    let data = dir.join("data");
    let blobs = data.join("blobs");
    let on_disk = std::fs::read_dir(&blobs).unwrap().count();
    let synced = synced_paths(&trace);
    let is_blob = |p: &String| p.starts_with(&format!("{}/", blobs.display()));
    let log_file = data.join("db").display().to_string();
    let blob_syncs = synced.iter().filter(|p| is_blob(p)).count();
    // Each flush syncs the blob files, then the blob directory, then sled's
    // log: a blob is on disk before the log entry that points to it.
    let last_blob = synced.iter().rposition(is_blob);
    let log_after_it = last_blob.is_some_and(|i| synced[i..].contains(&log_file));
    let dir_synced = synced.contains(&blobs.display().to_string());
    assert!(
        on_disk >= POSTS && blob_syncs >= POSTS && dir_synced && log_after_it,
        "{on_disk} blob files, {blob_syncs} fdatasyncs of blob files for {POSTS} posts, \
         blob dir synced: {dir_synced}, log synced after the last blob: {log_after_it}; \
         the syncs in order:\n{synced:#?}"
    );
}

/// An upload is acknowledged only after its bytes were `fdatasync`ed under
/// their partial name, renamed to their content address, the directory
/// synced, and then the upload record flushed with sled's log: so after a
/// power cut, an acknowledged upload (and a post that names it) finds its
/// bytes, and no name ever points at bytes that are not on disk.
#[tokio::test]
async fn an_acknowledged_upload_was_synced_before_its_name_and_record() {
    use common::files::{bytes, sha, upload};
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let trace = tmp.path().join("files.trace");
    let calls = "fdatasync,rename,renameat,renameat2";
    let node = ServeProcess::start_tracing(&dir, &trace, calls).await;
    let mut alice = node.member(&dir, "alice").await;
    let data = bytes(3 << 20, 9);
    upload(&mut alice, &data).await.unwrap();
    // SIGKILL: what the trace shows happened before the answer.
    node.signal_traced("KILL").await;
    let hash = sha(&data);
    let files = dir.join("data/files");
    let partial = files.join("partial").join(format!("u-alice-{hash}"));
    let object_dir = files.join("objects").join(&hash[..2]);
    let events = completed_calls(&trace);
    let at = |what: &str, path: &std::path::Path| {
        let path = path.display().to_string();
        events
            .iter()
            .position(|(call, p)| call.starts_with(what) && p.contains(&path))
    };
    let synced = at("fdatasync", &partial);
    let renamed = at("rename", &partial);
    let dir_synced = events
        .iter()
        .rposition(|(call, p)| call == "fdatasync" && *p == object_dir.display().to_string());
    let log = dir.join("data").join("db").display().to_string();
    let record_flushed = events
        .iter()
        .rposition(|(call, p)| call == "fdatasync" && *p == log);
    let ordered = matches!(
        (synced, renamed, dir_synced, record_flushed),
        (Some(s), Some(r), Some(d), Some(f)) if s < r && r < d && d < f
    );
    assert!(
        ordered,
        "bytes synced at {synced:?}, renamed at {renamed:?}, directory synced at          {dir_synced:?}, record flushed at {record_flushed:?}; the calls:\n{events:#?}"
    );
}

/// The completed `fdatasync` and `rename*` calls of an `strace -f -y`
/// trace in the order they completed, each with its first path argument.
fn completed_calls(trace: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(trace).expect("read the strace output");
    let mut unfinished = std::collections::HashMap::new();
    let mut out = Vec::new();
    let first_path = |args: &str| -> String {
        // `3</a/b>` for a descriptor, `"/a/b"` for a path.
        let (open, close) = match (args.find('<'), args.find('"')) {
            (Some(a), Some(q)) if q < a => ('"', '"'),
            (Some(_), _) => ('<', '>'),
            (None, Some(_)) => ('"', '"'),
            (None, None) => return String::new(),
        };
        let start = args.find(open).map_or(0, |i| i + 1);
        let end = args[start..].find(close).map_or(args.len(), |i| start + i);
        args[start..end].to_owned()
    };
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if let Some(rest) = call.strip_prefix("<... ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            if call.ends_with("= 0")
                && let Some((n, args)) = unfinished.remove(pid)
                && n == name
            {
                out.push((n, args));
            }
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        let path = first_path(args);
        if call.ends_with("<unfinished ...>") {
            unfinished.insert(pid.to_owned(), (name.to_owned(), path));
        } else if call.ends_with("= 0") {
            out.push((name.to_owned(), path));
        }
    }
    out
}

/// How many successful `fdatasync`s of the node's `data/db` the trace holds so far.
fn synced_log_file(trace: &std::path::Path, dir: &std::path::Path) -> usize {
    let log_file = dir.join("data").join("db").display().to_string();
    synced_paths(trace)
        .iter()
        .filter(|p| **p == log_file)
        .count()
}

/// The paths of the successful `fdatasync`s in an `strace -f -y` trace, in
/// the order they completed. A call another thread interrupted is written as
/// `PID fdatasync(FD</path> <unfinished ...>` and later
/// `PID <... fdatasync resumed>) = 0`.
fn synced_paths(trace: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).expect("read the strace output");
    let mut unfinished = std::collections::HashMap::new();
    let mut paths = Vec::new();
    for line in text.lines() {
        // strace pads the pid to a width: `123  fdatasync(...)`.
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let path_in = |call: &str| {
            let start = call.find('<')? + 1;
            let end = start + call[start..].find('>')?;
            Some(call[start..end].to_owned())
        };
        if let Some(call) = call.strip_prefix("fdatasync(") {
            let Some(path) = path_in(call) else { continue };
            if call.ends_with("<unfinished ...>") {
                unfinished.insert(pid.to_owned(), path);
            } else if call.ends_with("= 0") {
                paths.push(path);
            }
        } else if call.starts_with("<... fdatasync resumed>")
            && call.ends_with("= 0")
            && let Some(path) = unfinished.remove(pid)
        {
            paths.push(path);
        }
    }
    paths
}
