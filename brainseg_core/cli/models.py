"""``brainseg-models``: list, inspect, install, remove and choose the models BrainSeg runs.

Examples::

    brainseg-models list                              # every bundle, its metric, which is active
    brainseg-models show brainseg-segmenter-resunet16 # the card in full
    brainseg-models install runs/seg                  # refused if worse than the active model
    brainseg-models install runs/seg --force          # ... unless forced
    brainseg-models pin my-segmenter                  # always use this one for its kind
    brainseg-models use-default                       # back to the shipped models
    brainseg-models remove my-segmenter               # delete an installed bundle

Bundles live in the user model folder (installed, trained with ``--install``) and in the
installation's ``resources/models`` (shipped). See :mod:`brainseg_core.registry` for the rules.
Exit codes: 0 done, 1 refused or failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from brainseg_core.cli._common import EXIT_CODES_HELP, HelpFormatter, run_reporting_errors
from brainseg_core.model_kind import KIND_NAMES, ModelKind


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brainseg-models``."""
    p = argparse.ArgumentParser(
        prog="brainseg-models",
        description="List, inspect, install, remove and choose BrainSeg model bundles.",
        formatter_class=HelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="every bundle with its validation metric; * marks the active ones")
    show = sub.add_parser("show", help="print a bundle's card")
    show.add_argument("name", help="bundle name (see list) or path")
    inst = sub.add_parser("install", help="copy a bundle into the user model folder and use it")
    inst.add_argument("path", help="bundle (.json, .safetensors or folder)")
    inst.add_argument("--force", action="store_true", help="install even without or with a worse metric")
    inst.add_argument("--overwrite", action="store_true", help="replace an installed bundle of the same name")
    rm = sub.add_parser("remove", help="delete an installed (user) bundle")
    rm.add_argument("name", help="bundle name")
    pin = sub.add_parser("pin", help="always use this bundle for its kind")
    pin.add_argument("name", help="bundle name")
    dflt = sub.add_parser("use-default", help="use the shipped models again")
    dflt.add_argument("--kind", choices=KIND_NAMES, help="only this kind (default: both)")
    return p


def _list() -> None:
    from brainseg_core.errors import BundleError
    from brainseg_core.model_card import key_metric_text
    from brainseg_core.registry import active_bundle, list_bundles, model_choice, user_models_dir

    choice = model_choice()
    print(f"user model folder: {user_models_dir()}")
    for kind in (ModelKind.SEGMENTER, ModelKind.CLASSIFIER):
        try:
            active = active_bundle(kind)
        except BundleError as exc:
            active = None
            print(f"{kind}: {exc.problem}")
        how = {"default": "shipped (use-default)", None: "newest"}.get(choice.get(kind), "pinned")
        print(f"\n{kind}s (active: {how})")
        for info in list_bundles(kind):
            mark = "*" if active is not None and info.path == active.path else " "
            print(
                f" {mark} {info.card.name:<44} {info.source:<8} {key_metric_text(info.card):<26} "
                f"{info.card.created[:10]}"
            )
            members = info.card.thorough.get("ensemble", [])
            if members:  # its thorough mode: the models averaged with it, and that ensemble's metric
                dice = info.card.thorough.get("metrics", {}).get("dice_patient_mean")
                metric = f"dice_patient_mean {dice:.3f}" if isinstance(dice, float) else "no metric"
                names = ", ".join(m["name"] for m in members)
                print(f"     thorough mode: averaged with {names} ({metric})")


def _show(name: str) -> None:
    from pathlib import Path

    from brainseg_core.model_card import read_card, resolve_card_path
    from brainseg_core.registry import find_bundle

    path = resolve_card_path(name) if Path(name).exists() else find_bundle(name).path
    card = read_card(path)
    print(path)
    print(json.dumps(card.to_dict(), indent=1, ensure_ascii=False, default=str))


def main(argv: list[str] | None = None) -> int:
    """Run ``brainseg-models``.

    Returns:
        0 on success, 1 when refused or failed, 2 on bad usage (argparse).
    """
    args = build_parser().parse_args(argv)
    from brainseg_core import registry

    def work() -> None:
        if args.command == "list":
            _list()
        elif args.command == "show":
            _show(args.name)
        elif args.command == "install":
            path = registry.install_bundle(args.path, overwrite=args.overwrite, force=args.force)
            print(f"installed {path}; it is now the active model of its kind")
        elif args.command == "remove":
            print(f"removed {registry.remove_bundle(args.name)}")
        elif args.command == "pin":
            info = registry.pin_bundle(args.name)
            print(f"{info.card.kind}: using {info.card.name} ({info.source}) from now on")
        elif args.command == "use-default":
            registry.use_default_models(args.kind)
            print(f"using the shipped {args.kind or 'models'} from now on")

    return run_reporting_errors("brainseg-models", work)


if __name__ == "__main__":
    sys.exit(main())
