//! The web console in a real browser: Debian's Chromium driven by Python
//! Playwright against real nodes (`tests/python/console.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{TestNode, create_channel, eventually};
use samband::model::Role;

fn browser_available() -> bool {
    std::path::Path::new("/usr/bin/chromium").exists()
        && Command::new("python3")
            .args(["-c", "import playwright.sync_api"])
            .status()
            .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_member_uses_the_console_in_a_browser_and_a_partner_sees_it_live() {
    if !browser_available() {
        // CI installs them (see .ci/run); there the test must run, not skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium or playwright missing in CI"
        );
        eprintln!("skipped: apt-get install chromium; pip install playwright");
        return;
    }
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let mut op = police.operator().await;
    let ch = create_channel(&mut op, "flood").await;
    police.share("flood", &["rescue.example"]).await;
    let rescue_op = rescue.operator().await;
    eventually("rescue to join", || async {
        common::channel_state(&rescue_op, &ch)
            .await
            .filter(|s| s == "shared")
    })
    .await;
    let (alice, bo) = (
        police.bundle("alice", Role::Member),
        rescue.bundle("bo", Role::Member),
    );
    // Police's member's browser holds the PKCS#12 file `user add` writes.
    let p12 = alice.write_p12("correct horse battery").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/console.py");
    // Screenshots for docs/console.md when asked (SAMBAND_CONSOLE_SHOTS=docs/console).
    let shots_tmp = tempfile::tempdir().unwrap();
    let shots = std::env::var("SAMBAND_CONSOLE_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| shots_tmp.path().to_owned());
    let shots = shots.to_str().unwrap().to_owned();
    let ca = police.dir().join("pki/ca.pem");
    let rescue_ca = rescue.dir().join("pki/ca.pem");
    // Playwright's certificate proxy checks each node against these CAs.
    let cas = std::env::temp_dir().join(format!("console-cas-{}.pem", std::process::id()));
    std::fs::write(
        &cas,
        [
            std::fs::read(&ca).unwrap(),
            std::fs::read(&rescue_ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let (police_url, rescue_url) = (
        format!("https://{}", police.addr),
        format!("https://{}", rescue.addr),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([&police_url, alice.dir.to_str().unwrap(), &rescue_url])
            .env("POLICE_P12", &p12)
            .env("POLICE_P12_PASSPHRASE", "correct horse battery")
            .args([bo.dir.to_str().unwrap(), &ch, &shots])
            .env("NODE_EXTRA_CA_CERTS", &cas)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("console ok"), "{stdout}");
    eprintln!("{stdout}");
    police.stop().await;
    rescue.stop().await;
}
