#!/usr/bin/env python3
"""A host in Python for the typed example: the same calls as host.c, made on a
moatd through the published target.proto and the example's iface.proto, with
nothing of Moat's but those .proto files (docs/protocol.md, docs/TYPED-CALLS.md).

    protoc --python_out=GEN -Iproto -Iexamples/typed moat/v1/target.proto \
        moat/v1/frame.proto moat/v1/options.proto iface.proto
    host.py GEN HOST:PORT build/enclaves/typed_enclave.so

It uploads the image (moatd --allow-upload), loads it, calls Book.Add, Find and
Stats, answers the enclave's Audit.Record exit calls (calling Stats again from
inside them: nesting) and destroys the session. It prints what host.c prints.
"""
import hashlib
import os
import queue
import sys
import threading

import grpc

sys.path.insert(0, sys.argv[1])
from moat.v1 import frame_pb2, target_pb2  # noqa: E402
import iface_pb2  # noqa: E402

MOAT_ENOHANDLER = -12
SELECTOR_LOG = 1
SELECTOR_DESTROY = 0


def selector(full_name):
    """A derived selector (docs/TYPED-CALLS.md): 2^52 + the low 52 bits of FNV-1a 64."""
    h = 0xCBF29CE484222325
    for b in full_name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (1 << 52) | (h & ((1 << 52) - 1))


ADD = selector("typed.v1.Book/Add")
FIND = selector("typed.v1.Book/Find")
STATS = 4096  # option (moat.v1.selector) in iface.proto
RECORD = selector("typed.v1.Audit/Record")


class MoatError(Exception):
    def __init__(self, ret):
        super().__init__("code %d: %s (enclave code %d)" % (ret.code, ret.message, ret.enclave_code))


class Stream:
    """One Attach stream: this thread's calls, and the exit calls they lead to."""

    def __init__(self, attach, metadata, serve):
        self.out = queue.Queue()
        self.frames = attach(iter(self.out.get, None), metadata=metadata)
        self.seq = 0
        self.serve = serve

    def call(self, sel, items):
        self.seq += 1
        seq = self.seq
        self.out.put(frame_pb2.Frame(call=frame_pb2.Call(seq=seq, selector=sel, items=items)))
        for f in self.frames:
            if f.WhichOneof("kind") == "ret":
                if f.ret.seq != seq:
                    raise RuntimeError("Return %d while waiting for %d" % (f.ret.seq, seq))
                return f.ret
            code, reply = self.serve(self, f.call)
            self.out.put(frame_pb2.Frame(ret=frame_pb2.Return(seq=f.call.seq, code=code, items=reply)))
        raise RuntimeError("the target ended the stream")

    def typed(self, sel, request, reply_type):
        ret = self.call(sel, [request.SerializeToString()])
        if ret.code != 0:
            raise MoatError(ret)
        if len(ret.items) != 1:
            raise RuntimeError("a typed reply has one item")
        return reply_type.FromString(ret.items[0])

    def close(self):
        self.out.put(None)
        for _ in self.frames:
            pass


def serve(stream, call):
    """The host's side of the enclave's exit calls."""
    if call.selector == RECORD:
        request = iface_pb2.AuditRequest.FromString(call.items[0])
        print("audit: " + " ".join([request.event] + list(request.names)), flush=True)
        stats = stream.typed(STATS, iface_pb2.StatsRequest(), iface_pb2.StatsReply)
        return 0, [iface_pb2.AuditReply(people=stats.people).SerializeToString()]
    if call.selector == SELECTOR_LOG:
        print(call.items[0].decode(errors="replace"), file=sys.stderr)
        return 0, []
    return MOAT_ENOHANDLER, []


def show(p):
    kinds = {iface_pb2.Person.Phone.WORK: "work", iface_pb2.Person.Phone.HOME: "home"}
    phones = "".join(" %s[%s]" % (ph.number, kinds.get(ph.kind, "mobile")) for ph in p.phones)
    contact = p.WhichOneof("contact")
    what = {"email": ", email %s" % p.email, "pager": ", pager %d" % p.pager}.get(contact, ", no contact")
    print("%s (id %d):%s, photo %d bytes%s" % (p.name, p.id, phones, len(p.photo), what))


def upload(channel, image):
    digest = hashlib.sha256(image).digest()
    up = channel.stream_unary("/moat.v1.Target/Upload", request_serializer=target_pb2.UploadChunk.SerializeToString,
                              response_deserializer=target_pb2.UploadResponse.FromString)

    def chunks():
        for at in range(0, len(image), 32768):
            c = target_pb2.UploadChunk(data=image[at:at + 32768])
            if at == 0:
                c.sha256, c.total_size = digest, len(image)
            yield c

    up(chunks(), timeout=30)
    return digest


def run(s):
    phone_m = iface_pb2.Person.Phone(number="+44 7700 900123")
    phone_w = iface_pb2.Person.Phone(number="+44 20 7946 0000", kind=iface_pb2.Person.Phone.WORK)
    alice = iface_pb2.Person(name="alice", id=1, phones=[phone_m, phone_w], photo=bytes(3000),
                             email="alice@example.org")
    bob = iface_pb2.Person(name="bob", id=2, pager=4155550100)
    added = s.typed(ADD, iface_pb2.AddRequest(people=[alice, bob]), iface_pb2.AddReply)
    print("added: the book has %d people" % added.count)
    for name in ("alice", "bob", "carol"):
        found = s.typed(FIND, iface_pb2.FindRequest(name=name), iface_pb2.FindReply)
        if found.HasField("person"):
            show(found.person)
        else:
            print("%s: not found" % name)
    st = s.typed(STATS, iface_pb2.StatsRequest(), iface_pb2.StatsReply)
    print("stats: %d people, %d phones, %d photo bytes" % (st.people, st.phones, st.photo_bytes))


def main():
    target, path = sys.argv[2], sys.argv[3]
    with open(path, "rb") as f:
        image = f.read()
    with grpc.insecure_channel(target) as channel:
        digest = upload(channel, image)
        nonce = os.urandom(32)
        load = channel.unary_unary("/moat.v1.Target/Load", request_serializer=target_pb2.LoadRequest.SerializeToString,
                                   response_deserializer=target_pb2.LoadResponse.FromString)
        loaded = load(target_pb2.LoadRequest(protocol_major=1, sha256=digest, nonce=nonce), timeout=30)
        report = target_pb2.LoadReport.FromString(loaded.report)
        # The report's signature is Ed25519 over loaded.report with loaded.target_key (not checked here).
        if report.nonce != nonce or report.measurement != digest or report.session_id != loaded.session_id:
            raise RuntimeError("the load report is not about this load")
        md = [("moat-session", loaded.session_id), ("moat-token", loaded.session_token.hex())]
        attach = channel.stream_stream("/moat.v1.Target/Attach", request_serializer=frame_pb2.Frame.SerializeToString,
                                       response_deserializer=frame_pb2.Frame.FromString)
        done = threading.Event()

        def idle():
            done.wait()
            return
            yield

        lease = attach(idle(), metadata=md + [("moat-stream", "lease")])
        s = Stream(attach, md, serve)
        try:
            run(s)
            ret = s.call(SELECTOR_DESTROY, [])
            if ret.code != 0:
                raise MoatError(ret)
        finally:
            s.close()
            done.set()
            lease.cancel()


if __name__ == "__main__":
    main()
