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
