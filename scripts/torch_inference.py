"""Which torch is the strongest a user could deploy for CPU inference, on this machine: eager
F.conv2d (NCHW, channels_last), the oneDNN conv with its weight pre-packed once (what the
`torch-frozen` backend times: torch.ops.mkldnn._convolution_pointwise), torch.compile with
freezing (inductor; compile seconds printed, never timed) and oneDNN's own blocked tensors
end to end (torch.utils.mkldnn). Every variant's output is checked against eager NCHW first.

    python scripts/torch_inference.py                  # the layers of scripts/bench_tvm.py, 3 rounds
    python scripts/torch_inference.py --quick --no-compile

Each round times every variant of every layer once (torch.utils.benchmark blocked_autorange),
the order rotated between rounds; the table shows the median over rounds (ms) and, per layer,
each variant relative to the fastest (1.00 = fastest). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torch.utils.benchmark as tb
import torch.utils.mkldnn

# name, in, out, size, kernel, stride, groups (the layers of scripts/bench_tvm.py)
LAYERS = [("mb2 pw 32->16 @112", 32, 16, 112, 1, 1, 1), ("mb2 pw 24->144 @56", 24, 144, 56, 1, 1, 1),
          ("mb2 pw 32->192 @28", 32, 192, 28, 1, 1, 1), ("mb2 pw 64->384 @14", 64, 384, 14, 1, 1, 1),
          ("mb2 dw 144 @56", 144, 144, 56, 3, 1, 144), ("mb2 dw 144 @56 s2", 144, 144, 56, 3, 2, 144),
          ("mb2 dw 192 @28", 192, 192, 28, 3, 1, 192), ("mb2 dw 384 @14", 384, 384, 14, 3, 1, 384),
          ("r50 3x3 64 @56", 64, 64, 56, 3, 1, 1), ("r50 3x3 128 @28", 128, 128, 28, 3, 1, 1),
          ("r50 3x3 256 @14", 256, 256, 14, 3, 1, 1), ("r50 3x3 512 @7", 512, 512, 7, 3, 1, 1)]


def variants(layer, compile_: bool) -> dict:
    """name -> (callable, compile seconds), each producing a dense NCHW-ordered tensor."""
    _, c, o, hw, k, s, g = layer
    p = k // 2
    x = torch.randn(1, c, hw, hw)
    w = torch.randn(o, c // g, k, k)
    xc, wc = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    args = ([p, p], [s, s], [1, 1], g)
    packed = torch.ops.mkldnn._reorder_convolution_weight(w, *args, list(x.shape))
    packed_cl = torch.ops.mkldnn._reorder_convolution_weight(wc, *args, list(x.shape))
    conv = torch.nn.Conv2d(c, o, k, s, p, groups=g, bias=False).eval()
    conv.weight.data.copy_(w)
    blocked, xb = torch.utils.mkldnn.to_mkldnn(conv), x.to_mkldnn()
    out = {
        "eager NCHW": (lambda: F.conv2d(x, w, None, s, p, 1, g), 0.0),
        "eager channels_last": (lambda: F.conv2d(xc, wc, None, s, p, 1, g), 0.0),
        "pre-packed NCHW (torch-frozen)": (lambda: torch.ops.mkldnn._convolution_pointwise(
            x, packed, None, *args, "none", [], "").contiguous(), 0.0),
        "pre-packed channels_last (torch-frozen)": (lambda: torch.ops.mkldnn._convolution_pointwise(
            xc, packed_cl, None, *args, "none", [], ""), 0.0),
        "oneDNN blocked end to end": (lambda: blocked(xb), 0.0),
    }
    if compile_:
        import torch._inductor.config as inductor

        inductor.freezing = True
        for name, inp, model in (("torch.compile NCHW", x, conv),
                                 ("torch.compile channels_last", xc,
                                  torch.nn.Conv2d(c, o, k, s, p, groups=g, bias=False).eval()
                                  .to(memory_format=torch.channels_last))):
            model.weight.data.copy_(w)
            start = time.perf_counter()
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled(inp)
            out[name] = ((lambda f=compiled, i=inp: f(i)), time.perf_counter() - start)
    return out


def check(layer, fns) -> None:
    with torch.no_grad():
        want = fns["eager NCHW"][0]()
        for name, (fn, _) in fns.items():
            got = fn()
            got = got.to_dense() if got.is_mkldnn else got
            assert torch.allclose(got, want, rtol=1e-3, atol=1e-3), (layer[0], name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (>= 3 for a choice)")
    parser.add_argument("--min-run-ms", type=float, default=300)
    parser.add_argument("--no-compile", dest="compile_", action="store_false")
    parser.add_argument("--quick", action="store_true", help="3 layers, 1 round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = [LAYERS[1], LAYERS[4], LAYERS[10]] if args.quick else LAYERS
    repeats = 1 if args.quick else args.repeats
    fns = {layer[0]: variants(layer, args.compile_) for layer in layers}
    for layer in layers:
        check(layer, fns[layer[0]])
    times = {(l, v): [] for l, vs in fns.items() for v in vs}
    for r in range(repeats):
        for layer, vs in fns.items():
            names = list(vs)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                with torch.no_grad():
                    m = tb.Timer("f()", globals={"f": vs[name][0]}, num_threads=args.threads) \
                        .blocked_autorange(min_run_time=args.min_run_ms / 1e3)
                times[(layer, name)].append(m.median)
    names = list(next(iter(fns.values())))
    print(f"median over {repeats} round(s), ms; [x] = relative to the layer's fastest variant")
    print("layer".ljust(22) + "".join(n[:24].rjust(26) for n in names))
    wins = {n: 0 for n in names}
    for layer, vs in fns.items():
        med = {n: statistics.median(times[(layer, n)]) for n in vs}
        best = min(med.values())
        wins[min(med, key=med.get)] += 1
        print(layer.ljust(22) + "".join(f"{med[n] * 1e3:9.3f} [{med[n] / best:4.2f}]".rjust(26)
                                        for n in names))
    print("fastest on " + ", ".join(f"{n}: {k}" for n, k in wins.items()) + " layer(s)")
    if args.compile_:
        secs = [vs[n][1] for vs in fns.values() for n in vs if n.startswith("torch.compile")]
        print(f"torch.compile (freezing): {sum(secs):.1f} s compiling {len(secs)} convs, never timed")


if __name__ == "__main__":
    main()
