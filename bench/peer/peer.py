"""PyTorch/diffusers side of the Tessera benchmark (issue 8).

Reads what `tessera-bench dit vae --export DIR` wrote (config, weights and inputs/outputs of
each model), loads the same weights into diffusers' `WanTransformer3DModel` and
`AutoencoderKLWan`, checks the outputs agree with Tessera's (max |diff| <= 1e-4), times the same
work with the same thread count (median of --runs after one warm-up) and prints the ratio
Tessera time / PyTorch time for every row of Tessera's JSON.

Run through bench/peer/run.sh, or by hand:
  python bench/peer/peer.py DIR --threads 2 --runs 5 [--tessera-json DIR/tessera.json]
Tested with torch 2.15.0, diffusers 0.42.1.
"""

import argparse
import json
import os
import statistics
import sys
import time

# OpenMP threads that sleep instead of spinning while they wait: on shared cores a spinning
# team stalls whenever one member is descheduled (measured: DiT forward 1.1-1.5 s passive vs
# 1.9-5.4 s active on 2 shared cores). Tessera avoids the same trap (candle's spinning pool is
# off), so this is the fair peer. Must be set before torch loads OpenMP; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from safetensors.torch import load_file

TOLERANCE = 1e-4


def median_ms(runs, fn):
    fn()
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def agree(name, got, want):
    diff = (got.float() - want.float()).abs().max().item()
    scale = want.abs().max().item()
    ok = diff <= TOLERANCE
    print(f"  check {name}: max|diff| {diff:.2e} (max|ref| {scale:.2f}) {'ok' if ok else 'FAIL'}")
    return ok


def load_strict(model, path):
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"{path}: missing {missing}, unexpected {unexpected} (configs disagree?)")


def bench_dit(folder, runs):
    from diffusers import WanTransformer3DModel

    cfg = json.load(open(os.path.join(folder, "config.json")))
    model = WanTransformer3DModel(
        patch_size=tuple(cfg["patch_size"]),
        num_attention_heads=cfg["num_attention_heads"],
        attention_head_dim=cfg["attention_head_dim"],
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        text_dim=cfg["text_dim"],
        freq_dim=cfg["freq_dim"],
        ffn_dim=cfg["ffn_dim"],
        num_layers=cfg["num_layers"],
        cross_attn_norm=cfg["cross_attn_norm"],
        qk_norm=cfg["qk_norm"],
        eps=cfg["eps"],
    )
    load_strict(model, os.path.join(folder, "weights.safetensors"))
    io = load_file(os.path.join(folder, "io.safetensors"))
    x, t, text, target = io["latents"], io["timesteps"], io["text"], io["target"]

    model.eval()
    with torch.no_grad():
        ok = agree("dit forward", model(x, t, text, return_dict=False)[0], io["output"])

        def forward():
            model(x, t, text, return_dict=False)

        fwd = median_ms(runs, forward)

    model.train()
    # torch's AdamW defaults equal candle's ParamsAdamW::default().
    opt = torch.optim.AdamW(model.parameters())

    def step():
        out = model(x, t, text, return_dict=False)[0]
        loss = (out - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = median_ms(runs, step)
    return ok, {"dit forward": fwd, "dit train step": train}


def bench_vae(folder, runs, big_runs):
    from diffusers import AutoencoderKLWan

    cfg = json.load(open(os.path.join(folder, "config.json")))
    keys = [
        "base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales",
        "temperal_downsample", "latents_mean", "latents_std", "is_residual", "in_channels",
        "out_channels", "patch_size",
    ]
    model = AutoencoderKLWan(**{k: cfg[k] for k in keys if k in cfg}).eval()
    load_strict(model, os.path.join(folder, "weights.safetensors"))
    ok, times = True, {}
    for name in sorted(os.listdir(folder)):
        if not name.startswith("io_"):
            continue
        shape = name[len("io_"):-len(".safetensors")]  # "33x64x64"
        f, h, w = (int(v) for v in shape.split("x"))
        n = big_runs if h * w > 128 * 128 else runs
        io = load_file(os.path.join(folder, name))
        with torch.no_grad():
            mean = model.encode(io["input"]).latent_dist.mean
            ok &= agree(f"vae encode {shape}", mean, io["mean"])
            ok &= agree(f"vae decode {shape}", model.decode(io["mean"]).sample, io["decoded"])
            label = f"{f}×{h}×{w}"
            times[f"vae encode {label}"] = median_ms(n, lambda: model.encode(io["input"]))
            times[f"vae decode {label}"] = median_ms(n, lambda: model.decode(io["mean"]))
    return ok, times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("export", help="folder given to tessera-bench --export")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--big-runs", type=int, default=5)
    p.add_argument("--tessera-json", help="tessera-bench --json output (default EXPORT/tessera.json)")
    p.add_argument("--out", help="write the peer times and ratios as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")

    tessera_json = args.tessera_json or os.path.join(args.export, "tessera.json")
    rows = json.load(open(tessera_json))["rows"] if os.path.exists(tessera_json) else []
    ran = {r["suite"] for r in rows}
    ok, peer = True, {}
    for suite, fn in [
        ("dit", lambda d: bench_dit(d, args.runs)),
        ("vae", lambda d: bench_vae(d, args.runs, args.big_runs)),
    ]:
        folder = os.path.join(args.export, suite)
        if os.path.isdir(folder) and (not rows or suite in ran):
            print(f"{suite}: {folder}")
            good, times = fn(folder)
            ok &= good
            peer.update(times)

    table = []
    print(f"\n{'measurement':<28} {'tessera ms':>11} {'pytorch ms':>11} {'ratio':>7}")
    for r in rows:
        if r["name"] in peer:
            ratio = r["median_ms"] / peer[r["name"]]
            table.append({"name": r["name"], "tessera_ms": r["median_ms"],
                          "pytorch_ms": peer[r["name"]], "ratio": ratio})
            print(f"{r['name']:<28} {r['median_ms']:>11.1f} {peer[r['name']]:>11.1f} {ratio:>7.2f}")
    for name, ms in peer.items():
        if not any(t["name"] == name for t in table):
            print(f"{name:<28} {'-':>11} {ms:>11.1f} {'-':>7}")
    print("ratio = Tessera time / PyTorch time (lower is better; < 1 means Tessera is faster)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "peer_ms": peer,
                       "table": table, "outputs_agree": ok}, f, indent=1)
    if not ok:
        sys.exit("outputs disagree beyond 1e-4: the timings compare different computations")


if __name__ == "__main__":
    main()
