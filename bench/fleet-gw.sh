#!/usr/bin/env bash
# Fleet with gateways (issue 15): N `tyk-gitops run --redis` replicas, each
# reloading and verifying its own gateway, sharing one redis-server and one
# git daemon (behind bench/inetd.py, as in bench/fleet.sh). The gateways are
# bench/tyk-stub.py, one process serving 2N of them: N for the replicas, N
# for the alternative. Like Tyk, a stub gateway runs a queued reload on the
# next tick of its own 1 s reload loop (RELOAD_INTERVAL=0: at once).
#   - ours: a one-file commit, SIGHUP to one replica (a webhook behind a
#     Service reaches one pod; the fleet notice reaches the rest). Two clocks
#     stop: when every replica's state.json says the commit is verified
#     (checked every 10 ms), and when `fleet wait --sha --min-replicas N`,
#     started at the push, exits 0 (what a CI step after a push would run).
#   - the alternative, alternated push by push: what a user scripts without
#     a tool, a CI step that reaches every node at once and runs
#     `git fetch --depth 1 && git reset --hard FETCH_HEAD && curl
#     /tyk/reload?block=true` there (no validation, no verification, not
#     atomic); the clock stops when the last node's reload returned.
# Pushes are 1.2 s apart (a replica spaces triggered syncs 1 s apart).
# usage: bench/fleet-gw.sh [REPLICAS=20] [PUSHES=12] [RELOAD_INTERVAL=1]
#   DEBUG_REPLICAS=3: that many replicas log at debug, for the stage timings.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}; PUSHES=${2:-12}; INTERVAL=${3:-1}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
BIN=${BIN:-$PWD/target/release/tyk-gitops}
WORK=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() { kill "${DAEMON:-}" "${REDIS:-}" "${STUB:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
python3 bench/gen-repo.py "$WORK/srv/config" 50 5 >/dev/null
GPORT=$(free_port); RPORT=$(free_port)
python3 bench/inetd.py "$GPORT" "$WORK/srv" "$WORK/daemon.log" & DAEMON=$!
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & REDIS=$!
echo bench-secret >"$WORK/gw-secret"
SPECS=()
for kind in ours alt; do
  for i in $(seq 0 $((N - 1))); do
    mkdir -p "$WORK/$kind-$i"; p=$(free_port); echo "$p" >"$WORK/$kind-$i.port"
    SPECS+=("$p:$WORK/$kind-$i")
  done
done
python3 bench/tyk-stub.py --reload-interval "$INTERVAL" bench-secret "${SPECS[@]}" & STUB=$!
sleep 0.5
[ -z "${KEEP:-}" ] || echo "work dir: $WORK"

python3 - "$BIN" "git://127.0.0.1:$GPORT/config" "redis://127.0.0.1:$RPORT" "$WORK" \
  "$N" "$PUSHES" "$INTERVAL" "${DEBUG_REPLICAS:-3}" <<'PY'
import datetime, json, os, signal, socket, subprocess, sys, time

BIN, URL, REDIS, WORK, N, PUSHES, INTERVAL, DEBUG = sys.argv[1:9]
N, PUSHES, DEBUG = int(N), int(PUSHES), int(DEBUG)
REPO = os.path.join(WORK, "srv", "config")
SECRET = os.path.join(WORK, "gw-secret")
LOGS = os.path.join(WORK, "logs")
os.makedirs(LOGS)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def port(kind, i):
    return int(open(os.path.join(WORK, f"{kind}-{i}.port")).read())


def git(*args, cwd=REPO):
    return subprocess.run(["git", "-C", cwd, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def push(n):
    path = os.path.join(REPO, "apps", "svc-00000.json")
    d = json.load(open(path))
    d["config_data"]["push"] = n
    json.dump(d, open(path, "w"), indent=2)
    git("commit", "-qam", f"push {n}")
    return git("rev-parse", "HEAD")


class Verified:
    """Reads a replica's state.json only when it changed."""
    def __init__(self, root):
        self.path, self.mtime, self.value = os.path.join(root, "state.json"), None, (None, None)

    def get(self):
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return (None, None)
        if mtime != self.mtime:
            try:
                with open(self.path) as f:
                    cur = json.load(f)["current"]
                self.value, self.mtime = (cur["sha"], cur.get("verified_at")), mtime
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return self.value


def start():
    procs, states = [], []
    for i in range(N):
        root = os.path.join(WORK, f"ours-{i}")
        args = [BIN, "--log-format", "json", "--log-level",
                "debug,hyper=info,hyper_util=info,reqwest=info" if i < DEBUG else "info",
                "run", "--repo", URL, "--root", root, "--listen", f"127.0.0.1:{free_port()}",
                "--period", "1h", "--replica-id", f"r{i}", "--redis", REDIS, "--cluster", "gw",
                "--gateway", f"http://127.0.0.1:{port('ours', i)}", "--gateway-secret-file", SECRET]
        log = open(os.path.join(LOGS, f"r{i}.log"), "w")
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log))
        states.append(Verified(root))
    return procs, states


def wait_verified(states, sha, t0, timeout=60):
    """Seconds from t0 until each replica's state.json says `sha` verified."""
    seen = [None] * len(states)
    while time.monotonic() - t0 < timeout:
        for i, s in enumerate(states):
            if seen[i] is None:
                got, verified_at = s.get()
                if got == sha and verified_at:
                    seen[i] = time.monotonic() - t0
        if all(x is not None for x in seen):
            return seen
        time.sleep(0.01)
    raise SystemExit(f"not verified on {sha[:12]} within {timeout}s: "
                     f"{sum(x is not None for x in seen)}/{len(states)}")


def fleet_wait(sha):
    return subprocess.Popen([BIN, "fleet", "wait", "--sha", sha, "--timeout", "60s",
                             "--min-replicas", str(N), "--redis", REDIS, "--cluster", "gw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def alt_setup():
    for i in range(N):
        root = os.path.join(WORK, f"alt-{i}")
        subprocess.run(["git", "clone", "-q", "--depth", "1", URL, os.path.join(root, "clone")],
                       check=True)
        os.symlink("clone", os.path.join(root, "current"))


def alt_round(sha, t0):
    script = ('git -C "$1" fetch -q --depth 1 origin HEAD && git -C "$1" reset -q --hard FETCH_HEAD'
              ' && curl -sf -o /dev/null -H "X-Tyk-Authorization: bench-secret"'
              ' "http://127.0.0.1:$2/tyk/reload?block=true"')
    procs = [subprocess.Popen(["sh", "-c", script, "sh", os.path.join(WORK, f"alt-{i}", "clone"),
                               str(port("alt", i))]) for i in range(N)]
    done = [None] * N
    while any(d is None for d in done):
        for i, p in enumerate(procs):
            if done[i] is None and p.poll() is not None:
                if p.returncode != 0:
                    raise SystemExit(f"alternative node {i} failed: exit {p.returncode}")
                done[i] = time.monotonic() - t0
        time.sleep(0.005)
    for i in range(N):
        assert git("rev-parse", "HEAD", cwd=os.path.join(WORK, f"alt-{i}", "clone")) == sha
    return done


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


procs, states = start()
try:
    head = git("rev-parse", "HEAD")
    wait_verified(states, head, time.monotonic(), 120)
    alt_setup()
    alt_round(head, time.monotonic())
    time.sleep(3)  # lease, subscriptions and the first heartbeats settled
    rows = []
    for k in range(PUSHES):
        sha = push(f"ours-{k}")
        t0, t0_wall = time.monotonic(), time.time()
        waiter = fleet_wait(sha)
        procs[k % N].send_signal(signal.SIGHUP)
        seen = wait_verified(states, sha, t0)
        if waiter.wait(timeout=60) != 0:
            raise SystemExit(f"fleet wait: exit {waiter.returncode}: {waiter.stderr.read()}")
        waited = time.monotonic() - t0
        time.sleep(1.2)
        sha_alt = push(f"alt-{k}")
        alt = alt_round(sha_alt, time.monotonic())
        rows.append({"push": k, "sha": sha, "t0": t0_wall, "first": min(seen),
                     "median": pct(seen, 50), "all": max(seen), "fleet_wait": waited,
                     "alt_all": max(alt), "alt_median": pct(alt, 50)})
        print(f"push {k}: ours first {min(seen)*1000:.0f} all {max(seen)*1000:.0f} "
              f"fleet-wait {waited*1000:.0f} ms; alternative all {max(alt)*1000:.0f} ms",
              flush=True)
        time.sleep(1.2)
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()

json.dump(rows, open(os.path.join(WORK, "rows.json"), "w"), indent=1)

# Where the time goes: each debug replica's first log line of each stage
# after each push, as milliseconds from the push.
STAGES = [("notice or SIGHUP", ("fleet notice: syncing", "SIGHUP: sync now")),
          ("resolved (ref listed, pack fetched)", ("resolved",)), ("fetched", ("fetched",)),
          ("validated", ("validated",)), ("revision written", ("revision written",)),
          ("published (state.json written)", ("published",)),
          ("reload asked", ("reloading gateway",)),
          ("reload answered (gateway tick)", ("reload answered",)),
          ("verified (state.json written)", ("gateway verified",))]
offsets = {name: [] for name, _ in STAGES}
for i in range(min(DEBUG, N)):
    events = []
    for line in open(os.path.join(LOGS, f"r{i}.log")):
        try:
            d = json.loads(line)
            events.append((datetime.datetime.fromisoformat(d["timestamp"]).timestamp(), d["message"]))
        except (ValueError, KeyError):
            continue
    for r in rows:
        window = [(t - r["t0"], m) for t, m in events if r["t0"] <= t < r["t0"] + 5]
        for name, messages in STAGES:
            hit = next((t for t, m in window if m in messages), None)
            if hit is not None:
                offsets[name].append(hit)
if any(offsets.values()):
    print(f"\nwhere the time goes ({min(DEBUG, N)} replicas at debug, {len(rows)} pushes): "
          "ms from the push, median and p90 over replicas and pushes")
    print("| stage | p50 | p90 |")
    print("|---|---:|---:|")
    for name, _ in STAGES:
        if offsets[name]:
            xs = offsets[name]
            print(f"| {name} | {pct(xs, 50)*1000:.0f} | {pct(xs, 90)*1000:.0f} |")
col = lambda key: [r[key] for r in rows]
print(f"\nmachine: {os.cpu_count()} CPUs, load average at the end {os.getloadavg()}; "
      f"{N} replicas, {N} gateways each side, reload interval {INTERVAL} s; 50 APIs, 5 policies")
print("| push -> | p50 | p90 | max |")
print("|---|---:|---:|---:|")
for label, key in [("first replica verified", "first"), ("every replica verified (state.json)", "all"),
                   ("`fleet wait --sha` exits 0", "fleet_wait"),
                   ("alternative: last node reloaded", "alt_all")]:
    xs = col(key)
    print(f"| {label} | {pct(xs, 50)*1000:.0f} ms | {pct(xs, 90)*1000:.0f} ms | {max(xs)*1000:.0f} ms |")
PY
