#!/usr/bin/env bash
# Where does a model decide an object's shape? Held-out one-object world clips go through
# `tessera edit` (SDEdit: noised to STRENGTH, then denoised with their own captions) and are
# scored against those captions. Where the score falls from the clips' own, the model redraws
# what the noise hid instead of keeping it (TRAINING.md, session 32).
#
#   scripts/edit-strength/run.sh TESSERA MODEL OUT [COUNT] [STRENGTHS...]
#   EDIT_FLAGS="--sampler euler" scripts/edit-strength/run.sh …   # sampler flags for every edit
#   SPLIT=train FRAMES=1 scripts/edit-strength/run.sh …   # stills of the scenes `train dit --objects 1` trains on
set -euo pipefail
tessera=$1 model=$2 out=$3 count=${4:-24}
shift $(( $# < 4 ? $# : 4 ))
strengths=("$@")
[ $# -gt 0 ] || strengths=(0.1 0.2 0.3 0.4 0.5 0.7 1.0)
"$tessera" world sample --split "${SPLIT:-test}" --frames "${FRAMES:-33}" --objects 1 --count "$count" \
  --seed 0 --out "$out/clips" --json > /dev/null
score() { # folder → "shape colour direction" means
  "$tessera" eval videos "$1" --captions "$1/captions.jsonl" --out "$1/report" --json > /dev/null
  jq -r '[.summary[] | select(.mean != null and (.metric == "shape" or .metric == "colour" or .metric == "direction"))
          | "\(.metric) \(.mean * 1000 | round / 1000)"] | join(", ")' "$1/report/report.json"
}
echo "clips themselves: $(score "$out/clips")"
for s in "${strengths[@]}"; do
  dir="$out/edit-$s"
  mkdir -p "$dir/videos"
  : > "$dir/captions.jsonl"
  while read -r line; do
    video=$(jq -r .video <<< "$line") caption=$(jq -r .caption <<< "$line")
    "$tessera" edit "$out/clips/$video" --prompt "$caption" --strength "$s" --no-extend \
      --seed 0 --model "$model" ${EDIT_FLAGS:-} -o "$dir/$video" > /dev/null
    jq -c '{video, caption}' <<< "$line" >> "$dir/captions.jsonl"
  done < "$out/clips/captions.jsonl"
  echo "strength $s: $(score "$dir")"
done
