"""Health check for the local FerretDB (MongoDB wire protocol), standard library only.

Sends one OP_MSG {ping: 1, $db: "admin"} to 127.0.0.1:PORT and exits 0 if the reply says ok: 1.
services/programs.py uses it as FerretDB's health check after a start.
Usage: python3 services/mongo/ping.py PORT
"""
import socket
import struct
import sys

OP_MSG = 2013


def cstring(s):
    return s.encode() + b"\0"


def ping(port, timeout=3.0):
    body = (b"\x10" + cstring("ping") + struct.pack("<i", 1)
            + b"\x02" + cstring("$db") + struct.pack("<i", len("admin") + 1) + cstring("admin"))
    document = struct.pack("<i", len(body) + 5) + body + b"\0"
    message = struct.pack("<I", 0) + b"\0" + document  # flagBits, section kind 0 (body)
    header = struct.pack("<iiii", 16 + len(message), 1, 0, OP_MSG)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(header + message)
        reply = b""
        while len(reply) < 4 or len(reply) < struct.unpack("<i", reply[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                return False
            reply += chunk
    if struct.unpack("<i", reply[12:16])[0] != OP_MSG:
        return False
    document = reply[21:]  # header (16), flagBits (4), section kind (1)
    i = document.find(b"\x01ok\x00")  # ok is a double
    return i >= 0 and struct.unpack("<d", document[i + 4:i + 12])[0] == 1.0


if __name__ == "__main__":
    try:
        sys.exit(0 if ping(int(sys.argv[1])) else 1)
    except (OSError, ValueError, IndexError, struct.error):
        sys.exit(1)
