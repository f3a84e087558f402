//! Federation between real `samband serve` processes, set up with the
//! operator commands as a person would type them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ServeProcess, all_history, cli_ok, create_channel, init_dir, node_dir, post};
use samband::proto;

fn fingerprint(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("fingerprint line")
        .to_owned()
}

/// SIGKILL a partner mid-stream: after restart it resumes from where it was,
/// and is sent only what it lacks.
#[tokio::test]
async fn a_killed_partner_resumes_without_everything_being_sent_again() {
    let (a_tmp, b_tmp) = (init_dir("police.example"), init_dir("rescue.example"));
    let (a_dir, b_dir) = (node_dir(&a_tmp), node_dir(&b_tmp));
    let (a, b) = (a_dir.to_str().unwrap(), b_dir.to_str().unwrap());
    let a_bundle = a_tmp.path().join("a.bundle");
    let b_bundle = b_tmp.path().join("b.bundle");
    let fp_a = fingerprint(
        &cli_ok(&[
            "trust",
            "export",
            "--dir",
            a,
            "--out",
            a_bundle.to_str().unwrap(),
        ])
        .stderr,
    );
    let fp_b = fingerprint(
        &cli_ok(&[
            "trust",
            "export",
            "--dir",
            b,
            "--out",
            b_bundle.to_str().unwrap(),
        ])
        .stderr,
    );

    let node_b = ServeProcess::start(&b_dir).await;
    // A fingerprint that differs in one group is refused, and neither the
    // refusal nor the bundle file shows the right one to copy.
    let mut wrong = fp_a.clone();
    let flipped = if wrong.starts_with('0') { "1" } else { "0" };
    wrong.replace_range(0..1, flipped);
    let refused = common::cli(&[
        "peer",
        "add",
        a_bundle.to_str().unwrap(),
        "--fingerprint",
        &wrong,
        "--dir",
        b,
    ]);
    assert!(!refused.success, "{refused:?}");
    assert!(refused.stderr.contains("group(s) 1 of 16"), "{refused:?}");
    let compact = |s: &str| s.replace(' ', "").to_lowercase();
    let file = std::fs::read_to_string(&a_bundle).unwrap();
    for text in [&refused.stderr, &refused.stdout, &file] {
        assert!(!compact(text).contains(&compact(&fp_a)), "{text}");
    }
    // B is running: the Admin API takes the peer. A is stopped: its data dir does.
    let out = cli_ok(&[
        "peer",
        "add",
        a_bundle.to_str().unwrap(),
        "--fingerprint",
        &fp_a,
        "--dir",
        b,
    ])
    .stdout;
    assert!(out.contains("node running"), "{out}");
    let b_fed = node_b.fed_addr.to_string();
    let out = cli_ok(&[
        "peer",
        "add",
        b_bundle.to_str().unwrap(),
        "--fingerprint",
        &fp_b,
        "--endpoint",
        &b_fed,
        "--dir",
        a,
    ])
    .stdout;
    assert!(out.contains("node stopped"), "{out}");
    let node_a = ServeProcess::start(&a_dir).await;

    let mut a_op = node_a.operator(&a_dir).await;
    let ch = create_channel(&mut a_op, "crisis").await;
    let endpoint = node_a.addr.to_string();
    cli_ok(&[
        "channel",
        "share",
        "crisis",
        "rescue.example",
        "--dir",
        a,
        "--endpoint",
        &endpoint,
    ]);
    for i in 0..300 {
        post(&mut a_op, &ch, &format!("first wave {i}")).await;
    }
    let mut b_op = node_b.operator(&b_dir).await;
    common::wait_for_history(&mut b_op, &ch, 301).await;

    let b_client = node_b.addr.to_string();
    node_b.kill9().await;
    for i in 0..100 {
        post(&mut a_op, &ch, &format!("while B is down {i}")).await;
    }
    let node_b = ServeProcess::start_with(
        &b_dir,
        &["--client-listen", &b_client, "--federation-listen", &b_fed],
    )
    .await;
    let mut b_op = node_b.operator(&b_dir).await;
    let history = common::wait_for_history(&mut b_op, &ch, 401).await;
    assert_eq!(history.len(), 401, "nothing twice");
    let a_history = all_history(&mut a_op, &ch).await;
    let ids = |h: &[proto::Message]| {
        h.iter()
            .map(|m| (m.origin.clone(), m.origin_seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&history), ids(&a_history), "identical histories");

    let peers = node_a
        .admin(&a_dir)
        .await
        .list_peers(proto::ListPeersRequest {})
        .await
        .unwrap();
    let link = peers.into_inner().peers[0].link.clone().unwrap();
    assert_eq!(link.state, "connected");
    assert!(
        link.envelopes_sent < 301,
        "the new link re-sent {} envelopes; B lacked only 100",
        link.envelopes_sent
    );
    let status = cli_ok(&["status", "--dir", a, "--endpoint", &endpoint]).stdout;
    assert!(
        status.contains("rescue.example") && status.contains("connected"),
        "{status}"
    );
    node_a.kill9().await;
    node_b.kill9().await;
}

/// Two running nodes that trust each other; `b` dials `a`.
async fn trust_each_other(
    a: &ServeProcess,
    a_dir: &std::path::Path,
    b: &ServeProcess,
    b_dir: &std::path::Path,
) {
    for (from, from_dir, to, to_dir, endpoint) in [
        (a, a_dir, b, b_dir, String::new()),
        (b, b_dir, a, a_dir, a.fed_addr.to_string()),
    ] {
        let bundle = to
            .admin(to_dir)
            .await
            .export_trust(proto::ExportTrustRequest {})
            .await
            .unwrap()
            .into_inner();
        from.admin(from_dir)
            .await
            .add_peer(proto::AddPeerRequest {
                bundle: bundle.text,
                fingerprint: bundle.fingerprint,
                endpoint,
                accept: proto::AcceptPolicy::Auto as i32,
            })
            .await
            .unwrap();
    }
}

/// Rescue's clock runs 5 min 20 s ahead: the home refuses its post as from
/// the future. Rescue's member sees the message marked as refused by the
/// home, its operator sees why the home is behind, and once rescue's clock
/// is right again the message goes through on its own, without a new post
/// or a relink, and the mark goes.
#[tokio::test]
async fn a_post_refused_for_a_clock_ahead_is_marked_then_sent_again_on_its_own() {
    let (a_tmp, b_tmp) = (init_dir("police.example"), init_dir("rescue.example"));
    let (a_dir, b_dir) = (node_dir(&a_tmp), node_dir(&b_tmp));
    let police = ServeProcess::start(&a_dir).await;
    let rescue = ServeProcess::start_with_clock(&b_dir, "+320s").await;
    trust_each_other(&police, &a_dir, &rescue, &b_dir).await;
    let mut a_op = police.operator(&a_dir).await;
    let ops = create_channel(&mut a_op, "ops").await;
    police
        .admin(&a_dir)
        .await
        .share_channel(proto::ShareChannelRequest {
            channel: ops.clone(),
            orgs: vec!["rescue.example".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut b_op = rescue.operator(&b_dir).await;
    common::eventually("rescue to join", || async {
        common::channel_state(&b_op, &ops).await.map(drop)
    })
    .await;
    let posted = post(&mut b_op, &ops, "from five minutes ahead").await;

    // Rescue says, on the message and on the partner, that the home refused it.
    let history = common::eventually("the refusal to reach rescue", || {
        let (b_dir, ops) = (b_dir.clone(), ops.clone());
        async move {
            let out = common::cli(&["history", &ops, "--dir", common::arg(&b_dir)]);
            out.stdout
                .contains("[REFUSED by police.example")
                .then_some(out.stdout)
        }
    })
    .await;
    assert!(
        history.contains("timestamp lies too far in the future; sent again later]"),
        "{history}"
    );
    let peers = cli_ok(&["peer", "list", "--dir", common::arg(&b_dir)]).stdout;
    assert!(
        peers.contains("refused 1 of this node's messages: timestamp lies too far in the future"),
        "{peers}"
    );
    assert!(
        std::fs::read_to_string(common::serve_log(&b_dir))
            .unwrap()
            .contains("is this node's clock ahead?"),
        "rescue's log says its clock may be ahead"
    );

    // The clock is put right: the message arrives with no new post.
    rescue.kill9().await;
    let rescue = ServeProcess::start(&b_dir).await;
    common::eventually("the refused post to arrive at the home", || {
        let mut a_op = a_op.clone();
        let ops = ops.clone();
        async move {
            all_history(&mut a_op, &ops)
                .await
                .iter()
                .any(|m| m.origin == "rescue.example" && m.origin_seq == posted.origin_seq)
                .then_some(())
        }
    })
    .await;
    let b_op = rescue.operator(&b_dir).await;
    common::eventually("the mark to go", || {
        let mut b_op = b_op.clone();
        let ops = ops.clone();
        async move {
            let marked = all_history(&mut b_op, &ops)
                .await
                .iter()
                .any(|m| !m.refused_by.is_empty());
            (!marked).then_some(())
        }
    })
    .await;
    // The home's operator sees the partner and every shared channel's lag
    // in `status --json`, zero included.
    let status: serde_json::Value =
        serde_json::from_str(&cli_ok(&["status", "--json", "--dir", common::arg(&a_dir)]).stdout)
            .unwrap();
    let partner = &status["partners"][0];
    assert_eq!(partner["org"], "rescue.example", "{status}");
    let lag = partner["lag"]
        .as_array()
        .expect("lag of each shared channel");
    assert!(
        lag.iter()
            .any(|l| l["channel"] == ops.as_str() && l["messages"].is_u64()),
        "{status}"
    );
    police.kill9().await;
    rescue.kill9().await;
}

/// "Delivered" comes from the partner's durable progress, never from "we
/// sent it": while rescue's disk syncs are stalled (strace delays every
/// `fdatasync`), the message it received is not durable there, and police
/// says waiting; rescue is SIGKILLed and police still does not say
/// delivered; once rescue is back and holds it, police does.
#[tokio::test]
async fn delivered_is_not_shown_for_a_partner_killed_before_it_flushed() {
    let (a_tmp, b_tmp) = (init_dir("police.example"), init_dir("rescue.example"));
    let (a_dir, b_dir) = (node_dir(&a_tmp), node_dir(&b_tmp));
    let police = ServeProcess::start(&a_dir).await;
    let rescue = ServeProcess::start(&b_dir).await;
    trust_each_other(&police, &a_dir, &rescue, &b_dir).await;
    let mut a_op = police.operator(&a_dir).await;
    let ops = create_channel(&mut a_op, "ops").await;
    police
        .admin(&a_dir)
        .await
        .share_channel(proto::ShareChannelRequest {
            channel: ops.clone(),
            orgs: vec!["rescue.example".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let b_op = rescue.operator(&b_dir).await;
    common::eventually("rescue to join", || async {
        common::channel_state(&b_op, &ops).await.map(drop)
    })
    .await;
    let reader = a_op.clone();
    let state = |cursor: String| {
        let (mut a_op, ops) = (reader.clone(), ops.clone());
        async move {
            let r = a_op
                .receipts(proto::ReceiptsRequest {
                    channel: ops,
                    cursor,
                })
                .await
                .unwrap()
                .into_inner();
            let row = r.agencies.into_iter().find(|a| a.org == "rescue.example");
            row.unwrap().state
        }
    };
    let first = post(&mut a_op, &ops, "first").await;
    common::eventually("the first message delivered", || async {
        (state(first.cursor.clone()).await == "delivered").then_some(())
    })
    .await;

    // From now on every sync of rescue's waits a minute.
    let pid = rescue.child.id().expect("rescue runs").to_string();
    let mut stall = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-p", &pid])
        .args(["-e", "trace=fdatasync,fsync"])
        .args(["-e", "inject=fdatasync,fsync:delay_enter=60000000"])
        .spawn()
        .expect("strace");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let second = post(&mut a_op, &ops, "second").await;
    // Sent (rescue's link reads it and its writer waits on the disk).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(state(second.cursor.clone()).await, "waiting");
    // SIGKILL, then strace away: the node dies without a word more.
    let mut rescue = rescue;
    rescue.child.start_kill().expect("SIGKILL");
    let _ = stall.kill();
    let _ = stall.wait();
    rescue.child.wait().await.expect("reaped");
    assert_ne!(state(second.cursor.clone()).await, "delivered");

    let rescue = ServeProcess::start(&b_dir).await;
    common::eventually("the second message delivered after the restart", || async {
        (state(second.cursor.clone()).await == "delivered").then_some(())
    })
    .await;
    police.kill9().await;
    rescue.kill9().await;
}
