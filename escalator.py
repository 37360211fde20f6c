"""The `escalator` command: a thin dispatcher. Each subcommand imports its package only
when it runs, so the proxy process never loads training code."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="escalator",
        description="OpenAI-compatible proxy that escalates agent steps within a budget.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    shown = _ShowDefaults
    serve = commands.add_parser("serve", help="run the proxy", formatter_class=shown)
    serve.add_argument(
        "--config", help="TOML configuration file (default: the embedded local setup)"
    )
    serve.add_argument("--host", help="address to bind (overrides the config)")
    serve.add_argument("--port", type=int, help="port to bind (overrides the config)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the proxy's own log (step records go to the step log)",
    )

    train = commands.add_parser(
        "train",
        help="train a helper from step logs (needs the `train` extra)",
        formatter_class=shown,
    )
    demo = commands.add_parser(
        "demo",
        help="the learning loop end to end on the embedded default (or --world sim)",
        formatter_class=shown,
    )
    tenants = commands.add_parser(
        "tenants",
        help="manage tenants, keys and budgets of a running proxy (its admin API)",
        formatter_class=shown,
    )
    # Only the command being run builds its options: `serve` never imports training code
    # (nor numpy, rich or httpx), and `train` never imports the demo.
    command = _command(sys.argv[1:] if argv is None else argv)
    if command == "train":
        try:
            from training.cli import add_arguments
        except ImportError as exc:  # the proxy installs without the training extra
            train.set_defaults(missing=exc)
        else:
            add_arguments(train)
    elif command == "tenants":
        from server.tenants.cli import add_arguments as add_tenants_arguments

        add_tenants_arguments(tenants)
    elif command == "demo":
        try:
            from demo.cli import add_arguments as add_demo_arguments
        except ImportError as exc:
            demo.set_defaults(missing=exc)
        else:
            add_demo_arguments(demo)

    args = parser.parse_args(argv)
    if args.command == "serve":
        from server.cli import serve as run_serve

        return run_serve(args.config, host=args.host, port=args.port, log_level=args.log_level)
    if args.command == "tenants":
        from server.tenants.cli import run as run_tenants

        return run_tenants(args)
    if getattr(args, "missing", None) is not None:
        print(
            f"escalator {args.command} needs the training extra ({args.missing}): "
            "pip install 'escalator[train]'",
            file=sys.stderr,
        )
        return 2
    if args.command == "train":
        from training.cli import run as run_train

        return run_train(args)
    if args.command == "demo":
        from demo.cli import run as run_demo

        return run_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


class _ShowDefaults(argparse.HelpFormatter):
    """Each option's default after its help, where it has one the help does not name."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        has_default = all(action.default is not v for v in (None, False, argparse.SUPPRESS))
        if has_default and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


if __name__ == "__main__":
    sys.exit(main())
