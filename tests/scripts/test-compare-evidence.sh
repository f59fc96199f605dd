#!/usr/bin/env bash
# compare.py's evidence (docs/quantization.md, --evidence-dir), end to end on the smoke profile's one
# bnn row: a finished run is archived; with its run directory gone the row is shown from the evidence
# and not trained again; evidence under another key is reported stale; a run directory begun under
# another key is refused.
#   tests/scripts/test-compare-evidence.sh <source dir> <scratch dir>
set -euo pipefail
src=$1
scratch=$2
rm -rf "$scratch" && mkdir -p "$scratch"
compare=(python3 "$src/scripts/compare.py" --profile smoke --recipes bnn --regimes subset --runs-dir "$scratch")
base=$scratch/compare-smoke
fail() { echo "FAIL: $*" >&2; exit 1; }

"${compare[@]}" > "$scratch/first.log" 2>&1 || { cat "$scratch/first.log"; fail "the first comparison failed"; }
for f in config.toml metrics.jsonl provenance.jsonl facts.json; do
  [ -s "$base/evidence/bnn-subset/$f" ] || fail "evidence lacks $f"
done
row=$(grep '^| bnn |' "$scratch/first.log") || fail "no bnn row in the table"

rm -rf "$base/bnn-subset" "$base"/bnn-subset.*
"${compare[@]}" > "$scratch/second.log" 2>&1 || { cat "$scratch/second.log"; fail "the comparison from evidence failed"; }
! grep -q 'train --out .*bnn-subset' "$scratch/second.log" || fail "a row with current evidence was trained again"
[ "$(grep '^| bnn |' "$scratch/second.log")" = "$row" ] || fail "the row from evidence differs from the trained one"

python3 - "$base/evidence/bnn-subset/facts.json" <<'PY'
import json, sys
facts = json.load(open(sys.argv[1]))
facts["key"]["recipe_sha256"] = "0" * 64
json.dump(facts, open(sys.argv[1], "w"))
PY
"${compare[@]}" --report > "$scratch/stale.log" 2>&1 || { cat "$scratch/stale.log"; fail "--report failed on stale evidence"; }
grep -q 'evidence/bnn-subset was made from another recipe' "$scratch/stale.log" || fail "stale evidence not reported"
grep -q '^| bnn | subset | — .*not trained yet' "$scratch/stale.log" || fail "a row with stale evidence was shown as trained"

mkdir -p "$base/bnn-subset" && echo '{"recipe_sha256": "other"}' > "$base/bnn-subset/key.json"
if "${compare[@]}" > "$scratch/refused.log" 2>&1; then fail "a run directory begun under another key was reused"; fi
grep -q 'bnn-subset was begun from another recipe' "$scratch/refused.log" || { cat "$scratch/refused.log"; fail "the refusal does not say why"; }
echo "compare.py evidence: archived, reused, stale and refused as documented"
