//! The API works from a stock client that has nothing but `proto/` (or
//! reflection) and the member's PEM files: Python grpcio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{TestNode, create_channel, post};
use samband::model::Role;

fn python_has_grpc() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools, grpc_health, grpc_reflection",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn python_grpcio_client_works_with_only_the_proto_and_pem_files() {
    if !python_has_grpc() {
        // CI installs grpcio (see .ci/run); there the test must run, not skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "python grpcio packages missing in CI"
        );
        eprintln!(
            "skipped: pip install grpcio grpcio-tools grpcio-health-checking grpcio-reflection"
        );
        return;
    }
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    post(&mut op, &ch, "first").await;
    // An incident with a partner, for the Incidents service.
    let rescue = TestNode::start("rescue.example").await;
    node.peer_with(&rescue).await;
    let mut incidents = samband::proto::incidents_client::IncidentsClient::new(
        common::operator_channel(&node.dir(), node.addr).await,
    );
    incidents
        .open_incident(samband::proto::OpenIncidentRequest {
            name: "storm".into(),
            with: vec!["rescue.example".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let bundle = node.bundle("py-member", Role::Member);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stock_client.py");
    let endpoint = node.addr.to_string();
    let mut client = Command::new("python3");
    client.arg(script).arg(endpoint).arg(&bundle.dir).arg("ops");
    common::python(client, "stock client ok").await;
    node.stop().await;
    rescue.stop().await;
}
