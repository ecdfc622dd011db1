"""The ``avatar`` command. Each sub-module adds its commands to :data:`app`; this file imports them.

Errors become one line on stderr and an exit code: 2 bad input, 75 transient (see
:mod:`stages.errors`).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from stages.errors import AvatarError, EXIT_TRANSIENT

app = typer.Typer(
    name="avatar",
    help="Turn a talking-head video into a FlashAvatar (a 3D Gaussian head avatar on FLAME).\n\n"
         "Start with: avatar run --actor NAME --video video.mp4 [--flame generic_model.pkl]",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold literal brackets such as s3://bucket[/prefix]
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")


# Command modules register themselves on `app` when imported; keep this list in --help order.
from stages.cli import run_cmd, stage_cmd, assets_cmd, verify_cmd, bench_cmd  # noqa: E402,F401
from stages.cli import workflow_cmd  # noqa: E402,F401
from stages.cli import render_cmd  # noqa: E402,F401
from stages.cli import export_cmd, view_cmd  # noqa: E402,F401
from stages.cli import drive_cmd  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning our errors into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=True)  # usage errors print and exit 2 inside
        return 0
    except AvatarError as e:
        print(f"avatar: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return _interrupted(argv)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return _interrupted(argv)
    except SystemExit as e:
        if e.code == 130:  # typer turns Ctrl-C into exit 130, silently
            return _interrupted(argv)
        return int(e.code or 0)
    except Exception as e:  # a last net for transient faults raised by libraries
        if _is_transient(e):
            print(f"avatar: error: {type(e).__name__}: {e}; this looks transient, retry", file=sys.stderr)
            return EXIT_TRANSIENT
        raise
    finally:
        sys.stdout.flush()


def _interrupted(argv: list[str] | None) -> int:
    """Ctrl-C: one line saying what finished and the command that resumes; exit 130."""
    import signal
    import threading

    from stages.runner.interrupt import summary

    if threading.current_thread() is threading.main_thread():  # a second Ctrl-C must not cut the line short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"avatar: {summary(list(sys.argv[1:] if argv is None else argv))}", file=sys.stderr)
    return 130


def _is_transient(e: BaseException) -> bool:
    name = type(e).__name__
    if name in ("OutOfMemoryError",):  # torch.cuda.OutOfMemoryError: a retry may land on a free GPU
        return True
    return isinstance(e, (ConnectionError, TimeoutError))


def entry() -> None:
    """Console-script entry point."""
    from stages.cli.native_log import native_log_target, redirect_native_stderr

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ log lines
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    redirect_native_stderr(native_log_target(sys.argv[1:]))  # MediaPipe/TFLite/absl noise: a log file or nothing
    code = main()
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: a late Ctrl-C must not change its exit
    sys.exit(code)
