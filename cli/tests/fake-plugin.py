#!/usr/bin/env python3
# A go-plugin plugin that stalls at one step of starting, as PLINTH_FAKE_MODE says:
#   no-handshake   never prints its handshake line
#   no-accept      names a TCP listener whose accept queue is full (the dial hangs)
#   mute           accepts connections on its socket and never speaks
#   mute-tls       the same, with a certificate in its handshake line (the TLS handshake hangs)
#   no-reflection  speaks HTTP/2 (settings, ping answers) and answers no request
# It writes its process id to the file PLINTH_FAKE_PID names. For the tests in cli.rs.
import os, socket, threading, time

# A self-signed certificate (CN=localhost, P-256) in the raw base64 go-plugin uses: it parses,
# so the host goes on to the TLS handshake, which this socket never answers.
CERTIFICATE = (
    "MIIBgDCCASWgAwIBAgIULlFWi8Ho17q+C/8AZaoqc+rYrTgwCgYIKoZIzj0EAwIwFDESMBAGA1UE"
    "AwwJbG9jYWxob3N0MCAXDTI2MTIwNzEyMjg1OFoYDzIxMjYxMTEzMTIyODU4WjAUMRIwEAYDVQQD"
    "DAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARkGWzZEA2QsCKsLOFAT+rUNfjA"
    "50K4+pVTSvObREWBgdfo0uQHsBUI7JwKbE+E3CQ9H5AX6YAA/6J4jDxzsTF8o1MwUTAdBgNVHQ4E"
    "FgQU53pVsQQAneb5f40+U+bc1rsiCUUwHwYDVR0jBBgwFoAU53pVsQQAneb5f40+U+bc1rsiCUUw"
    "DwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAnGnNRXoJBCukJiLPranNNV5u6OEw"
    "Ya7L+6vC4u7UqUwCIQCDwDYgQvzkqufVw5tsqc7kCSHV2HVopwD5tZFG0E1fIg"
)

mode = os.environ["PLINTH_FAKE_MODE"]
with open(os.environ["PLINTH_FAKE_PID"], "w") as f:
    f.write(str(os.getpid()))
if mode == "no-handshake":
    time.sleep(3600)

held = []
if mode == "no-accept":
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        held.append(filler)
    address = "tcp|127.0.0.1:%d" % listener.getsockname()[1]
else:
    path = os.path.join(os.environ["PLUGIN_UNIX_SOCKET_DIR"], "plugin.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    address = "unix|" + path
certificate = CERTIFICATE if mode == "mute-tls" else ""
print("1|1|%s|grpc|%s" % (address, certificate), flush=True)


def frame(kind, flags, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + bytes(4) + payload


def read_exactly(connection, n):
    data = b""
    while len(data) < n:
        chunk = connection.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def speak_http2(connection):
    """Sends settings, acknowledges the client's, answers pings; ignores every request."""
    try:
        read_exactly(connection, 24)
        connection.sendall(frame(4, 0))
        while True:
            header = read_exactly(connection, 9)
            length, kind, flags = int.from_bytes(header[:3], "big"), header[3], header[4]
            payload = read_exactly(connection, length)
            if kind == 4 and not flags & 1:
                connection.sendall(frame(4, 1))
            elif kind == 6 and not flags & 1:
                connection.sendall(frame(6, 1, payload))
    except (EOFError, OSError):
        pass


if mode == "no-accept":
    time.sleep(3600)
while True:
    connection, _ = listener.accept()
    held.append(connection)
    if mode == "no-reflection":
        threading.Thread(target=speak_http2, args=(connection,), daemon=True).start()
