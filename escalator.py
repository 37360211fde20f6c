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

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument(
        "--config", help="TOML configuration file (default: the embedded local setup)"
    )
    serve.add_argument("--host", help="address to bind (overrides the config)")
    serve.add_argument("--port", type=int, help="port to bind (overrides the config)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    train = commands.add_parser(
        "train", help="train a helper from step logs (needs the `train` extra)"
    )
    demo = commands.add_parser(
        "demo", help="the learning loop end to end on the embedded default (or --world sim)"
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
    elif command == "demo":
        try:
            from training.demo.cli import add_arguments as add_demo_arguments
        except ImportError as exc:
            demo.set_defaults(missing=exc)
        else:
            add_demo_arguments(demo)

    args = parser.parse_args(argv)
    if args.command == "serve":
        from server.cli import serve as run_serve

        return run_serve(args.config, host=args.host, port=args.port, log_level=args.log_level)
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
        from training.demo.cli import run as run_demo

        return run_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


if __name__ == "__main__":
    sys.exit(main())
