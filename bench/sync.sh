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
BIN=${BIN:-$PWD/target/release/tyk-gitops}
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
# SKIP_COLD=1: only the incremental rows.
[ -n "${SKIP_COLD:-}" ] && ours=(0) && theirs=(1)
# Each round writes into new folders; nothing is deleted until the end. On
# an ext4 without a journal (this VM's), creating files within 60 s of
# deleting thousands makes the kernel skip each recently deleted inode
# (`find_inode_bit` -> `recently_deleted`) on every create: deleting the
# previous round's 33,000 files first made either side 2-4x slower, by
# where its folders landed, not by what it did.
for r in $(seq 1 "$([ -n "${SKIP_COLD:-}" ] && echo 0 || echo "$ROUNDS")"); do
  # Each side starts with no dirty pages of the other: tyk-gitops flushes
  # the filesystem once (syncfs) before publishing, and would otherwise pay
  # for writing back the previous round's clone and copy.
  sync
  ours+=("$(timed "$BIN" sync --repo "$URL" --root "$WORK/cold/root-$r")")
  sync
  theirs+=("$(timed sh -c "git clone -q --depth 1 '$URL' '$WORK/cold/clone-$r' && mkdir -p '$WORK/cold/copy-$r' && cp -r '$WORK/cold/clone-$r/apps' '$WORK/cold/clone-$r/policies' '$WORK/cold/copy-$r/'")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

[ -n "${SKIP_COLD:-}" ] || /usr/bin/time -v "$BIN" sync --repo "$URL" --root "$WORK/root" 2>"$WORK/time.txt" >/dev/null
RSS=$(awk -F": " "/Maximum resident/ {print \$2}" "$WORK/time.txt" 2>/dev/null || true)

# One-file changes, each alternated with a bare `git fetch --depth 1` of
# the same commit into a separate clone (the transport's floor):
#   first:  a new `sync` process right after a cold one (ROUNDS fresh roots);
#   steady: one `sync` process per commit on one root, from the fourth on
#           (past --keep-revisions 3 the revision about to be pruned is
#           recycled): the steady state of a config repo;
#   run:    the same change inside `tyk-gitops run` (SIGHUP), steady state.
python3 bench/incremental.py first "$BIN" "$URL" "$WORK/srv/config" "$WORK" "$ROUNDS" >"$WORK/first.txt"
python3 bench/incremental.py steady "$BIN" "$URL" "$WORK/srv/config" "$WORK" "$ROUNDS" >"$WORK/steady.txt"
python3 bench/incremental.py run "$BIN" "$URL" "$WORK/srv/config" "$WORK" "$ROUNDS" >"$WORK/inrun.txt"
row() { # label file
  local o t; o=$(sed -n 's/^ours: //p' "$2"); t=$(sed -n 's/^fetch: //p' "$2")
  # shellcheck disable=SC2086
  local mo mt; mo=$(median $o); mt=$(median $t)
  echo "$1: median $mo ms vs git fetch --depth 1 $mt ms = $(python3 -c "print(round($mo/$mt, 2))")x   (ours: $o; fetch: $t)"
}
NOOP=$(timed "$BIN" sync --repo "$URL" --root "$WORK/inc-root")

echo "repo: $APIS APIs, $POLICIES policies; rounds: $ROUNDS (alternated)"
echo "tyk-gitops cold sync      median ${ROUNDS}: $(median "${ours[@]}") ms   (all: ${ours[*]})"
echo "cold ratio: $(python3 -c "print(round($(median "${ours[@]}")/$(median "${theirs[@]}"), 2))")x"
echo "git clone --depth1 + cp   median ${ROUNDS}: $(median "${theirs[@]}") ms   (all: ${theirs[*]})"
echo "tyk-gitops peak RSS (cold): $RSS KiB"
row "one file changed, new sync process, first after cold" "$WORK/first.txt"
row "one file changed, new sync process, steady          " "$WORK/steady.txt"
row "one file changed, inside run (SIGHUP), steady       " "$WORK/inrun.txt"
echo "tyk-gitops no-change sync: $NOOP ms"
