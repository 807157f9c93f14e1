#!/usr/bin/env bash
# Fleet benchmark (issue 5): N `tyk-gitops run --redis` replicas on this
# machine, sharing one redis-server and one git daemon.
#   - push-to-converged latency: a commit, then SIGHUP to one replica (as a
#     webhook behind a Service reaches one pod); the clock stops when every
#     replica's state.json names the new sha. Replicas run sync-only (no
#     gateway, --reload none): this measures fan-out + fetch + apply, not a
#     gateway's reload. --period 1h, so only the fleet notice explains it.
#   - Git requests per minute (ref listings seen by git daemon) against
#     replica count, with the poll lease (--redis) and without.
# usage: bench/fleet.sh [PUSHES] [WINDOW_SECONDS] [SIZES]   (SIZES e.g. "10 50")
set -euo pipefail
cd "$(dirname "$0")/.."
PUSHES=${1:-20}; WINDOW=${2:-20}; SIZES=${3:-"10 50"}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
BIN=$PWD/target/release/tyk-gitops
WORK=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() { kill "${DAEMON:-}" "${REDIS:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
python3 bench/gen-repo.py "$WORK/srv/config" 50 5 >/dev/null
GPORT=$(free_port); RPORT=$(free_port)
# git daemon behind a listener with a real backlog (bench/inetd.py says why).
python3 bench/inetd.py "$GPORT" "$WORK/srv" "$WORK/daemon.log" & DAEMON=$!
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & REDIS=$!
sleep 0.5

python3 - "$BIN" "git://127.0.0.1:$GPORT/config" "redis://127.0.0.1:$RPORT" "$WORK" \
  "$PUSHES" "$WINDOW" "$SIZES" <<'PY'
import json, os, signal, socket, subprocess, sys, time

BIN, URL, REDIS, WORK, PUSHES, WINDOW, SIZES = sys.argv[1:8]
PUSHES, WINDOW = int(PUSHES), int(WINDOW)
SIZES = [int(s) for s in SIZES.split()]
REPO = os.path.join(WORK, "srv", "config")
LOG = os.path.join(WORK, "daemon.log")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def push(n):
    path = os.path.join(REPO, "apps", "svc-00000.json")
    d = json.load(open(path))
    d["config_data"]["push"] = n
    json.dump(d, open(path, "w"), indent=2)
    git("commit", "-qam", f"push {n}")
    return git("rev-parse", "HEAD")


def current(root):
    try:
        with open(os.path.join(root, "state.json")) as f:
            return json.load(f)["current"]["sha"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def start(n, period, redis, cluster):
    procs, roots = [], []
    for i in range(n):
        root = os.path.join(WORK, f"{cluster}-{i}")
        args = [BIN, "run", "--repo", URL, "--root", root, "--listen",
                f"127.0.0.1:{free_port()}", "--period", period, "--replica-id", f"r{i}",
                "--log-level", "warn"]
        if redis:
            args += ["--redis", REDIS, "--cluster", cluster]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        roots.append(root)
    return procs, roots


def stop(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_all(roots, sha, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(current(r) == sha for r in roots):
            return time.monotonic() - t0
        time.sleep(0.005)
    raise SystemExit(f"not converged on {sha[:12]} within {timeout}s: "
                     f"{sum(current(r) == sha for r in roots)}/{len(roots)}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


results = {"latency": {}, "git_rpm": {}}
# --- push-to-converged latency ---------------------------------------------
for n in SIZES:
    procs, roots = start(n, "1h", True, f"lat{n}")
    try:
        wait_all(roots, git("rev-parse", "HEAD"))
        time.sleep(3)  # lease and subscriptions settled
        lat = []
        for k in range(PUSHES):
            sha = push(f"{n}-{k}")
            t0 = time.monotonic()
            procs[k % n].send_signal(signal.SIGHUP)
            wait_all(roots, sha, 60)
            lat.append(time.monotonic() - t0)
            # Pushes a second apart at least: a replica spaces the syncs it
            # makes for notices and webhooks MIN_TRIGGERED_INTERVAL (1 s)
            # apart (coalescing a burst into one), so pushes 0.3 s apart
            # measured that bound (~0.7 s), not the fan-out.
            time.sleep(1.2)
        w = subprocess.run([BIN, "fleet", "wait", "--sha", sha, "--timeout", "30s",
                            "--min-replicas", str(n), "--redis", REDIS, "--cluster", f"lat{n}"],
                           capture_output=True, text=True)
        results["latency"][n] = {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
                                 "pushes": len(lat), "fleet_wait_exit": w.returncode}
    finally:
        stop(procs)

# --- Git ref listings per minute ---------------------------------------------
def listings():
    with open(LOG, errors="replace") as f:
        return sum("Request upload-pack" in line for line in f)

for n in sorted(set([1] + SIZES)):
    for redis in (False, True):
        procs, roots = start(n, "1s", redis, f"rpm{n}{'r' if redis else ''}")
        try:
            wait_all(roots, git("rev-parse", "HEAD"))
            time.sleep(4)
            before = listings()
            time.sleep(WINDOW)
            results["git_rpm"].setdefault(n, {})["leased" if redis else "alone"] = \
                round((listings() - before) * 60 / WINDOW)
        finally:
            stop(procs)

print(f"machine: {os.cpu_count()} CPUs; repo: 50 APIs, 5 policies; replicas sync-only (--reload none)")
print("\npush-to-converged (SIGHUP to one replica -> every state.json on the sha), period 1h")
print("| replicas | pushes | p50 | p99 | max | fleet wait |")
print("|---:|---:|---:|---:|---:|---|")
for n, r in results["latency"].items():
    print(f"| {n} | {r['pushes']} | {r['p50']*1000:.0f} ms | {r['p99']*1000:.0f} ms | "
          f"{r['max']*1000:.0f} ms | exit {r['fleet_wait_exit']} |")
print(f"\nGit ref listings per minute, --period 1s, over {WINDOW}s")
print("| replicas | without Redis | with the poll lease |")
print("|---:|---:|---:|")
for n, r in results["git_rpm"].items():
    print(f"| {n} | {r['alone']} | {r['leased']} |")
PY
