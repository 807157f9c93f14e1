#!/usr/bin/env python3
"""A tiny stand-in for a Tyk gateway's control API, for bench/run.sh's
footprint row (the tests' emulator, tests/it/support/tyk.rs, is a Rust test
module). It serves what `tyk-gitops run` asks of a gateway, from the files
of ROOT/current as a reload would read them:
  /hello (health), /tyk/reload, /tyk/apis, /tyk/policies (X-Tyk-Authorization
  must be SECRET); the routing probe's unrouted path gets a 404, any other
  path a 200 (every listen path is "routed").
usage: tyk-stub.py PORT ROOT SECRET
"""
import glob
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, root, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
loaded = {"apis": [], "policies": []}


def reload():
    apis, policies = [], []
    for path in sorted(glob.glob(os.path.join(root, "current", "apps", "*.json"))):
        try:
            d = json.load(open(path))
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("api_id"):
            apis.append({"api_id": d["api_id"], "proxy": d.get("proxy", {})})
    for path in sorted(glob.glob(os.path.join(root, "current", "policies", "*.json"))):
        try:
            d = json.load(open(path))
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("id"):
            policies.append({"id": d["id"]})
    loaded["apis"], loaded["policies"] = apis, policies


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/hello":
            return self.answer(200, {"status": "pass", "version": "v5.8.0"})
        if path.startswith("/tyk/"):
            if self.headers.get("X-Tyk-Authorization") != secret:
                return self.answer(403, {"status": "error", "message": "Attempted administrative access with invalid or missing key!"})
            if path.startswith("/tyk/reload"):
                reload()
                return self.answer(200, {"status": "ok", "message": ""})
            if path == "/tyk/apis":
                return self.answer(200, loaded["apis"])
            if path == "/tyk/policies":
                return self.answer(200, loaded["policies"])
        if path.startswith("/tyk-gitops-probe-of-an-unrouted-path"):
            return self.answer(404, {"error": "Not Found"})
        return self.answer(200, {"upstream": "ok"})

    do_POST = do_GET

    def log_message(self, *args):
        pass


reload()
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
