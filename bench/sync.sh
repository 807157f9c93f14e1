#!/usr/bin/env bash
# Sync benchmark (issue 2): a generated repo of 10,000 APIs and 1,000
# policies served by `git daemon`; tyk-gitops cold sync alternated in one run
# with the hand-made alternative `git clone --depth 1 && cp -r`, plus peak RSS
# (GNU time) and a one-file incremental sync.
#
# usage: bench/sync.sh [APIS] [POLICIES] [ROUNDS]     (needs: git, python3, /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
APIS=${1:-10000}; POLICIES=${2:-1000}; ROUNDS=${3:-5}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
BIN=$PWD/target/release/tyk-gitops
WORK=$(mktemp -d); trap 'kill $DAEMON 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 bench/gen-repo.py "$WORK/srv/config" "$APIS" "$POLICIES"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
git daemon --export-all --reuseaddr --base-path="$WORK/srv" --listen=127.0.0.1 --port="$PORT" \
  --enable=upload-pack "$WORK/srv" >/dev/null 2>&1 & DAEMON=$!
sleep 0.5
URL=git://127.0.0.1:$PORT/config

ms() { python3 -c 'import sys,time; print(int(time.time()*1000))'; }
timed() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }

ours=(); theirs=()
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK/root" "$WORK/clone" "$WORK/copy"
  # Each side starts with no dirty pages of the other: tyk-gitops flushes
  # the filesystem once (syncfs) before publishing, and would otherwise pay
  # for writing back the previous round's clone and copy.
  sync
  ours+=("$(timed "$BIN" sync --repo "$URL" --root "$WORK/root")")
  sync
  theirs+=("$(timed sh -c "git clone -q --depth 1 '$URL' '$WORK/clone' && mkdir -p '$WORK/copy' && cp -r '$WORK/clone/apps' '$WORK/clone/policies' '$WORK/copy/'")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

rm -rf "$WORK/root"
/usr/bin/time -v "$BIN" sync --repo "$URL" --root "$WORK/root" 2>"$WORK/time.txt" >/dev/null
RSS=$(awk -F': ' '/Maximum resident/ {print $2}' "$WORK/time.txt")

# One-file changes on top of the synced root, one commit and one sync each.
# The first links every unchanged file from the cold revision; from the
# fourth revision on (past --keep-revisions 3) the revision about to be
# pruned is recycled: that is the steady state of a config repo.
incs=()
for r in $(seq 1 $((ROUNDS + 3))); do
  python3 - "$WORK/srv/config/apps/svc-00001.json" "$r" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p)); d["proxy"]["target_url"] = "http://changed%s:9090/" % sys.argv[2]
json.dump(d, open(p, "w"), indent=2)
PY
  git -C "$WORK/srv/config" -c user.name=b -c user.email=b@b commit -qam "one change $r"
  sync
  incs+=("$(timed "$BIN" sync --repo "$URL" --root "$WORK/root")")
done
FIRST=${incs[0]}
STEADY=("${incs[@]:3}")
NOOP=$(timed "$BIN" sync --repo "$URL" --root "$WORK/root")

echo "repo: $APIS APIs, $POLICIES policies; rounds: $ROUNDS (alternated)"
echo "tyk-gitops cold sync      median ${ROUNDS}: $(median "${ours[@]}") ms   (all: ${ours[*]})"
echo "git clone --depth1 + cp   median ${ROUNDS}: $(median "${theirs[@]}") ms   (all: ${theirs[*]})"
echo "tyk-gitops peak RSS (cold): $RSS KiB"
echo "tyk-gitops incremental (1 file changed), first after cold: $FIRST ms"
echo "tyk-gitops incremental (1 file changed), steady median ${#STEADY[@]}: $(median "${STEADY[@]}") ms   (all: ${STEADY[*]})"
echo "tyk-gitops no-change sync: $NOOP ms"
