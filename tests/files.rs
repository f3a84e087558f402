//! Files attached to posts, on one node: upload (resumable, bounded,
//! verified), posting a reference, history showing it, download, the
//! sweep of unposted uploads, and every bad input the API must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::files::{
    MIB, attach, bytes, chunks, download, object_path, post_files, sha, upload, upload_status,
};
use common::{TestNode, create_channel, init_dir_with};
use samband::model::Role;
use samband::proto;

/// The acknowledged post and its file survive a restart; history shows the
/// attachment (name, media type, size, hash, held), and any member of the
/// org reads it through the message that references it.
#[tokio::test]
async fn a_file_posted_is_durable_shown_and_read_back_by_another_member() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut alice = node.client("alice", Role::Member).await;
    let photo = bytes(3 * MIB + 12_345, 1);
    let up = upload(&mut alice, &photo).await.unwrap();
    assert_eq!(
        (up.sha256.as_str(), up.size),
        (sha(&photo).as_str(), photo.len() as u64)
    );
    let posted = post_files(
        &mut alice,
        &ch,
        "the bridge",
        vec![attach(&photo, "bridge.jpg")],
    )
    .await
    .unwrap();
    let node = node.restart().await;
    let mut bob = node.client("bob", Role::Member).await;
    let history = common::all_history(&mut bob, &ch).await;
    let m = history.iter().find(|m| m.cursor == posted.cursor).unwrap();
    assert_eq!(m.text, "the bridge");
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(
        (
            a.name.as_str(),
            a.media_type.as_str(),
            a.size,
            a.sha256.as_str(),
            a.held
        ),
        (
            "bridge.jpg",
            "image/jpeg",
            photo.len() as u64,
            sha(&photo).as_str(),
            true
        )
    );
    let back = download(&mut bob, &ch, &posted.cursor, &a.sha256, 0)
        .await
        .unwrap();
    assert!(back == photo, "the bytes read back are the bytes uploaded");
    // From an offset: the rest of it.
    let tail = download(&mut bob, &ch, &posted.cursor, &a.sha256, 2_000_000)
        .await
        .unwrap();
    assert!(tail == photo[2_000_000..]);
    // A post with files only, no text.
    let doc = bytes(1000, 2);
    upload(&mut bob, &doc).await.unwrap();
    post_files(&mut bob, &ch, "", vec![attach(&doc, "plan.pdf")])
        .await
        .unwrap();
    node.stop().await;
}

/// An upload cut off keeps what arrived; UploadStatus says how much, a
/// resume from there finishes it, and a resume from anywhere else is
/// refused with the offset to use.
#[tokio::test]
async fn an_interrupted_upload_resumes_from_the_bytes_the_node_holds() {
    let node = TestNode::start("police.example").await;
    let mut alice = node.client("alice", Role::Member).await;
    let video = bytes(5 * MIB / 2, 3);
    let hash = sha(&video);
    let size = video.len() as u64;
    // Two of three chunks, then the stream ends.
    let mut first_two = chunks(&video, size, 0, &hash);
    first_two.truncate(2);
    let err = alice
        .upload(tokio_stream::iter(first_two))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("from offset 2097152"), "{err:?}");
    let status = upload_status(&alice, &hash).await.unwrap();
    assert_eq!((status.held, status.complete), (2 * MIB as u64, false));
    let wrong = alice
        .upload(tokio_stream::iter(chunks(&video, size, MIB, &hash)))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition, "{wrong:?}");
    assert!(
        wrong.message().contains("send from offset 2097152"),
        "{wrong:?}"
    );
    // Nobody else sees alice's partial upload.
    let mut bob = node.client("bob", Role::Member).await;
    let theirs = upload_status(&bob, &hash).await.unwrap();
    assert_eq!(theirs.held, 0);
    let done = alice
        .upload(tokio_stream::iter(chunks(&video, size, 2 * MIB, &hash)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.size, size);
    let status = upload_status(&alice, &hash).await.unwrap();
    assert!(status.complete);
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let posted = post_files(
        &mut alice,
        &ch,
        "water level",
        vec![attach(&video, "level.mp4")],
    )
    .await
    .unwrap();
    let back = download(&mut bob, &ch, &posted.cursor, &hash, 0)
        .await
        .unwrap();
    assert!(back == video);
    node.stop().await;
}

/// Every refusal of the upload and post path, with the code and the key
/// or offset that says what to do.
#[tokio::test]
async fn bad_uploads_and_references_are_refused_and_nothing_of_them_is_kept() {
    let tmp = init_dir_with("police.example", |l| {
        l.max_file_bytes = 2 * MIB as u64;
        l.max_files_per_post = 2;
    });
    let node = TestNode::start_in(tmp).await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut alice = node.client("alice", Role::Member).await;
    let files_dir = node.dir().join("data/files");
    let partial_files = || {
        std::fs::read_dir(files_dir.join("partial"))
            .unwrap()
            .count()
    };

    // Larger than the limit: refused on the first chunk, before it is stored.
    let big = bytes(2 * MIB + 1, 4);
    let err = upload(&mut alice, &big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("limits.max_file_bytes"), "{err:?}");
    assert_eq!(partial_files(), 0);

    // Bytes that do not match the hash given: nothing kept.
    let data = bytes(1000, 5);
    let mut lie = chunks(&data, 1000, 0, &sha(b"something else"));
    lie[0].sha256 = sha(b"something else");
    let err = alice.upload(tokio_stream::iter(lie)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("nothing of it was kept"), "{err:?}");
    assert_eq!(partial_files(), 0);

    // More bytes than announced (an endless file).
    let mut endless = chunks(&data, 10, 0, &sha(&data));
    endless[0].size = 10;
    let err = alice.upload(tokio_stream::iter(endless)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A chunk over 1 MiB.
    let mut fat = chunks(&data, MIB as u64 + 1, 0, &sha(&bytes(MIB + 1, 6)));
    fat[0].data = bytes(MIB + 1, 6);
    let err = alice.upload(tokio_stream::iter(fat)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Not a hash.
    let mut nonsense = chunks(&data, 1000, 0, "xyz");
    nonsense[0].sha256 = "xyz".into();
    let err = alice
        .upload(tokio_stream::iter(nonsense))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A reference to a file never uploaded, and to one another member
    // uploaded: the same NOT_FOUND (no oracle of what the node holds).
    let never = post_files(&mut alice, &ch, "x", vec![attach(b"never", "a.jpg")])
        .await
        .unwrap_err();
    assert_eq!(never.code(), tonic::Code::NotFound, "{never:?}");
    let mut bob = node.client("bob", Role::Member).await;
    upload(&mut bob, &data).await.unwrap();
    let others = post_files(&mut alice, &ch, "x", vec![attach(&data, "a.jpg")])
        .await
        .unwrap_err();
    assert_eq!(others.code(), tonic::Code::NotFound, "{others:?}");

    // Names that would leave a directory, and too many files.
    upload(&mut alice, &data).await.unwrap();
    for name in ["../x", "a/b", "", ".."] {
        let err = post_files(&mut alice, &ch, "x", vec![attach(&data, name)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
    }
    let twins = vec![attach(&data, "same.jpg"), attach(&data, "same.jpg")];
    let err = post_files(&mut alice, &ch, "x", twins).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let three = vec![attach(&data, "1"), attach(&data, "2"), attach(&data, "3")];
    let err = post_files(&mut alice, &ch, "x", three).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("limits.max_files_per_post"),
        "{err:?}"
    );

    // A second upload of the same file by the same member while the first
    // still runs (a retry) is refused, not interleaved with it.
    let running = bytes(2 * MIB, 13);
    let hash = sha(&running);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut first = alice.clone();
    let call = tokio::spawn(async move {
        first
            .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(chunks(&running, running.len() as u64, 0, &hash).remove(0))
        .await
        .unwrap();
    common::eventually("the first upload to start", || async {
        let held = upload_status(&alice, &hash).await.ok()?.held;
        (held > 0).then_some(())
    })
    .await;
    let err = upload(&mut alice, &running).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    drop(tx);
    assert!(call.await.unwrap().is_err(), "the first ended short");
    upload(&mut alice, &running).await.unwrap();

    // A download by hash through a message that does not reference it.
    let text_only = common::post(&mut alice, &ch, "no files here").await;
    let err = download(&mut bob, &ch, &text_only.cursor, &sha(&data), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    node.stop().await;
}

/// Below the disk reserve, uploads are refused with RESOURCE_EXHAUSTED
/// naming the key; the node goes on.
#[tokio::test]
async fn an_upload_that_would_eat_the_disk_reserve_is_refused() {
    let tmp = init_dir_with("police.example", |l| l.disk_reserve_bytes = u64::MAX / 2);
    let node = TestNode::start_in(tmp).await;
    let mut alice = node.client("alice", Role::Member).await;
    let err = upload(&mut alice, &bytes(1000, 7)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("limits.disk_reserve_bytes"),
        "{err:?}"
    );
    // The node goes on.
    alice.status(proto::StatusRequest {}).await.unwrap();
    node.stop().await;
}

/// An upload no post references is removed after
/// `limits.unposted_upload_seconds`; a posted one never is.
#[tokio::test]
async fn unposted_uploads_are_swept_and_posted_ones_kept() {
    let tmp = init_dir_with("police.example", |l| l.unposted_upload_seconds = 1);
    let node = TestNode::start_in(tmp).await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut alice = node.client("alice", Role::Member).await;
    let (kept, dropped) = (bytes(5000, 8), bytes(5000, 9));
    upload(&mut alice, &kept).await.unwrap();
    upload(&mut alice, &dropped).await.unwrap();
    let posted = post_files(&mut alice, &ch, "kept", vec![attach(&kept, "k.jpg")])
        .await
        .unwrap();
    common::eventually("the unposted upload swept", || async {
        (!object(&node, &dropped).exists()).then_some(())
    })
    .await;
    assert!(object(&node, &kept).exists());
    let status = upload_status(&alice, &sha(&dropped)).await.unwrap();
    assert!(!status.complete);
    let back = download(&mut alice, &ch, &posted.cursor, &sha(&kept), 0)
        .await
        .unwrap();
    assert!(back == kept);
    node.stop().await;
}

/// The path of a held file's bytes in a node's data directory.
fn object(node: &TestNode, data: &[u8]) -> std::path::PathBuf {
    object_path(&node.dir(), data)
}

/// A partner that serves bytes other than the ones the signed message
/// names is audited and its transfer dropped, its link unharmed; the file
/// then comes whole from another participant.
#[tokio::test]
async fn a_partner_that_serves_other_bytes_is_audited_and_the_file_comes_from_another() {
    bad_relay(|bytes| bytes[MIB + 5] ^= 0xff, "SHA-256").await;
}

/// The same for a partner that sends more than the signed size (an endless
/// file): it is cut off at the size, audited, and the file comes from another.
#[tokio::test]
async fn a_partner_that_sends_an_endless_file_is_cut_off_and_audited() {
    bad_relay(
        |bytes| bytes.extend(std::iter::repeat_n(7, 3 * MIB)),
        "more than",
    )
    .await;
}

/// A, B and C share a channel; C is away while A posts a file and B
/// fetches it; A goes away, B's copy goes bad on disk (`corrupt`), C comes
/// back and must refuse B's bytes (its audit entry says `reason_has`), then
/// get the file from A once A is back.
async fn bad_relay(corrupt: fn(&mut Vec<u8>), reason_has: &str) {
    let [a, b, c] = TestNode::mesh(["police.example", "rescue.example", "region.example"]).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "flood").await;
    a.share("flood", &["rescue.example", "region.example"])
        .await;
    common::converged(&[&a, &b, &c], &ch, 1).await;
    // C is away while A posts and B fetches.
    let c_addrs = (c.addr, c.fed_addr);
    let c_tmp = c.stop().await;
    let photo = bytes(3 * MIB, 11);
    upload(&mut a_op, &photo).await.unwrap();
    let posted = post_files(&mut a_op, &ch, "bridge", vec![attach(&photo, "bridge.jpg")])
        .await
        .unwrap();
    common::eventually("B to fetch the file", || async {
        object(&b, &photo).exists().then_some(())
    })
    .await;
    // A goes away; B's copy goes bad on disk.
    let a_addrs = (a.addr, a.fed_addr);
    let a_tmp = a.stop().await;
    let mut bad = std::fs::read(object(&b, &photo)).unwrap();
    corrupt(&mut bad);
    std::fs::write(object(&b, &photo), &bad).unwrap();
    let c = TestNode::start_at(c_tmp, Some(c_addrs)).await;
    let log = common::eventually("C to refuse B's bytes", || async {
        let log = common::audit_log(&mut c.admin().await).await;
        log.iter()
            .any(|e| {
                e.event == "federation.file_rejected"
                    && e.details.get("peer").map(String::as_str) == Some("rescue.example")
                    && e.details
                        .get("reason")
                        .is_some_and(|r| r.contains(reason_has))
            })
            .then_some(log)
    })
    .await;
    assert!(!object(&c, &photo).exists(), "{log:?}");
    // The link is unharmed: B's next message reaches C.
    let mut b_op = b.operator().await;
    common::post(&mut b_op, &ch, "still here").await;
    common::eventually("B's message to reach C", || async {
        let h = common::all_history(&mut c.operator().await, &ch).await;
        h.iter().any(|m| m.text == "still here").then_some(())
    })
    .await;
    // A comes back: C fetches the file whole from it.
    let a = TestNode::start_at(a_tmp, Some(a_addrs)).await;
    common::eventually("C to fetch the file from A", || async {
        object(&c, &photo).exists().then_some(())
    })
    .await;
    let back = download(
        &mut c.operator().await,
        &ch,
        &posted.cursor,
        &sha(&photo),
        0,
    )
    .await
    .unwrap();
    assert!(back == photo);
    for n in [a, b, c] {
        n.stop().await;
    }
}

/// SIGKILL in the middle of an upload: after the restart no part of it is
/// visible as a file, what was acknowledged before (a post and its file) is
/// all there, and the upload resumes from the bytes the node holds.
#[tokio::test]
async fn a_kill_during_an_upload_loses_nothing_acknowledged_and_the_upload_resumes() {
    let tmp = common::init_dir("police.example");
    let dir = common::node_dir(&tmp);
    let node = common::ServeProcess::start(&dir).await;
    let mut op = node.operator(&dir).await;
    let ch = create_channel(&mut op, "ops").await;
    let mut alice = node.member(&dir, "alice").await;
    let acked = bytes(MIB + 77, 1);
    upload(&mut alice, &acked).await.unwrap();
    let posted = post_files(&mut alice, &ch, "map", vec![attach(&acked, "map.png")])
        .await
        .unwrap();

    let video = bytes(4 * MIB, 2);
    let hash = sha(&video);
    let all = chunks(&video, video.len() as u64, 0, &hash);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut uploader = alice.clone();
    let call = tokio::spawn(async move {
        uploader
            .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for chunk in all.iter().take(2) {
        tx.send(chunk.clone()).await.unwrap();
    }
    common::eventually("the node to hold two chunks", || async {
        let held = upload_status(&alice, &hash).await.ok()?.held;
        (held == 2 * MIB as u64).then_some(())
    })
    .await;
    node.kill9().await;
    assert!(
        call.await.unwrap().is_err(),
        "a killed upload is not acknowledged"
    );

    let node = common::ServeProcess::start(&dir).await;
    assert!(
        !object_path(&dir, &video).exists(),
        "no half file under its name"
    );
    let mut alice = node.member(&dir, "alice").await;
    let back = download(&mut alice, &ch, &posted.cursor, &sha(&acked), 0)
        .await
        .unwrap();
    assert!(back == acked, "what was acknowledged is all there");
    let held = upload_status(&alice, &hash).await.unwrap().held;
    let offset = held as usize;
    assert!(offset <= 2 * MIB && offset % MIB == 0, "{held}");
    alice
        .upload(tokio_stream::iter(chunks(
            &video,
            video.len() as u64,
            offset,
            &hash,
        )))
        .await
        .unwrap();
    let posted = post_files(&mut alice, &ch, "video", vec![attach(&video, "v.mp4")])
        .await
        .unwrap();
    let back = download(&mut alice, &ch, &posted.cursor, &hash, 0)
        .await
        .unwrap();
    assert!(back == video);
    node.kill9().await;
}

/// SIGKILL in the middle of a partner's transfer: after the restart no part
/// of it is visible as a file, and the transfer resumes from the bytes the
/// node holds (its log says from where) and completes, verified.
#[tokio::test]
async fn a_kill_during_a_federated_transfer_resumes_it_from_the_bytes_held() {
    let a = TestNode::start("police.example").await;
    let b_tmp = common::init_dir("rescue.example");
    let b_dir = common::node_dir(&b_tmp);
    let b = common::ServeProcess::start(&b_dir).await;
    let b_addrs = [b.addr.to_string(), b.fed_addr.to_string()];
    // B reaches A through a proxy that can hold a transfer still.
    let proxy = common::Proxy::start(a.fed_addr).await;
    let b_bundle = b
        .admin(&b_dir)
        .await
        .export_trust(proto::ExportTrustRequest {})
        .await
        .unwrap()
        .into_inner();
    let a_bundle = a
        .admin()
        .await
        .export_trust(proto::ExportTrustRequest {})
        .await
        .unwrap()
        .into_inner();
    let add = |bundle: proto::TrustBundle, endpoint: String| proto::AddPeerRequest {
        bundle: bundle.text,
        fingerprint: bundle.fingerprint,
        endpoint,
        accept: 0,
    };
    a.admin()
        .await
        .add_peer(add(b_bundle, b_addrs[1].clone()))
        .await
        .unwrap();
    b.admin(&b_dir)
        .await
        .add_peer(add(a_bundle, proxy.addr.to_string()))
        .await
        .unwrap();
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "flood").await;
    a.share("flood", &["rescue.example"]).await;
    let big = bytes(48 * MIB, 5);
    let hash = sha(&big);
    upload(&mut a_op, &big).await.unwrap();
    let posted = post_files(
        &mut a_op,
        &ch,
        "drone video",
        vec![attach(&big, "drone.mp4")],
    )
    .await
    .unwrap();
    let partial = b_dir.join("data/files/partial").join(format!("t-{hash}"));
    let object = object_path(&b_dir, &big);
    common::eventually("B's transfer to be under way", || async {
        std::fs::metadata(&partial)
            .is_ok_and(|m| m.len() > 0)
            .then_some(())
    })
    .await;
    proxy.stall();
    b.kill9().await;
    let held = std::fs::metadata(&partial).unwrap().len();
    assert!(held > 0 && held < big.len() as u64, "{held}");
    assert!(!object.exists(), "no half file under its name");
    let b = common::ServeProcess::start_with(
        &b_dir,
        &[
            "--client-listen",
            &b_addrs[0],
            "--federation-listen",
            &b_addrs[1],
        ],
    )
    .await;
    proxy.resume();
    // The node logs the fetch just after it moves the file into place, so
    // wait for the log line rather than for the file.
    let resumed: Vec<u64> = common::eventually("B to log the finished transfer", || async {
        let log = std::fs::read_to_string(common::serve_log(&b_dir)).ok()?;
        let resumed: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("file fetched"))
            .filter_map(|l| {
                l.split("resumed_from=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        (!resumed.is_empty()).then_some(resumed)
    })
    .await;
    assert!(object.exists(), "the fetched file under its name");
    assert!(
        resumed.iter().any(|&from| from > 0 && from <= held),
        "resumed from {resumed:?}, held {held}"
    );
    let mut member = b.member(&b_dir, "bob").await;
    let back = download(&mut member, &ch, &posted.cursor, &hash, 0)
        .await
        .unwrap();
    assert!(back == big);
    b.kill9().await;
    a.stop().await;
}

/// A partner whose limit refuses a file says so: its members see the file
/// refused by their own node, and the sender's members see it refused by
/// that partner, instead of a file that never arrives without a word.
#[tokio::test]
async fn a_file_over_a_partners_limit_is_shown_refused_on_both_sides() {
    let a = TestNode::start("police.example").await;
    let b_tmp = init_dir_with("rescue.example", |l| {
        l.member_posts_per_second = 0;
        l.max_file_bytes = MIB as u64;
    });
    let b = TestNode::start_in(b_tmp).await;
    a.peer_with(&b).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "flood").await;
    a.share("flood", &["rescue.example"]).await;
    let video = bytes(2 * MIB, 12);
    upload(&mut a_op, &video).await.unwrap();
    let posted = post_files(&mut a_op, &ch, "video", vec![attach(&video, "v.mp4")])
        .await
        .unwrap();
    let refused_by = |history: &[proto::Message]| -> Option<proto::PartnerRefusal> {
        let m = history
            .iter()
            .find(|m| m.origin_seq == posted.origin_seq && m.origin == "police.example")?;
        m.attachments.first()?.refused_by.first().cloned()
    };
    let on_b = common::eventually("B to refuse the file", || async {
        refused_by(&common::all_history(&mut b.operator().await, &ch).await)
    })
    .await;
    assert_eq!(on_b.org, "rescue.example");
    assert!(on_b.reason.contains("limits.max_file_bytes"), "{on_b:?}");
    let on_a = common::eventually("A to learn B refused the file", || async {
        refused_by(&common::all_history(&mut a.operator().await, &ch).await)
    })
    .await;
    assert_eq!(on_a.org, "rescue.example");
    assert!(on_a.reason.contains("limits.max_file_bytes"), "{on_a:?}");
    assert!(!object(&b, &video).exists());
    // Asked for on B, it is refused, not "try again later".
    let err = download(
        &mut b.operator().await,
        &ch,
        &posted.cursor,
        &sha(&video),
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("refused"), "{err:?}");
    a.stop().await;
    b.stop().await;
}

/// A partner added without an endpoint (it dials in, this node cannot dial
/// it) still gets this node's files, over the call this node opens while
/// its link is up, and this node still fetches the partner's by dialing.
#[tokio::test]
async fn files_flow_both_ways_with_a_partner_that_only_dials_in() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let auto = proto::AcceptPolicy::Auto;
    a.trust(&b, Some(b.fed_addr.to_string()), auto).await;
    b.trust(&a, None, auto).await;
    let (mut a_op, mut b_op) = (a.operator().await, b.operator().await);
    let ch = create_channel(&mut a_op, "flood").await;
    a.share("flood", &["rescue.example"]).await;
    let (from_a, from_b) = (bytes(3 * MIB + 11, 14), bytes(100_000, 15));
    upload(&mut a_op, &from_a).await.unwrap();
    post_files(&mut a_op, &ch, "", vec![attach(&from_a, "a.jpg")])
        .await
        .unwrap();
    common::eventually("B to take the shared channel", || async {
        let channels = b_op
            .clone()
            .list_channels(proto::ListChannelsRequest {})
            .await
            .ok()?
            .into_inner()
            .channels;
        channels.iter().any(|c| c.id == ch).then_some(())
    })
    .await;
    upload(&mut b_op, &from_b).await.unwrap();
    post_files(&mut b_op, &ch, "", vec![attach(&from_b, "b.jpg")])
        .await
        .unwrap();
    common::eventually("each file on the other node", || async {
        (object(&b, &from_a).exists() && object(&a, &from_b).exists()).then_some(())
    })
    .await;
    let (mut a_member, mut b_member) = (
        a.client("anna", Role::Member).await,
        b.client("bo", Role::Member).await,
    );
    for (member, data) in [(&mut b_member, &from_a), (&mut a_member, &from_b)] {
        let history = common::all_history(member, &ch).await;
        let message = history
            .iter()
            .find(|m| m.attachments.iter().any(|f| f.sha256 == sha(data)))
            .unwrap();
        let got = download(member, &ch, &message.cursor, &sha(data), 0).await;
        assert!(got.unwrap() == *data);
    }
    a.stop().await;
    b.stop().await;
}
