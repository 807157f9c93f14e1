#!/usr/bin/env python3
"""Stand-ins for Tyk gateways' control API and router, for the benchmarks
(the tests' emulator, tests/it/support/tyk.rs, is a Rust test module). One
process serves any number of gateways, one per PORT:ROOT pair, each with its
own loaded state, so a fleet benchmark does not pay for 20 interpreters on a
2-core machine. Each gateway serves what `tyk-gitops run` asks of one:
  /hello (health), /tyk/reload (with block=true: waits until the reload ran),
  /tyk/reload/group (queues, answers at once), /tyk/apis, /tyk/policies
  (X-Tyk-Authorization must be SECRET), and routes any other path to the
  loaded API with the longest listen path it starts with; a path no API
  owns gets the router's 404 (Tyk's handle404).
A reload reads ROOT/current/apps/*.json and ROOT/current/policies/*.json
as Tyk's file mode does (a file that does not parse is skipped). Like Tyk,
a gateway runs queued reloads only on the tick of its own reload loop
(`time.Tick(time.Second)` since the gateway started): a blocking reload
waits for the gateway's next tick. Each gateway's ticks start at a random
phase, as gateways started at different times do. --reload-interval 0
reloads at once instead (what a gateway with no reload loop would do).
A file is parsed again only when its inode, size or mtime changed (Tyk
reuses unchanged specs by checksum; tyk-gitops hard-links unchanged files).
usage: tyk-stub.py [--reload-interval SECONDS] SECRET PORT:ROOT [PORT:ROOT ...]
"""
import argparse
import glob
import json
import os
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_FOUND = b"Not Found"


class Gateway:
    def __init__(self, root, interval):
        self.root = root
        self.interval = interval
        self.phase = time.monotonic() - random.uniform(0, interval)
        self.apis, self.policies, self.routes = [], [], []
        self.parsed = {}  # path -> (stat key, parsed value or None)
        self.lock = threading.Condition()
        self.queued = 0  # reload requests taken so far
        self.done = 0  # requests covered by a finished reload
        self.reloads = 0
        self.load()
        if interval > 0:
            threading.Thread(target=self.reload_loop, daemon=True).start()

    def read(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self.parsed.get(path)
        if cached and cached[0] == key:
            return cached[1]
        try:
            with open(path, "rb") as f:
                value = json.load(f)
        except (OSError, ValueError):
            value = None
        self.parsed[path] = (key, value)
        return value

    def load(self):
        apis, policies, seen = [], [], set()
        current = os.path.join(self.root, "current")
        for path in sorted(glob.glob(os.path.join(current, "apps", "*.json"))):
            seen.add(path)
            d = self.read(path)
            if isinstance(d, dict) and d.get("api_id"):
                apis.append({"api_id": d["api_id"], "proxy": d.get("proxy", {})})
        for path in sorted(glob.glob(os.path.join(current, "policies", "*.json"))):
            seen.add(path)
            d = self.read(path)
            if isinstance(d, dict) and d.get("id"):
                policies.append({"id": d["id"]})
        self.parsed = {p: v for p, v in self.parsed.items() if p in seen}
        routes = sorted(((a["proxy"].get("listen_path") or "").rstrip("/") + "/", a["api_id"])
                        for a in apis if a["proxy"].get("listen_path"))
        routes.sort(key=lambda r: -len(r[0]))
        self.apis, self.policies, self.routes = apis, policies, routes
        self.reloads += 1

    def queue(self):
        """A reload request; returns its ticket."""
        with self.lock:
            self.queued += 1
            self.lock.notify_all()
            return self.queued

    def wait(self, ticket):
        with self.lock:
            while self.done < ticket:
                self.lock.wait()

    def reload_now(self):
        with self.lock:
            self.queued += 1
            ticket = self.queued
        self.load()
        with self.lock:
            self.done = max(self.done, ticket)
            self.lock.notify_all()

    def reload_loop(self):
        while True:
            with self.lock:
                while self.queued == self.done:
                    self.lock.wait()
            # The next tick of a ticker started at `phase`.
            now = time.monotonic()
            ticks = int((now - self.phase) // self.interval) + 1
            time.sleep(max(0.0, self.phase + ticks * self.interval - now))
            with self.lock:
                covered = self.queued
            self.load()
            with self.lock:
                self.done = covered
                self.lock.notify_all()

    def route(self, path):
        path = path if path.endswith("/") else path + "/"
        for prefix, api_id in self.routes:
            if path.startswith(prefix):
                return api_id
        return None


def handler(gw, secret):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Go's net/http (the gateway's) sets TCP_NODELAY: without it,
            # the body written after the headers waits for the client's
            # delayed ACK (~40 ms a request).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def answer(self, status, body):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path, _, query = self.path.partition("?")
            path = path.rstrip("/") or "/"
            if path == "/hello":
                return self.answer(200, {"status": "pass", "version": "v5.8.0"})
            if path.startswith("/tyk/"):
                if self.headers.get("X-Tyk-Authorization") != secret:
                    return self.answer(403, {"status": "error", "message": "Attempted administrative access with invalid or missing key!"})
                if path == "/tyk/reload/group":
                    gw.reload_now() if gw.interval <= 0 else gw.queue()
                    return self.answer(200, {"status": "ok", "message": ""})
                if path == "/tyk/reload":
                    if gw.interval <= 0:
                        gw.reload_now()
                    else:
                        ticket = gw.queue()
                        if "block=true" in query:
                            gw.wait(ticket)
                    return self.answer(200, {"status": "ok", "message": ""})
                if path == "/tyk/apis":
                    return self.answer(200, gw.apis)
                if path == "/tyk/policies":
                    return self.answer(200, gw.policies)
            api = gw.route(path)
            if api is None:
                return self.answer(404, NOT_FOUND)
            return self.answer(200, {"upstream": "ok", "api_id": api})

        do_POST = do_GET

        def log_message(self, *args):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reload-interval", type=float, default=1.0)
    p.add_argument("secret")
    p.add_argument("gateways", nargs="+", metavar="PORT:ROOT")
    args = p.parse_args()
    servers = []
    for spec in args.gateways:
        port, root = spec.split(":", 1)
        gw = Gateway(root, args.reload_interval)
        server = ThreadingHTTPServer(("127.0.0.1", int(port)), handler(gw, args.secret))
        server.daemon_threads = True
        servers.append(server)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
