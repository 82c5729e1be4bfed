#!/usr/bin/env bash
# Regenerates the README gallery (docs/gallery/*.gif, *.png) with the shipped default model.
# Every command below is what made the file next to it; run from the repository root:
#   bash docs/gallery/make.sh
set -euo pipefail
cargo build --release -q -p tessera-cli
T=target/release/tessera
G=docs/gallery
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# Inputs for the video-to-video modes: held-out (val split) shapes-world clips.
#   val-1-000000: "a black diamond moves left and a white circle stays still"
#   val-1-000003: "a cyan square moves up and right and three black diamonds orbit"
$T world sample --split val --count 4 --seed 1 -o "$W/world" --json > /dev/null
A=$W/world/videos/val-1-000000.mp4
B=$W/world/videos/val-1-000003.mp4

set -x
$T generate "a red ball bounces across a blue floor" -o $G/text-to-video.gif
$T generate "a big green square on a white background" --frames 1 -o $G/image.png
$T generate "the green square slides to the right" --image $G/image.png -o $G/image-to-video.gif
$T generate "a yellow circle moves left" --loop -o $G/loop.gif
$T extend "$A" --prompt "a black diamond moves left" --forward --seconds 2 -o $G/extend-forward.gif
$T extend "$A" --prompt "a black diamond moves left" --backward --seconds 2 -o $G/extend-backward.gif
$T connect "$A" "$B" --prompt "a cyan square and a black diamond" -o $G/connect.gif
$T edit "$B" --prompt "a red square moves up and right and three black diamonds orbit" --strength 0.45 -o $G/edit.gif
$T edit "$B" --prompt "" --strength 0 -o $G/edit-input.gif
