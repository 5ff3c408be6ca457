#!/usr/bin/env bash
# The baseline table: the default embedded model, greedy, on the math benchmarks, with limits
# chosen so the whole table runs in well under an hour on a 2-core CPU machine.
#   bash eval/baseline.sh [OUT_DIR]   then   reasoner report OUT_DIR/* --out OUT_DIR/report
set -euo pipefail
out=${1:-results/baseline}
run() {  # benchmark limit max_tokens
  reasoner eval "$1" --limit "$2" --max-tokens "$3" --no-progress --out "$out/$1"
}
run gsm8k 200 512
run svamp 200 512
run asdiv 200 512
run math500 100 1024
run amc23 40 1024
run aime24 30 1024
