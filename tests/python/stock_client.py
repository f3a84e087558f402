"""A stock Python grpcio client: stubs generated from proto/ only, the member's
PEM files only. Exercises health, reflection, Status, Post, History,
Subscribe, acknowledgements, replies and retractions (a post asking for
acknowledgement, Acknowledge twice, Receipts and WatchReceipts, a reply,
Retract), and files (Upload cut off and resumed
after UploadStatus, a Post that attaches it, Download whole and from an
offset) against a running node, and exits non-zero on any mismatch.

usage: stock_client.py ENDPOINT BUNDLE_DIR CHANNEL
"""
import hashlib
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

        check_acks(stub, pb, channel)
        check_files(stub, pb, channel)
        assert "samband.v1.Incidents" in services, services
        check_incidents(rpc.IncidentsStub(ch), pb)
    print("stock client ok")


def check_incidents(stub, pb) -> None:
    """The incident the test opened: listed, its picture set, watched and
    read, and a CAP alert imported into it."""
    listed = stub.ListIncidents(pb.ListIncidentsRequest(), timeout=10)
    storm = [i for i in listed.incidents if i.name == "storm"]
    assert storm and storm[0].state == "active", listed
    incident = storm[0].id
    watch = stub.WatchPicture(pb.PictureRequest(incident=incident), timeout=10)
    first = next(watch)
    assert first.WhichOneof("update") == "snapshot", first
    entry = stub.SetEntry(pb.SetEntryRequest(
        incident=incident, key="cordon-1", kind="area", status="closed",
        geometry='{"type":"Point","coordinates":[18.07,59.33]}',
        fields={"by": "python"}), timeout=10)
    assert entry.owner and entry.key == "cordon-1", entry
    changed = next(watch)
    assert changed.changed.key == "cordon-1", changed
    watch.cancel()
    alert = (pathlib.Path(__file__).parents[1] / "data/cap-samples/v1dot2_appendix_adot2.xml").read_text()
    imported = stub.ImportCap(pb.ImportCapRequest(incident=incident, alert=alert), timeout=10)
    assert len(imported.entries) == 1, imported
    picture = stub.Picture(pb.PictureRequest(incident=incident), timeout=10)
    keys = sorted(e.key for e in picture.entries)
    assert keys == sorted(["cordon-1", imported.entries[0]]), keys
    try:
        stub.SetEntry(pb.SetEntryRequest(incident=incident, key="x", kind="Not A Word"), timeout=10)
        sys.exit("a kind that is not a word was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e


def check_acks(stub, pb, channel: str) -> None:
    order = stub.Post(
        pb.PostRequest(channel=channel, text="report in", ack_required=True, ack_deadline_ms=600_000),
        timeout=10,
    )
    first = stub.Acknowledge(pb.AcknowledgeRequest(channel=channel, cursor=order.cursor), timeout=10)
    again = stub.Acknowledge(pb.AcknowledgeRequest(channel=channel, cursor=order.cursor), timeout=10)
    assert not first.already and again.already, (first, again)
    assert first.acknowledgement.cursor == again.acknowledgement.cursor
    receipts = stub.Receipts(pb.ReceiptsRequest(channel=channel, cursor=order.cursor), timeout=10)
    assert receipts.ack_required and receipts.ack_deadline_unix_ms > 0, receipts
    reply = stub.Post(pb.PostRequest(channel=channel, text="on it", reply_to=order.cursor), timeout=10)
    page = stub.History(pb.HistoryRequest(channel=channel, limit=10), timeout=10)
    kinds = {m.cursor: m for m in page.messages}
    assert kinds[first.acknowledgement.cursor].kind == "ack", page
    assert kinds[first.acknowledgement.cursor].acknowledges.cursor == order.cursor
    assert kinds[reply.cursor].reply_to.cursor == order.cursor, page
    retracted = stub.Retract(pb.RetractRequest(channel=channel, cursor=reply.cursor), timeout=10)
    assert not retracted.already, retracted
    page = stub.History(pb.HistoryRequest(channel=channel, limit=10), timeout=10)
    gone = {m.cursor: m for m in page.messages}[reply.cursor]
    assert gone.retracted.member and not gone.text, gone
    live = stub.WatchReceipts(pb.ReceiptsRequest(channel=channel, cursor=order.cursor), timeout=10)
    assert next(live).ack_required
    live.cancel()
    try:
        stub.Acknowledge(pb.AcknowledgeRequest(channel=channel, cursor=reply.cursor + "x"), timeout=10)
        sys.exit("a bad cursor was acknowledged")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e


def check_files(stub, pb, channel: str) -> None:
    data = bytes((i * 7 + 3) % 251 for i in range(2 * 1024 * 1024 + 4321))
    sha = hashlib.sha256(data).hexdigest()
    mib = 1024 * 1024

    def chunks(offset: int, end: int):
        first = True
        for at in range(offset, end, mib):
            chunk = pb.UploadChunk(data=data[at:min(at + mib, end)])
            if first:
                chunk.sha256, chunk.size, chunk.offset = sha, len(data), offset
                first = False
            yield chunk

    # Cut off after the first MiB: the node keeps it, and says so.
    try:
        stub.Upload(chunks(0, mib), timeout=30)
        raise AssertionError("an upload cut short was taken as whole")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
    held = stub.UploadStatus(pb.UploadStatusRequest(sha256=sha), timeout=10)
    assert held.held == mib and not held.complete, held
    done = stub.Upload(chunks(held.held, len(data)), timeout=30)
    assert done.sha256 == sha and done.size == len(data), done

    attached = pb.AttachmentRef(sha256=sha, name="level.bin", media_type="application/octet-stream")
    posted = stub.Post(pb.PostRequest(channel=channel, text="", attachments=[attached]), timeout=10)
    page = stub.History(pb.HistoryRequest(channel=channel, limit=1), timeout=10)
    [shown] = page.messages[-1].attachments
    assert (shown.sha256, shown.size, shown.name, shown.held) == (sha, len(data), "level.bin", True), shown

    def download(offset: int) -> bytes:
        req = pb.DownloadRequest(channel=channel, cursor=posted.cursor, sha256=sha, offset=offset)
        return b"".join(c.data for c in stub.Download(req, timeout=30))

    assert download(0) == data
    assert download(mib + 1) == data[mib + 1:]


if __name__ == "__main__":
    main()
