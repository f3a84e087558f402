//! Trust over time: revocation, certificate expiry, renewal and reload
//! without a restart, and the hash-chained audit log with its CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{
    PATIENCE, ServeProcess, TestNode, arg, audit_log, cli, cli_ok, create_channel, eventually,
    init_dir, node_dir, post, post_request, serve_log, subscribe_live,
};
use samband::client;
use samband::model::{MemberName, OrgId, Role};
use samband::pki::{OrgPki, Validity, cert_info};
use samband::proto;
use time::{Duration, OffsetDateTime};
use tonic::Code;

#[tokio::test]
async fn a_revoked_member_is_refused_at_once_even_on_open_streams_and_after_restart() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut alice = node.client("alice", Role::Member).await;
    let mut bob = node.client("bob", Role::Member).await;
    post(&mut alice, &ch, "before").await;
    let mut live = subscribe_live(&mut alice, &ch).await;

    // A Publish stream, open before the revocation.
    let (publish_tx, publish_rx) = tokio::sync::mpsc::channel(4);
    let mut acks = alice
        .publish(tokio_stream::wrappers::ReceiverStream::new(publish_rx))
        .await
        .unwrap()
        .into_inner();
    publish_tx
        .send(post_request(&ch, "streamed before"))
        .await
        .unwrap();
    assert!(acks.message().await.unwrap().is_some());

    let revoked = node
        .admin()
        .await
        .revoke_member(proto::RevokeMemberRequest {
            member: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.certificates.len(), 1, "{revoked:?}");

    // Her open subscription ends, and her next call on the same connection is refused.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match live.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended.map(|s| s.code()), Some(Code::Unauthenticated));
    // The Publish stream ends with the reason, though she sent nothing more.
    let ended = tokio::time::timeout(PATIENCE, acks.message())
        .await
        .expect("the publish stream ends");
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    drop(publish_tx);
    let refused = alice.post(post_request(&ch, "after")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    // Nobody else is affected.
    post(&mut bob, &ch, "bob carries on").await;
    // The operator identity cannot be revoked by accident.
    let operator = node
        .admin()
        .await
        .revoke_member(proto::RevokeMemberRequest {
            member: "operator".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(operator.code(), Code::FailedPrecondition);

    let node = node.restart().await;
    let mut alice = node.client("alice", Role::Member).await;
    let refused = alice.post(post_request(&ch, "after restart")).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let log = audit_log(&mut node.admin().await).await;
    let revocations: Vec<_> = log.iter().filter(|e| e.event == "member.revoked").collect();
    assert_eq!(revocations.len(), 1, "{log:#?}");
    assert_eq!(revocations[0].details["member"], "alice");
    node.stop().await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_member_certificates_are_refused_and_the_log_says_why() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let serve = ServeProcess::start(&dir).await;
    let org = OrgId::parse("police.example").unwrap();
    let now = OffsetDateTime::now_utc();
    let cases = [
        (
            "expired",
            now - Duration::days(10),
            now - Duration::days(1),
            "expired",
        ),
        (
            "early",
            now + Duration::days(1),
            now + Duration::days(10),
            "not valid yet",
        ),
    ];
    for (name, not_before, not_after, why) in cases {
        let bundle = OrgPki::at(&dir)
            .issue_member(
                &org,
                &MemberName::parse(name).unwrap(),
                Role::Member,
                &serve.addr.to_string(),
                &tmp.path().join(name),
                Validity {
                    not_before,
                    not_after,
                },
            )
            .unwrap();
        // TLS 1.3: the refusal shows on the first call, not on connect.
        if let Ok(mut c) = client::connect(&bundle, None).await {
            let refused = c.status(proto::StatusRequest {}).await;
            assert!(refused.is_err(), "{name}: {refused:?}");
        }
        eventually(&format!("the log line for {name}"), || async {
            let log = std::fs::read_to_string(serve_log(&dir)).unwrap_or_default();
            log.lines()
                .any(|l| l.contains("TLS handshake refused") && l.contains(why))
                .then_some(())
        })
        .await;
    }
    // The command line says what is wrong and what to do, before dialing.
    let expired = cli(&["status", "--identity", arg(&tmp.path().join("expired"))]);
    assert!(!expired.success);
    assert!(
        expired.stderr.contains("expired on") && expired.stderr.contains("ask your operator"),
        "{expired:?}"
    );
    // A certificate not valid yet is refused before dialing, saying when.
    let early = cli(&[
        "status",
        "--identity",
        arg(&tmp.path().join("early")),
        "--endpoint",
        &serve.addr.to_string(),
    ]);
    assert!(
        !early.success && early.stderr.contains("is not valid until"),
        "{early:?}"
    );
    // Nothing listening: it asks whether the node runs.
    let member = samband::layout::operator_dir(&dir);
    let nobody = cli(&[
        "status",
        "--identity",
        arg(&member),
        "--endpoint",
        "127.0.0.1:1",
    ]);
    assert!(nobody.stderr.contains("is the node running"), "{nobody:?}");
    // A valid member still gets in.
    let mut op = serve.operator(&dir).await;
    op.status(proto::StatusRequest {}).await.unwrap();
    serve.kill9().await;
}

#[tokio::test]
async fn a_connection_that_outlives_its_certificate_is_refused_from_then_on() {
    let node = TestNode::start("police.example").await;
    let org = OrgId::parse("police.example").unwrap();
    let now = OffsetDateTime::now_utc();
    let bundle = OrgPki::at(&node.dir())
        .issue_member(
            &org,
            &MemberName::parse("volunteer").unwrap(),
            Role::Member,
            &node.addr.to_string(),
            &node.dir().join("volunteer"),
            Validity {
                not_before: now - Duration::hours(1),
                not_after: now + Duration::seconds(2),
            },
        )
        .unwrap();
    let mut c = client::connect(&bundle, None).await.unwrap();
    c.status(proto::StatusRequest {}).await.unwrap();
    // The same connection, after the certificate's end (whole seconds in X.509).
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let refused = c.status(proto::StatusRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("expired"), "{refused:?}");
    node.stop().await;
}

/// The serial of the certificate the node at `addr` presents to a new connection.
async fn served_serial(dir: &Path, addr: std::net::SocketAddr) -> String {
    let bundle = samband::pki::IdentityBundle::load(&samband::layout::operator_dir(dir)).unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(bundle.client_tls().unwrap()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::from(addr.ip());
    let tls = connector.connect(name, tcp).await.unwrap();
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    cert_info(&certs[0]).unwrap().serial
}

#[tokio::test]
async fn a_renewed_node_certificate_is_served_without_a_restart() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let serve = ServeProcess::start(&dir).await;
    let pki = OrgPki::at(&dir);
    let first = served_serial(&dir, serve.addr).await;
    assert_eq!(first, pki.node_certificate().unwrap().serial);

    // `pki renew` on a running node: renewed on disk and reloaded at once.
    let out = cli(&["pki", "renew", "--days", "30", "--dir", arg(&dir)]);
    assert!(out.success, "{}", out.stderr);
    let second = pki.node_certificate().unwrap().serial;
    assert_ne!(second, first);
    assert!(
        out.stdout
            .contains(&format!("running node now uses serial {second}"))
    );
    assert_eq!(served_serial(&dir, serve.addr).await, second);

    // Renewed behind the node's back: served only after SIGHUP.
    let org = OrgId::parse("police.example").unwrap();
    let third = pki.renew_node(&org, Validity::days(60)).unwrap().serial;
    assert_eq!(served_serial(&dir, serve.addr).await, second);
    let pid = serve.child.id().unwrap().to_string();
    // The shell's own `kill`: no procps needed.
    let hup = std::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {pid}")])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("the SIGHUP reload", || async {
        (served_serial(&dir, serve.addr).await == third).then_some(())
    })
    .await;
    // Members connect as before; the operator sees the reloader's last run
    // (a member does not), and both reloads are audited.
    let mut op = serve.operator(&dir).await;
    let status = op
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let reloader = status.workers.iter().find(|w| w.name == "reloader");
    let reloader = reloader.expect("the reloader is a worker");
    assert_eq!(reloader.state, "idle");
    assert!(
        reloader.status.starts_with("reloaded at ") && reloader.status.contains(&third),
        "{reloader:?}"
    );
    let out = cli(&["status", "--dir", arg(&dir)]);
    assert!(
        out.stdout.contains("worker    reloader: idle"),
        "{}",
        out.stdout
    );
    let mut member = serve.member(&dir, "alice").await;
    let seen = member.status(proto::StatusRequest {}).await.unwrap();
    assert!(
        seen.into_inner().workers.is_empty(),
        "members see no workers"
    );
    let log = audit_log(&mut serve.admin(&dir).await).await;
    let reloads: Vec<_> = log
        .iter()
        .filter(|e| e.event == "node.reloaded")
        .map(|e| e.details["node_cert_serial"].clone())
        .collect();
    assert_eq!(reloads, [second, third]);
    serve.kill9().await;
}

/// Gives `node` a new node certificate valid for `validity`, and has it
/// use it for new handshakes.
async fn renew_node_certificate(node: &TestNode, validity: Validity) {
    OrgPki::at(&node.dir())
        .renew_node(&node.org, validity)
        .unwrap();
    node.admin()
        .await
        .reload(proto::ReloadRequest {})
        .await
        .unwrap();
}

/// A link does not outlive the partner's node certificate: rustls checks
/// it only at the handshake, so the node ends an open link when it expires,
/// on the side that dialed (the server's certificate) and on the side that
/// accepted (the client's), and says why.
#[tokio::test]
async fn an_open_link_ends_when_the_partners_certificate_expires() {
    for a_dials in [true, false] {
        let a = TestNode::start("police.example").await;
        let b = TestNode::start("rescue.example").await;
        let now = OffsetDateTime::now_utc();
        let short = Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::seconds(4),
        };
        renew_node_certificate(&b, short).await;
        if a_dials {
            a.dials(&b, b.fed_addr).await;
        } else {
            b.dials(&a, a.fed_addr).await;
        }
        eventually("the link", || async {
            let peers = a.peers().await;
            (peers[0].link.as_ref().unwrap().state == "connected").then_some(())
        })
        .await;
        let ended = eventually("A to end the link at B's expiry", || async {
            let link = a.peers().await[0].link.clone().unwrap();
            (link.state != "connected" && link.last_error.contains("expired")).then_some(link)
        })
        .await;
        assert!(ended.last_error.contains("expired"), "{ended:?}");
        a.stop().await;
        b.stop().await;
    }
}

/// A node whose own certificate expired refuses to start, saying how to
/// renew it; once renewed, it starts.
#[tokio::test]
async fn a_node_whose_certificate_expired_refuses_to_start_until_renewed() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let now = OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - Duration::days(10),
        not_after: now - Duration::days(1),
    };
    OrgPki::at(&dir)
        .renew_node(&OrgId::parse("police.example").unwrap(), expired)
        .unwrap();
    let refused = cli(&["serve", "--dir", arg(&dir)]);
    assert!(!refused.success, "{refused:?}");
    assert!(
        refused.stderr.contains("expired on") && refused.stderr.contains("samband pki renew"),
        "{refused:?}"
    );
    cli_ok(&["pki", "renew", "--dir", arg(&dir)]);
    let serve = ServeProcess::start(&dir).await;
    serve.kill9().await;
}

#[tokio::test]
async fn a_partner_whose_node_certificate_expired_is_refused() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    eventually("the link", || async {
        let peers = a.peers().await;
        (peers[0].link.as_ref().unwrap().state == "connected").then_some(())
    })
    .await;
    let now = OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - Duration::days(10),
        not_after: now - Duration::days(1),
    };
    renew_node_certificate(&b, expired).await;
    // A new handshake is needed: restart A, whose dialer then meets B's expired certificate.
    let a = a.restart().await;
    let error = eventually("A refuses B's expired certificate", || async {
        let peers = a.peers().await;
        let link = peers[0].link.clone().unwrap();
        (link.state != "connected" && link.last_error.contains("expired")).then_some(link)
    })
    .await;
    assert!(error.last_error.contains("expired"), "{error:?}");
    // A certificate refusal is told apart from a partner that is down.
    assert_eq!(error.state, "refused", "{error:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_audit_log_is_exported_and_verify_finds_a_changed_or_removed_entry() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    let mut op = a.operator().await;
    create_channel(&mut op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    // The partner records what was done to it: joining, and roster changes.
    let b_has = |event: &'static str| {
        let b = &b;
        async move {
            audit_log(&mut b.admin().await)
                .await
                .iter()
                .any(|e| e.event == event && e.details["channel"] == "police.example/crisis")
                .then_some(())
        }
    };
    eventually("B audits joining", || b_has("channel.joined")).await;
    a.admin()
        .await
        .unshare_channel(proto::UnshareChannelRequest {
            channel: "crisis".into(),
            org: "rescue.example".into(),
        })
        .await
        .unwrap();
    eventually("B audits the roster change", || {
        b_has("channel.roster_changed")
    })
    .await;
    a.admin()
        .await
        .remove_peer(proto::RemovePeerRequest {
            org: "rescue.example".into(),
            unshare: false,
        })
        .await
        .unwrap();
    b.stop().await;
    let tmp = a.stop().await;
    let dir = node_dir(&tmp);

    // Export from the stopped node: the changes, in order.
    let out = cli(&["audit", "export", "--dir", arg(&dir)]);
    assert!(out.success, "{}", out.stderr);
    let export = out.stdout;
    let events: Vec<String> = samband::audit::parse_lines(&export)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            "member.issued",
            "peer.added",
            "channel.created",
            "channel.shared",
            "channel.unshared",
            "peer.removed"
        ]
    );
    let since = cli(&["audit", "export", "--since", "3", "--dir", arg(&dir)]);
    assert_eq!(since.stdout.lines().count(), 4);
    let ok = cli(&["audit", "verify", "--dir", arg(&dir)]);
    assert!(ok.success, "{}", ok.stderr);
    assert!(ok.stdout.contains("audit log intact: 6 entries"));

    let head = ok
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(head.starts_with("6:"), "{head}");

    // An export without its first entries is refused unless --partial says so.
    let lines: Vec<&str> = export.lines().collect();
    let file = tmp.path().join("tail.jsonl");
    std::fs::write(&file, lines[1..].join("\n")).unwrap();
    let cut = cli(&["audit", "verify", "--file", arg(&file)]);
    assert!(!cut.success);
    assert!(cut.stderr.contains("removed"), "{}", cut.stderr);
    assert!(cut.stderr.contains("with --partial"), "{}", cut.stderr);
    let partial = cli(&["audit", "verify", "--partial", "--file", arg(&file)]);
    assert!(partial.success, "{}", partial.stderr);
    // An export cut at the end passes alone, but not against the recorded head.
    std::fs::write(&file, lines[..3].join("\n")).unwrap();
    let alone = cli(&["audit", "verify", "--file", arg(&file)]);
    assert!(alone.success, "{}", alone.stderr);
    let against = cli(&["audit", "verify", "--head", &head, "--file", arg(&file)]);
    assert!(!against.success);
    assert!(
        against.stderr.contains("removed from the end"),
        "{}",
        against.stderr
    );

    // A changed export line is found.
    let file = tmp.path().join("audit.jsonl");
    std::fs::write(&file, export.replace("rescue.example", "other.example")).unwrap();
    let bad = cli(&["audit", "verify", "--file", arg(&file)]);
    assert!(!bad.success);
    assert!(
        bad.stderr.contains("does not match its hash"),
        "{}",
        bad.stderr
    );

    // A changed entry in the store, and then a removed one, are found.
    let audit = |f: &dyn Fn(&sled::Tree)| {
        // No background flusher: it would hold the lock past the drop.
        let db = sled::Config::new()
            .path(samband::layout::data_dir(&dir))
            .flush_every_ms(None)
            .open()
            .unwrap();
        f(&db.open_tree("audit").unwrap());
        db.flush().unwrap();
    };
    let key = 2u64.to_be_bytes();
    audit(&|t| {
        let v = t.get(key).unwrap().unwrap();
        let changed = String::from_utf8_lossy(&v).replace("rescue.example", "other.example");
        t.insert(key, changed.as_bytes()).unwrap();
    });
    let changed = cli(&["audit", "verify", "--dir", arg(&dir)]);
    assert!(!changed.success);
    assert!(
        changed.stderr.contains("entry 2 does not match its hash"),
        "{}",
        changed.stderr
    );
    audit(&|t| {
        t.remove(key).unwrap();
    });
    let removed = cli(&["audit", "verify", "--dir", arg(&dir)]);
    assert!(!removed.success);
    assert!(
        removed.stderr.contains("entry 2 is missing"),
        "{}",
        removed.stderr
    );
    // A renewal while the node is stopped is recorded too.
    let renew = cli(&["pki", "renew", "--dir", arg(&dir)]);
    assert!(renew.success, "{}", renew.stderr);
    let export = cli_ok(&["audit", "export", "--since", "5", "--dir", arg(&dir)]).stdout;
    let last = samband::audit::parse_lines(&export).unwrap().pop().unwrap();
    assert_eq!(last.event, "node.renewed");
    assert_eq!(
        last.details["node_cert_serial"],
        OrgPki::at(&dir).node_certificate().unwrap().serial
    );
}

#[tokio::test]
async fn the_admin_export_streams_a_long_log_whole_and_in_order() {
    let node = TestNode::start("police.example").await;
    let tmp = node.stop().await;
    {
        let config = samband::config::Config::load(&node_dir(&tmp)).unwrap();
        let store = samband::store::Store::open(
            &samband::layout::data_dir(&node_dir(&tmp)),
            &config.org,
            1 << 20,
        )
        .unwrap();
        for i in 0..700 {
            store
                .audit(samband::audit::Event::new("test.entry").with("i", i))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let node = TestNode::start_in(tmp).await;
    // More than two of the export's chunks.
    let log = audit_log(&mut node.admin().await).await;
    // The 700, after the operator's issue that `init` records.
    assert_eq!(log.len(), 701);
    assert_eq!(log.iter().filter(|e| e.event == "test.entry").count(), 700);
    samband::audit::verify(&log, Some(samband::audit::Head::default())).unwrap();
    node.stop().await;
}

/// Every identity the node issues can be renewed before it expires, and an
/// expired operator identity does not lock the operator out: admin
/// commands say how to renew it, take another admin's `--identity`
/// meanwhile, and work again once it is renewed.
#[tokio::test]
async fn every_identity_can_be_renewed_and_an_expired_operator_is_told_how() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let serve = ServeProcess::start(&dir).await;
    let org = OrgId::parse("police.example").unwrap();

    // The operator sees every certificate's end, with dates; a member whose
    // certificate ends within 30 days is flagged.
    let alice = tmp.path().join("alice");
    cli_ok(&[
        "user",
        "add",
        "alice",
        "--days",
        "10",
        "--dir",
        arg(&dir),
        "--out",
        arg(&alice),
    ]);
    let status = cli_ok(&["status", "--dir", arg(&dir)]).stdout;
    for line in [
        "cert      ca: until 20",
        "cert      node: until 20",
        "cert      operator: until 20",
    ] {
        assert!(status.contains(line), "{line:?} in {status}");
    }
    assert!(
        status.contains("cert      member alice: until 20"),
        "{status}"
    );
    assert!(status.contains("days left, RENEW SOON"), "{status}");
    let own = cli_ok(&[
        "status",
        "--identity",
        arg(&alice),
        "--endpoint",
        &serve.addr.to_string(),
    ])
    .stdout;
    assert!(own.contains("certificate valid until 20"), "{own}");
    assert!(
        !own.contains("cert      "),
        "a member sees only its own: {own}"
    );

    // A member is renewed: same name and role, new key and serial, a bundle
    // that works; an existing bundle is replaced whole.
    let old_serial = samband::pki::IdentityBundle::load(&alice)
        .unwrap()
        .certificate()
        .unwrap()
        .serial;
    let renewed = cli_ok(&[
        "user",
        "renew",
        "alice",
        "--dir",
        arg(&dir),
        "--out",
        arg(&alice),
    ]);
    assert!(
        renewed.stdout.contains("renewed alice (member)"),
        "{}",
        renewed.stdout
    );
    let bundle = samband::pki::IdentityBundle::load(&alice).unwrap();
    assert_ne!(bundle.certificate().unwrap().serial, old_serial);
    cli_ok(&[
        "status",
        "--identity",
        arg(&alice),
        "--endpoint",
        &serve.addr.to_string(),
    ]);
    let status = cli_ok(&["status", "--dir", arg(&dir)]).stdout;
    // The certificates' part of the status (the certificate watch's own
    // line, from its last run, may name alice's earlier certificate).
    let warned = status
        .lines()
        .filter(|l| !l.trim_start().starts_with("worker"))
        .any(|l| l.contains("member alice"));
    assert!(!warned, "renewed for 397 days: {status}");
    // What counts is the certificate issued last, even a shorter one.
    cli_ok(&[
        "user",
        "renew",
        "alice",
        "--days",
        "3",
        "--dir",
        arg(&dir),
        "--out",
        arg(&alice),
    ]);
    let status = cli_ok(&["status", "--dir", arg(&dir)]).stdout;
    assert!(status.contains("cert      member alice: until"), "{status}");
    let never = cli(&[
        "user",
        "renew",
        "bob",
        "--dir",
        arg(&dir),
        "--out",
        arg(&tmp.path().join("bob")),
    ]);
    assert!(
        !never.success && never.stderr.contains("no certificate was issued to bob"),
        "{never:?}"
    );

    // The operator identity expires: admin commands say so and how to renew,
    // before dialing; another admin's identity still works.
    let duty = tmp.path().join("duty");
    cli_ok(&[
        "user",
        "add",
        "duty",
        "--admin",
        "--dir",
        arg(&dir),
        "--out",
        arg(&duty),
    ]);
    let now = OffsetDateTime::now_utc();
    OrgPki::at(&dir)
        .renew_member(
            &org,
            &MemberName::parse("operator").unwrap(),
            &serve.addr.to_string(),
            &samband::layout::operator_dir(&dir),
            Validity {
                not_before: now - Duration::days(10),
                not_after: now - Duration::days(1),
            },
        )
        .unwrap();
    for command in [
        &["peer", "list", "--dir", arg(&dir)][..],
        &["pki", "reload", "--dir", arg(&dir)][..],
        &["audit", "export", "--dir", arg(&dir)][..],
        &["status", "--dir", arg(&dir)][..],
    ] {
        let refused = cli(command);
        assert!(!refused.success, "{command:?}: {refused:?}");
        assert!(
            refused.stderr.contains("operator identity")
                && refused.stderr.contains("expired on 20")
                && refused.stderr.contains("samband user renew operator --dir"),
            "{command:?}: {}",
            refused.stderr
        );
    }
    cli_ok(&["peer", "list", "--dir", arg(&dir), "--identity", arg(&duty)]);
    // A remote admin needs only a bundle and the node's address.
    let ep = serve.addr.to_string();
    cli_ok(&[
        "peer",
        "list",
        "--identity",
        arg(&duty),
        "--node-endpoint",
        &ep,
    ]);
    let no_host = cli(&[
        "pki",
        "renew",
        "--identity",
        arg(&duty),
        "--node-endpoint",
        &ep,
    ]);
    assert!(
        !no_host.success && no_host.stderr.contains("give --dir"),
        "renewing needs the node's host: {no_host:?}"
    );
    cli_ok(&[
        "pki",
        "reload",
        "--dir",
        arg(&dir),
        "--identity",
        arg(&duty),
    ]);

    // Renewed on the node's host, the operator is back.
    let renewed = cli_ok(&["user", "renew", "operator", "--dir", arg(&dir)]);
    assert!(
        renewed.stdout.contains("renewed operator (admin)"),
        "{}",
        renewed.stdout
    );
    cli_ok(&["peer", "list", "--dir", arg(&dir)]);
    // `pki renew` renews it too.
    let before = samband::pki::IdentityBundle::load(&samband::layout::operator_dir(&dir))
        .unwrap()
        .certificate()
        .unwrap()
        .serial;
    let renew = cli_ok(&["pki", "renew", "--dir", arg(&dir)]);
    assert!(
        renew.stdout.contains("renewed the operator identity"),
        "{}",
        renew.stdout
    );
    let after = samband::pki::IdentityBundle::load(&samband::layout::operator_dir(&dir))
        .unwrap()
        .certificate()
        .unwrap()
        .serial;
    assert_ne!(before, after);
    cli_ok(&["peer", "list", "--dir", arg(&dir)]);
    serve.kill9().await;
}

/// Admin commands on the node's host dial the address the node listens on,
/// not the public name in the operator identity (split DNS), still
/// verifying the node's certificate for that name; `--endpoint` overrides.
#[tokio::test]
async fn admin_commands_on_the_nodes_host_dial_where_it_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut opts = samband::setup::InitOptions::loopback(OrgId::parse("police.example").unwrap());
    // A public name that resolves nowhere from here.
    opts.hosts = vec!["samband.police.invalid".into()];
    samband::setup::init(&dir, &opts).unwrap();
    let serve = ServeProcess::start(&dir).await;
    // The operator identity names the node by its public name, as `init
    // --host` on a server with a fixed port writes it.
    let info = samband::layout::operator_dir(&dir).join("identity.toml");
    let text = std::fs::read_to_string(&info).unwrap();
    let public = text.replace("127.0.0.1:0", "samband.police.invalid:7443");
    assert_ne!(text, public);
    std::fs::write(&info, public).unwrap();
    cli_ok(&["peer", "list", "--dir", arg(&dir)]);
    cli_ok(&["status", "--dir", arg(&dir)]);
    let wrong = cli(&[
        "peer",
        "list",
        "--dir",
        arg(&dir),
        "--node-endpoint",
        "127.0.0.1:1",
    ]);
    assert!(
        !wrong.success || wrong.stdout.contains("not running"),
        "{wrong:?}"
    );
    serve.kill9().await;
}

/// Every change the audit log records says who made it: an admin through
/// the Admin API by name, the host (a command with --dir on a stopped
/// node, SIGHUP) as `host`; issuing a member and creating a channel are
/// recorded too.
#[tokio::test]
async fn every_recorded_change_names_who_made_it() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let (_rescue_tmp, rescue_dir) = {
        let t = init_dir("rescue.example");
        let d = node_dir(&t);
        (t, d)
    };
    let serve = ServeProcess::start(&dir).await;
    // Issued on the host while the node runs: recorded by the node.
    let duty = tmp.path().join("duty");
    cli_ok(&[
        "user",
        "add",
        "duty",
        "--admin",
        "--dir",
        arg(&dir),
        "--out",
        arg(&duty),
    ]);
    // An admin's changes, through the Admin API.
    let ep = serve.addr.to_string();
    let as_duty = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--identity",
            arg(&duty),
            "--node-endpoint",
            &ep,
            "--dir",
            arg(&dir),
        ]);
        cli_ok(&all)
    };
    let bundle = tmp.path().join("rescue.bundle");
    let fp = cli_ok(&[
        "trust",
        "export",
        "--dir",
        arg(&rescue_dir),
        "--out",
        arg(&bundle),
    ])
    .stderr;
    let fp = fp
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .to_owned();
    as_duty(&["peer", "add", arg(&bundle), "--fingerprint", &fp]);
    cli_ok(&[
        "channel",
        "create",
        "ops",
        "--identity",
        arg(&duty),
        "--endpoint",
        &ep,
    ]);
    as_duty(&["pki", "reload"]);
    let log = audit_log(&mut serve.admin(&dir).await).await;
    // The latest entry of each kind.
    let actor_of = |event: &str| -> String {
        log.iter()
            .rev()
            .find(|e| e.event == event)
            .unwrap_or_else(|| panic!("{event} recorded: {log:?}"))
            .details
            .get("actor")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(actor_of("member.issued"), "host");
    let issued: Vec<_> = log.iter().filter(|e| e.event == "member.issued").collect();
    assert!(
        issued
            .iter()
            .any(|e| e.details["member"] == "duty" && e.details["role"] == "admin"),
        "{issued:?}"
    );
    for event in ["peer.added", "channel.created", "node.reloaded"] {
        assert_eq!(actor_of(event), "member:duty", "{event}");
    }

    // On the host, with the node stopped: the host.
    serve.kill9().await;
    cli_ok(&["peer", "remove", "rescue.example", "--dir", arg(&dir)]);
    cli_ok(&[
        "user",
        "add",
        "eve",
        "--dir",
        arg(&dir),
        "--out",
        arg(&tmp.path().join("eve")),
    ]);
    let export = cli_ok(&["audit", "export", "--dir", arg(&dir)]).stdout;
    let entries: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_host = |event: &str, key: &str, value: &str| {
        entries.iter().any(|e| {
            e["event"] == event && e["details"][key] == value && e["details"]["actor"] == "host"
        })
    };
    assert!(by_host("peer.removed", "org", "rescue.example"), "{export}");
    assert!(by_host("member.issued", "member", "eve"), "{export}");
}
