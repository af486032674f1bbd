"""The agent of tests/proxy_redirect.rs: network calls a program makes, each result written to
results.json (key -> text) for the test to check. With the argument `closed` (the probes were
given proxy port 0) only a few that must fail, or stay on loopback. Destinations are documentation ranges (and
the DNS servers the test names); nothing leaves the sandbox's network namespace."""
import errno
import json
import socket
import sys
import threading

res = {}


def err(e):
    return "errno=" + errno.errorcode.get(e.errno, str(e.errno))


def tcp(ip, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((ip, port))
        peer = s.getpeername()
        line = s.makefile().readline().strip()
        return f"{line} peer={peer[0]}:{peer[1]}"
    except OSError as e:
        return err(e)
    finally:
        s.close()


def query(qid, qtype=1):
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + b"\x05proxy\x04test\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"


def dns(sock, dest, qid):
    try:
        if dest is None:
            sock.send(query(qid))
        else:
            sock.sendto(query(qid), dest)
        data, src = sock.recvfrom(512)
        return f"id={int.from_bytes(data[:2], 'big'):#06x} src={src[0]}:{src[1]}"
    except OSError as e:
        return err(e)


def udp(family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(5)
    return s


# A connect to the listener itself (its port is in the workspace) is not redirected: the
# proxy sees the agent's own address, which decodes as no destination.
with open("proxy_port") as f:
    proxy_port = int(f.read())
res["tcp listener directly"] = tcp("127.0.0.1", proxy_port)

if sys.argv[1:] == ["closed"]:
    # The probes were given proxy port 0: nothing leaves loopback, DNS included.
    res["tcp 203.0.113.7:443"] = tcp("203.0.113.7", 443)
    res["dns 8.8.8.8"] = dns(udp(), ("8.8.8.8", 53), 0x7777)
    res["dns 127.0.0.1"] = dns(udp(), ("127.0.0.1", 53), 0x8888)
    with open("results.json", "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    sys.exit(0)

# TCP to anywhere goes to the proxy, which writes back the destination it decoded.
res["tcp 203.0.113.7:443"] = tcp("203.0.113.7", 443)
res["tcp 10.1.2.3:22"] = tcp("10.1.2.3", 22)
res["tcp6 ::ffff:198.51.100.9:8443"] = tcp("::ffff:198.51.100.9", 8443, socket.AF_INET6)
res["tcp6 2001:db8::1:443"] = tcp("2001:db8::1", 443, socket.AF_INET6)
res["tcp 192.0.2.1:0"] = tcp("192.0.2.1", 0)
bound = socket.socket()
bound.bind(("0.0.0.0", 0))
try:
    bound.connect(("203.0.113.7", 80))
    res["tcp bound first"] = "connected"
except OSError as e:
    res["tcp bound first"] = err(e)

# DNS to any server goes to the supervisor's DNS socket; replies come from the server asked.
u = udp()
res["dns 8.8.8.8"] = dns(u, ("8.8.8.8", 53), 0x1111)
res["dns 127.0.0.1 same socket"] = dns(u, ("127.0.0.1", 53), 0x2222)
res["dns 127.0.0.1"] = dns(udp(), ("127.0.0.1", 53), 0x3333)
c = udp()
c.connect(("192.0.2.53", 53))
res["dns connected 192.0.2.53"] = dns(c, None, 0x4444)
res["dns connected peer"] = "%s:%s" % c.getpeername()
res["dns6 ::ffff:198.51.100.53"] = dns(udp(socket.AF_INET6), ("::ffff:198.51.100.53", 53), 0x5555)
res["dns6 2001:db8::53"] = dns(udp(socket.AF_INET6), ("2001:db8::53", 53), 0x6666)

# Other UDP leaving loopback is refused, QUIC included.
try:
    udp().sendto(b"x", ("1.1.1.1", 443))
    res["udp 1.1.1.1:443"] = "sent"
except OSError as e:
    res["udp 1.1.1.1:443"] = err(e)

# The agent's own servers on loopback are untouched.
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()


def serve():
    conn, peer = srv.accept()
    conn.sendall(f"local {peer[0]}\n".encode())
    conn.close()


threading.Thread(target=serve).start()
res["tcp local"] = tcp("127.0.0.1", srv.getsockname()[1])
echo = udp()
echo.bind(("127.0.0.1", 0))
sender = udp()
sender.sendto(b"ping", echo.getsockname())
data, src = echo.recvfrom(16)
res["udp local"] = f"{data.decode()} from {src[0]}"

# glibc's resolver (through /etc/resolv.conf's server) and a connect to what it returned.
try:
    addr = socket.getaddrinfo("proxy.test", 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    res["getaddrinfo"] = addr
    res["tcp by name"] = tcp(addr, 443)
except OSError as e:
    res["getaddrinfo"] = f"error {e}"

with open("results.json", "w") as f:
    json.dump(res, f, indent=1, sort_keys=True)
