import msgpack, socket, struct, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("/tmp/spool-fix/forward.sock")
def et(t):
    return msgpack.ExtType(0, struct.pack(">II", int(t), int((t % 1) * 1e9)))
t0 = time.time()
n = 0
def docker(cid, name, stream, log, extra=None):
    r = {"container_id": cid, "container_name": name, "source": stream, "log": log}
    if extra: r.update(extra)
    return r
ids = ["0123456789abcdef" * 4, "fedcba9876543210" * 4]
# Docker: Message mode, one event per write, two containers interleaved.
for i in range(12):
    c = i % 2
    stream = "stderr" if i % 5 == 0 else "stdout"
    log = f"GET /api/items/{i} from 10.1.2.{i} user=alice@example.org" if i % 3 == 0 else f"line {i} caf\u00e9 \u2603"
    extra = {"com.docker.compose.project": "shop", "com.docker.compose.service": "api"} if c == 1 else None
    s.sendall(msgpack.packb([f"docker.{['web','api'][c]}", et(t0 + i * 0.001), docker(ids[c], ["/web", "/shop-api-1"][c], stream, log, extra)]))
    n += 1
# PackedForward from a fluent-bit-like forwarder: several entries, one tag.
entries = b"".join(msgpack.packb([et(t0 + 1 + j * 0.001), {"log": f"packed {j}", "level": "warn" if j == 2 else "info", "pid": j}]) for j in range(6))
s.sendall(msgpack.packb(["fluentbit.app", entries, {"size": 6}]))
n += 6
# Forward mode (array of entries), one with an empty message.
s.sendall(msgpack.packb(["forward.mode", [[et(t0 + 2), {"log": ""}], [et(t0 + 2.5), {"message": "other key", "k": "v"}]]]))
n += 2
time.sleep(0.5)
s.close()
print(n)
