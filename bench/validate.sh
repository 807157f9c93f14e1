#!/usr/bin/env bash
# Validation benchmark (issue 3): `tyk-gitops validate` on a generated config
# repo of 10,000 classic APIs (~1.2 KB each) and 1,000 policies, pinned to one
# core, against what a config repo's CI would run by hand instead:
#   - jq empty over every file                  (syntax only)
#   - python3 json.load over every file         (syntax only)
#   - python3 jsonschema with our own schemas   (syntax + schema; no cross-file rules)
# tyk-gitops does syntax, schema and every cross-file rule.
#
# usage: bench/validate.sh [APIS] [POLICIES] [RUNS]   (needs: python3, jq, hyperfine, taskset;
#        python3 jsonschema for the last alternative: pip install jsonschema)
set -euo pipefail
cd "$(dirname "$0")/.."
APIS=${1:-10000}; POLICIES=${2:-1000}; RUNS=${3:-5}
cargo build --release --quiet
BIN=$PWD/target/release/tyk-gitops
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
python3 bench/gen-repo.py "$WORK/config" "$APIS" "$POLICIES"
DIR=$WORK/config
"$BIN" validate "$DIR" >/dev/null   # must be clean, or we would be timing error paths

cat > "$WORK/load.py" <<'PY'
import glob, json, sys
for f in glob.glob(sys.argv[1] + "/apps/*.json") + glob.glob(sys.argv[1] + "/policies/*.json"):
    with open(f, "rb") as fh:
        json.load(fh)
PY
cat > "$WORK/schema.py" <<'PY'
import glob, json, sys
from jsonschema import Draft202012Validator
root, schemas = sys.argv[1], sys.argv[2]
api = Draft202012Validator(json.load(open(schemas + "/api-definition.json")))
pol = Draft202012Validator(json.load(open(schemas + "/policy.json")))
bad = 0
for v, pattern in ((api, "/apps/*.json"), (pol, "/policies/*.json")):
    for f in glob.glob(root + pattern):
        with open(f, "rb") as fh:
            bad += sum(1 for _ in v.iter_errors(json.load(fh)))
sys.exit(1 if bad else 0)
PY

ONE="taskset -c 0"
cmds=(
  -n tyk-gitops "$ONE $BIN validate $DIR"
  -n "jq empty" "$ONE find $DIR/apps $DIR/policies -name '*.json' -exec jq empty {} +"
  -n "python json.load" "$ONE python3 $WORK/load.py $DIR"
)
if python3 -c 'import jsonschema' 2>/dev/null; then
  cmds+=(-n "python jsonschema" "$ONE python3 $WORK/schema.py $DIR $PWD/schemas")
fi
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$WORK/result.md" "${cmds[@]}"
echo
cat "$WORK/result.md"
FILES=$((APIS + POLICIES))
MEAN=$(hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/ours.json" -n tyk-gitops "$ONE $BIN validate $DIR" >/dev/null \
  && python3 -c "import json; print(json.load(open('$WORK/ours.json'))['results'][0]['mean'])")
python3 -c "m=$MEAN; print(f'tyk-gitops validate: {$FILES} files in {m*1000:.0f} ms on one core = {$FILES/m:,.0f} files/s ({$APIS/m:,.0f} definitions/s counting APIs only)')"
