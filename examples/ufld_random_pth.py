"""Write a randomly initialised UFLD checkpoint in the authors' format, to try `parity import-checkpoint`
without their released weights (nothing is downloaded): {'model': state_dict with DDP's 'module.' prefix}.

    python examples/ufld_random_pth.py --config culane-r18 --out /tmp/culane_18.pth [--v2]
"""
import argparse

import torch

from parity.models.ufld import UfldAdapter, UfldConfig
from parity.models.ufldv2 import UfldV2Adapter, UfldV2Config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="culane-r18")
    ap.add_argument("--v2", action="store_true", help="an Ultra-Fast-Lane-Detection-v2 network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    adapter = UfldV2Adapter(UfldV2Config.from_dict({"name": args.config})) if args.v2 else UfldAdapter(UfldConfig.from_dict({"name": args.config}))
    state = {"module." + k: v for k, v in adapter.build().state_dict().items()}
    torch.save({"model": state, "optimizer": {}}, args.out)
    print(f"wrote {args.out}: {len(state)} tensors, {sum(v.numel() for v in state.values()):,} values ({'ufldv2' if args.v2 else 'ufld'} {args.config})")


if __name__ == "__main__":
    main()
