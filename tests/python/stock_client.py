"""A stock Python grpcio client: stubs generated from proto/ only, the member's
PEM files only. Exercises health, reflection, Status, Post, History and
Subscribe against a running node, and exits non-zero on any mismatch.

usage: stock_client.py ENDPOINT BUNDLE_DIR CHANNEL
"""
import pathlib
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def generate_stubs(out: pathlib.Path) -> None:
    args = ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}"]
    args += [str(p) for p in sorted((ROOT / "proto").rglob("*.proto"))]
    if protoc.main(args) != 0:
        sys.exit("stub generation failed")
    sys.path.insert(0, str(out))


def main() -> None:
    endpoint, bundle, channel = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    out = pathlib.Path(tempfile.mkdtemp())
    generate_stubs(out)
    from samband.v1 import samband_pb2 as pb, samband_pb2_grpc as rpc

    creds = grpc.ssl_channel_credentials(
        root_certificates=(bundle / "ca.pem").read_bytes(),
        private_key=(bundle / "key.pem").read_bytes(),
        certificate_chain=(bundle / "cert.pem").read_bytes(),
    )
    with grpc.secure_channel(endpoint, creds) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, health

        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
        assert "samband.v1.Messaging" in services, services

        stub = rpc.MessagingStub(ch)
        me = stub.Status(pb.StatusRequest(), timeout=10)
        assert me.org and me.member, me

        posted = stub.Post(pb.PostRequest(channel=channel, text="from python", priority=pb.PRIORITY_URGENT), timeout=10)
        page = stub.History(pb.HistoryRequest(channel=channel, limit=10), timeout=10)
        assert page.messages[-1].text == "from python", page
        assert page.messages[-1].cursor == posted.cursor

        stream = stub.Subscribe(pb.SubscribeRequest(channel=channel, from_beginning=True), timeout=10)
        first = next(stream)
        assert first.origin_seq == 1, first
        stream.cancel()

        try:
            stub.Post(pb.PostRequest(channel=channel, text=""), timeout=10)
            sys.exit("empty post was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    print("stock client ok")


if __name__ == "__main__":
    main()
