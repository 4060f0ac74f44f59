"""How a command ends: its exit code, and one line on stderr per problem when it failed.

Exit codes: 0 done; 1 the run did not succeed, the request was refused or Redis failed; 2 bad
usage or input (arguments, files, ``COMFYQ_`` variables); 130 interrupted; 141 the reader of
its output went away (``comfyq runs | head``), as for any command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from comfyq.errors import ComfyqError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, what a shell shows for a tool killed by it


class UsageError(ComfyqError):
    """Bad input on the command line: a missing or unreadable file, bad JSON, a bad argument."""


Handler = Callable[[argparse.Namespace], int]


def run_handler(handler: Handler, args: argparse.Namespace, prog: str = "comfyq") -> int:
    """Run a command's handler and turn how it ended into the exit code."""
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return output_gone()
    except Exception as error:
        return report(error, prog)


def output_gone() -> int:
    """The exit code once the reader of standard output went away (``comfyq runs | head``):
    nothing to say, and the flush at interpreter exit must not complain either."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def report(error: Exception, prog: str = "comfyq") -> int:
    """Print what went wrong on stderr and return the exit code; anything unexpected propagates."""
    problems, code = _problems(error)
    for problem in problems:
        print(f"{prog}: error: {problem}", file=sys.stderr)
    return code


def _problems(error: Exception) -> tuple[list[str], int]:
    settings_error = _loaded_class("comfyq.settings", "SettingsError")
    if settings_error is not None and isinstance(error, settings_error):
        return error.problems, EXIT_USAGE
    redis_error = _loaded_class("redis", "RedisError")
    if redis_error is not None and isinstance(error, redis_error):
        from comfyq.cli.connection import redis_failure

        return [redis_failure(error)], EXIT_FAILURE
    if not isinstance(error, (ComfyqError, ValueError, OSError)):
        raise error
    line = " ".join(part.strip() for part in str(error).strip().splitlines())
    refused = isinstance(error, ComfyqError) and not isinstance(error, UsageError)
    return [line], EXIT_FAILURE if refused else EXIT_USAGE


def _loaded_class(module: str, name: str) -> type | None:
    # Only a module some handler loaded can have raised its error; --help loads none of them.
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None
