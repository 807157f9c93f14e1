#!/usr/bin/env python3
"""Serves `git daemon --inetd` on a TCP port with a listen backlog of 1024.

`git daemon --listen` calls listen(2) with a backlog of 5: when a fleet of
replicas connects at the same instant (they all react to one notice), the
kernel drops the SYNs past the backlog and each client retries after 1 s,
then 3 s, then 7 s. Real Git hosts do not behave like that, so the fleet
benchmark serves Git through this instead: one `git daemon --inetd` per
connection, as inetd or systemd socket activation would run it.

usage: inetd.py PORT BASE_PATH LOG_FILE
"""
import socket
import subprocess
import sys
import threading

port, base, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(1024)
log_file = open(log, "ab", buffering=0)


def serve(conn):
    with conn:
        proc = subprocess.Popen(
            ["git", "daemon", "--inetd", "--verbose", "--log-destination=stderr", "--export-all",
             f"--base-path={base}", "--enable=upload-pack", base],
            stdin=conn.fileno(), stdout=conn.fileno(), stderr=log_file)
        proc.wait()


while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
