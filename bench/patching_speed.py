"""Per-neuron activation patching over all 100 neurons of the shipped model on 500 clean /
corrupted pairs: `analyses.patching.neuron_patching` (batched) beside the loop of
`run_with_hooks` a user writes (one run per neuron), timed side by side (interleaved, medians).
The goal (issue 21) is >= 5x. Also times the general batched path (the last layer's rank-one
shortcut switched off by a hook on hook_logits) and attribution patching, and checks that every
method gives the loop's numbers.

    .venv/bin/python bench/patching_speed.py [--pairs 500] [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from _common import interleaved, machine, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from analyses.patching import attribution_patching, neuron_patching
    from hooked_mlp import load_pretrained
    from hooked_mlp.data import all_pairs, labels_of

    torch.set_num_threads(args.threads)
    model = load_pretrained()
    g = torch.Generator().manual_seed(0)
    p, H = model.cfg.p, model.cfg.d_hidden
    clean = all_pairs(p)[torch.randperm(p * p, generator=g)[: args.pairs]]
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(0, p, (args.pairs,), generator=g)
    labels = labels_of(clean, model.cfg)

    def metric(logits):
        return logits.gather(1, labels[:, None]).mean()

    name = "blocks.0.mlp.hook_post"

    def loop():  # what a user writes today: one run_with_hooks per neuron
        _, cache = model.run_with_cache(clean, names_filter=name)
        out = []
        for n in range(H):
            def hook(post, hook, n=n):
                post = post.clone()
                post[:, n] = cache[name][:, n]
                return post

            with torch.no_grad():
                out.append(float(metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)]))))
        return torch.tensor(out, dtype=torch.float64)

    def general():  # the batched forward, with the rank-one shortcut switched off
        model.add_hook("hook_logits", lambda x, hook: x)
        try:
            return neuron_patching(model, clean, corrupt, metric).values[0]
        finally:
            model.reset_hooks()

    candidates = {
        "run_with_hooks loop": loop,
        "neuron_patching": lambda: neuron_patching(model, clean, corrupt, metric).values[0],
        "neuron_patching (general path)": general,
        "attribution_patching": lambda: attribution_patching(model, clean, corrupt,
                                                             metric).values[0],
    }
    want = loop()
    for label, fn in candidates.items():
        err = float((fn() - want).abs().max())
        print(f"{label:32s} max |difference from the loop| = {err:.2e}")
    times = interleaved(candidates, args.repeats)
    base = median(times["run_with_hooks loop"])
    print(f"\n{machine()}; torch threads {args.threads}; {H} neurons x {args.pairs} pairs; "
          f"medians of {args.repeats}")
    for label, ts in times.items():
        print(f"{label:32s} {median(ts) * 1e3:8.2f} ms   {base / median(ts):6.1f}x the loop")


if __name__ == "__main__":
    main()
