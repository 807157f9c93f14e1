#!/usr/bin/env python3
"""One-file changes, each measured against the transport's floor: a bare
`git fetch --depth 1` of the same commit into a separate clone, alternated
round by round (which goes first swaps every round; `sync(1)` runs before
each timed step so neither pays for the other's dirty pages).

usage: incremental.py MODE BIN URL SRC WORK ROUNDS
  MODE first   ROUNDS times: a fresh root (untimed cold sync) and a fresh
               clone, one commit, then the first `tyk-gitops sync` after the
               cold one and the fetch;
  MODE steady  one root: ROUNDS+3 commits with one `tyk-gitops sync` process
               each; the first 3 (until the revision about to be pruned can
               be recycled) are left out;
  MODE run     one `tyk-gitops run --period 1h`: after each commit, SIGHUP,
               timed until `current` names the commit (polled every 1 ms);
               the first 3 left out as for steady.
Prints one line: `ours: <ms ...>` and one `fetch: <ms ...>`.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

mode, BIN, URL, SRC, WORK, ROUNDS = sys.argv[1:7]
ROUNDS = int(ROUNDS)
ROOT, CLONE = os.path.join(WORK, "inc-root"), os.path.join(WORK, "inc-clone")
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
counter = [0]


def commit():
    counter[0] += 1
    p = os.path.join(SRC, "apps", "svc-00001.json")
    d = json.load(open(p))
    d["proxy"]["target_url"] = "http://changed-%s-%d:9090/" % (mode, counter[0])
    json.dump(d, open(p, "w"), indent=2)
    subprocess.run(["git", "-C", SRC, "-c", "user.name=b", "-c", "user.email=b@b",
                    "commit", "-qam", "one change"], check=True)
    return subprocess.run(["git", "-C", SRC, "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def timed(argv):
    os.sync()
    t = time.perf_counter()
    subprocess.run(argv, check=True, **quiet)
    return round((time.perf_counter() - t) * 1000)


def fetch():
    return timed(["git", "-C", CLONE, "fetch", "-q", "--depth", "1", "origin"])


def fresh_clone():
    shutil.rmtree(CLONE, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--bare", URL, CLONE], check=True)
    subprocess.run(["git", "-C", CLONE, "config", "remote.origin.fetch",
                    "+refs/heads/*:refs/remotes/origin/*"], check=True)


def sync_once():
    return timed([BIN, "sync", "--repo", URL, "--root", ROOT])


def pair(i, ours):
    if i % 2 == 0:
        a = ours(); b = fetch()
    else:
        b = fetch(); a = ours()
    return a, b


ours_all, theirs_all = [], []
if mode == "first":
    for i in range(ROUNDS):
        shutil.rmtree(ROOT, ignore_errors=True)
        subprocess.run([BIN, "sync", "--repo", URL, "--root", ROOT], check=True, **quiet)
        fresh_clone()
        commit()
        a, b = pair(i, sync_once)
        ours_all.append(a); theirs_all.append(b)
elif mode == "steady":
    fresh_clone()
    for i in range(ROUNDS + 3):
        commit()
        a, b = pair(i, sync_once)
        ours_all.append(a); theirs_all.append(b)
    ours_all, theirs_all = ours_all[3:], theirs_all[3:]
elif mode == "run":
    fresh_clone()
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    shutil.rmtree(ROOT, ignore_errors=True)
    proc = subprocess.Popen([BIN, "run", "--repo", URL, "--root", ROOT, "--period", "1h",
                             "--listen", "127.0.0.1:%d" % port, "--log-level", "warn"], **quiet)
    try:
        while not os.path.islink(os.path.join(ROOT, "current")):
            time.sleep(0.05)
        time.sleep(1)

        def hup_until(sha):
            def go():
                os.sync()
                t = time.perf_counter()
                proc.send_signal(signal.SIGHUP)
                link = os.path.join(ROOT, "current")
                while not os.path.basename(os.readlink(link)).startswith(sha):
                    time.sleep(0.001)
                return round((time.perf_counter() - t) * 1000)
            return go
        for i in range(ROUNDS + 3):
            sha = commit()
            a, b = pair(i, hup_until(sha))
            ours_all.append(a); theirs_all.append(b)
            time.sleep(0.3)  # the prune after publishing
        ours_all, theirs_all = ours_all[3:], theirs_all[3:]
    finally:
        proc.terminate(); proc.wait()
print("ours:", *ours_all)
print("fetch:", *theirs_all)
