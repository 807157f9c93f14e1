#!/usr/bin/env bash
# Sidecar footprint benchmark (issue 4): `tyk-gitops run` polling a git
# daemon with nothing to do, against the usual hand-made alternative, a
# `git fetch --depth 1` loop.
#   - RSS of `run` after 100 and after 1,000 no-change polls (growth = leak);
#   - CPU time per no-change poll (ours: utime+stime / polls; theirs: one
#     `git fetch --depth 1` + `git reset --hard` with nothing new);
#   - push-to-live latency with a 1 s period, alternated between the two.
#   - RSS of `run` with a gateway (bench/tyk-stub.py) after 10, 20 and 30 s
#     of 100 ms polls;
# usage: bench/run.sh [POLLS] [PUSHES]
#        GATEWAY_ONLY=1 [BIN2=other-binary] [ROUNDS=2] bench/run.sh
#   only the footprint with a gateway, for BIN (and BIN2, alternated with
#   it), ROUNDS times each, with the resident set by mapping at 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
POLLS=${1:-1000}; PUSHES=${2:-10}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
BIN=${BIN:-$PWD/target/release/tyk-gitops}
WORK=$(mktemp -d)
cleanup() { kill "$DAEMON" "${RUNPID:-}" "${LOOPPID:-}" "${STUBPID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
python3 bench/gen-repo.py "$WORK/srv/config" 50 5 >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
git daemon --export-all --reuseaddr --base-path="$WORK/srv" --listen=127.0.0.1 --port="$PORT" \
  --enable=upload-pack "$WORK/srv" >/dev/null 2>&1 & DAEMON=$!
sleep 0.5
URL=git://127.0.0.1:$PORT/config
LPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# 0 until the first no-op poll has made the series exist.
noops() { curl -s "http://127.0.0.1:$LPORT/metrics" | awk '/^tyk_gitops_syncs_total\{result="noop"\}/ {n=$2} END {print n+0}'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_noops() { while [ "$(noops || echo 0)" -lt "$1" ] 2>/dev/null; do sleep 0.2; done; }
# Resident KiB by file (or [heap], [anon], [stack]), largest first.
by_mapping() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / {n = split($6, p, "/"); cur = (NF >= 6) ? p[n] : "[anon]"}
       /^Rss:/ {kib[cur] += $2} END {for (k in kib) if (kib[k]) print kib[k], k}' "/proc/$1/smaps" |
    sort -rn | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1} END {print ""}'
}

# --- footprint with a gateway: 30 s of 100 ms polls -------------------------
# The gateway is bench/tyk-stub.py (the control API `run` uses, served from
# the files of `current`); the drift check runs at its default 60 s, so the
# polls only ask Git, as at rest in a pod. Sets GW_RSS, GW_ANON, GW_POLLS,
# GW_MAPS.
gateway_footprint() {
  local bin=$1
  GPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo bench-secret >"$WORK/gw-secret"
  rm -rf "$WORK/gw-root"
  python3 bench/tyk-stub.py bench-secret "$GPORT:$WORK/gw-root" >/dev/null 2>&1 & STUBPID=$!
  sleep 0.3
  "$bin" run --repo "$URL" --root "$WORK/gw-root" --listen "127.0.0.1:$LPORT" --period 100ms \
    --gateway "http://127.0.0.1:$GPORT" --gateway-secret-file "$WORK/gw-secret" \
    --log-level warn >/dev/null 2>&1 & RUNPID=$!
  until curl -sf "http://127.0.0.1:$LPORT/readyz" >/dev/null; do sleep 0.1; done
  GW_RSS=()
  for _ in 1 2 3; do sleep 10; GW_RSS+=("$(rss_kib $RUNPID)"); done
  GW_ANON=$(awk '/^Anonymous:/ {print $2}' "/proc/$RUNPID/smaps_rollup")
  GW_MAPS=$(by_mapping $RUNPID)
  GW_POLLS=$(noops)
  kill $RUNPID $STUBPID; wait $RUNPID 2>/dev/null || true; RUNPID=
}

if [ -n "${GATEWAY_ONLY:-}" ]; then
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for bin in "$BIN" ${BIN2:+"$BIN2"}; do
      gateway_footprint "$bin"
      echo "round $round, $bin: $GW_POLLS no-change polls; RSS after 10/20/30 s: ${GW_RSS[*]} KiB (anonymous $GW_ANON KiB; load $(cut -d' ' -f1-3 /proc/loadavg))"
      echo "  by mapping (KiB): $GW_MAPS"
    done
  done
  exit 0
fi

# --- footprint: 1,000 no-change polls at a 20 ms period -------------------
"$BIN" run --repo "$URL" --root "$WORK/root" --listen "127.0.0.1:$LPORT" --period 20ms \
  --log-level warn >/dev/null 2>&1 & RUNPID=$!
until curl -sf "http://127.0.0.1:$LPORT/readyz" >/dev/null; do sleep 0.1; done
wait_noops 100
RSS100=$(rss_kib $RUNPID); T100=$(cpu_ticks $RUNPID); N100=$(noops)
wait_noops "$POLLS"
RSS1000=$(rss_kib $RUNPID); T1000=$(cpu_ticks $RUNPID); N1000=$(noops)
HZ=$(getconf CLK_TCK)
OURS_CPU_MS=$(python3 -c "print(round(($T1000-$T100)*1000/$HZ/($N1000-$N100), 3))")
kill $RUNPID; wait $RUNPID 2>/dev/null || true; RUNPID=

# --- footprint with a gateway ------------------------------------------------
gateway_footprint "$BIN"

git clone -q --depth 1 "$URL" "$WORK/clone"
START=$(python3 -c 'import os; t=os.times(); print(t.children_user+t.children_system)')
python3 - "$WORK/clone" 100 > "$WORK/git-cpu.txt" <<'PY'
import os, subprocess, sys
d, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    subprocess.run(["git", "-C", d, "fetch", "-q", "--depth", "1", "origin", "main"], check=True)
    subprocess.run(["git", "-C", d, "reset", "-q", "--hard", "origin/main"], check=True)
t = os.times()
print(round((t.children_user + t.children_system) * 1000 / n, 3))
PY
THEIRS_CPU_MS=$(cat "$WORK/git-cpu.txt")
/usr/bin/time -v git -C "$WORK/clone" fetch -q --depth 1 origin main 2>"$WORK/gt.txt"
GIT_RSS=$(awk -F': ' '/Maximum resident/ {print $2}' "$WORK/gt.txt")

# --- push-to-live latency, period 1 s, alternated --------------------------
rm -rf "$WORK/root"
"$BIN" run --repo "$URL" --root "$WORK/root" --listen "127.0.0.1:$LPORT" --period 1s \
  --log-level warn >/dev/null 2>&1 & RUNPID=$!
until curl -sf "http://127.0.0.1:$LPORT/readyz" >/dev/null; do sleep 0.1; done
( while true; do git -C "$WORK/clone" fetch -q --depth 1 origin main 2>/dev/null &&
    git -C "$WORK/clone" reset -q --hard origin/main; sleep 1; done ) & LOOPPID=$!
ours=(); theirs=()
for i in $(seq 1 "$PUSHES"); do
  f="apps/push-$i.json"
  python3 -c "import json,sys; json.dump({'name':'p','api_id':'push-$i','org_id':'default','use_keyless':True,'version_data':{'not_versioned':True,'versions':{'Default':{'name':'Default'}}},'proxy':{'listen_path':'/push-$i/','target_url':'http://u:8080/'}}, open('$WORK/srv/config/$f','w'))"
  git -C "$WORK/srv/config" add -A && git -C "$WORK/srv/config" -c user.name=b -c user.email=b@b commit -qm "push $i"
  t0=$(date +%s%N); a=""; b=""
  while [ -z "$a" ] || [ -z "$b" ]; do
    [ -z "$a" ] && [ -f "$WORK/root/current/$f" ] && a=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ -z "$b" ] && [ -f "$WORK/clone/$f" ] && b=$(( ($(date +%s%N) - t0) / 1000000 ))
    sleep 0.01
  done
  ours+=("$a"); theirs+=("$b")
done
pct() { local p=$1; shift; printf '%s\n' "$@" | sort -n | awk -v p="$p" '{a[NR]=$1} END {i=int((NR-1)*p/100)+1; print a[i]}'; }

echo "no-change polls: $N100 → $N1000"
echo "tyk-gitops run RSS after $N100 polls: $RSS100 KiB; after $N1000 polls: $RSS1000 KiB"
echo "with a gateway, 100 ms polls ($GW_POLLS no-change): RSS after 10/20/30 s: ${GW_RSS[*]} KiB (anonymous at 30 s: $GW_ANON KiB)"
echo "  by mapping at 30 s (KiB): $GW_MAPS"
echo "CPU per no-change poll: tyk-gitops $OURS_CPU_MS ms; git fetch --depth 1 + reset: $THEIRS_CPU_MS ms"
echo "git fetch --depth 1 peak RSS (one no-change fetch): $GIT_RSS KiB"
echo "push-to-live, period 1 s, $PUSHES pushes: tyk-gitops p50 $(pct 50 "${ours[@]}") ms p99 $(pct 99 "${ours[@]}") ms; git loop p50 $(pct 50 "${theirs[@]}") ms p99 $(pct 99 "${theirs[@]}") ms"
