#!/usr/bin/env python3
"""Run cloudbox's Pub/Sub emulator (gRPC + REST) and nothing else of cloudbox.

Why a launcher: cloudbox 0.2.3 declares Python >= 3.14 and relies on 3.14's lazy
annotations (e.g. `def keys(...) -> list[str]` inside a class that defines a method
called `list`). On Python 3.11 its modules fail at import time with
"'function' object is not subscriptable". Compiling cloudbox's modules with
postponed evaluation of annotations (PEP 563, `from __future__ import annotations`)
makes them import and run unchanged. We do that with an import hook that only
touches the `cloudbox` package, and we never import its other services.

Usage (run with the venv's python, infra/.venv/bin/python):
    pubsub_emulator.py [--host 127.0.0.1] [--grpc-port 8085] [--rest-port 8086]

gRPC speaks google.pubsub.v1 (what PUBSUB_EMULATOR_HOST clients use); REST speaks
the v1 JSON API (PUT .../topics/T, POST .../topics/T:publish, ...). State is in memory.
SIGTERM / SIGINT stop both servers.
"""
from __future__ import annotations

import __future__
import argparse
import asyncio
import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import signal
import sys


class _PostponedAnnotationsLoader(importlib.machinery.SourceFileLoader):
    """Compile a module as if it started with `from __future__ import annotations`.

    Always compiles from source (cloudbox's pubsub part is small): a cached .pyc
    written by a plain `import cloudbox` would have been compiled without the flag.
    """

    def get_code(self, fullname):
        source = self.get_data(self.path)
        return compile(
            source,
            self.path,
            "exec",
            flags=__future__.annotations.compiler_flag,
            dont_inherit=True,
        )


class _CloudboxFinder(importlib.abc.MetaPathFinder):
    """Route `cloudbox` and `cloudbox.*` source modules through the loader above."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "cloudbox" and not fullname.startswith("cloudbox."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _PostponedAnnotationsLoader(fullname, spec.origin)
        return spec


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("CLOUDBOX_HOST", "127.0.0.1"))
    parser.add_argument(
        "--grpc-port", type=int, default=int(os.environ.get("CLOUDBOX_PUBSUB_PORT", "8085"))
    )
    parser.add_argument(
        "--rest-port", type=int, default=int(os.environ.get("CLOUDBOX_PUBSUB_REST_PORT", "8086"))
    )
    parser.add_argument("--log-level", default=os.environ.get("CLOUDBOX_LOG_LEVEL", "warning"))
    return parser.parse_args(argv)


async def _serve(host: str, grpc_port: int, rest_port: int, log_level: str) -> None:
    import uvicorn

    from cloudbox.services.pubsub.app import app as rest_app
    from cloudbox.services.pubsub.grpc_server import create_server

    class _Server(uvicorn.Server):
        # uvicorn swaps in its own SIGINT/SIGTERM handlers while serving; we want a
        # single handler that stops both servers, so keep uvicorn's out of the way.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    rest = _Server(
        uvicorn.Config(
            app=rest_app,
            host=host,
            port=rest_port,
            log_level=log_level,
            access_log=log_level == "debug",
        )
    )
    grpc_server = await create_server(host, grpc_port)
    await grpc_server.start()

    loop = asyncio.get_running_loop()

    def _shutdown() -> None:
        logging.getLogger("pubsub_emulator").info("shutting down")
        rest.should_exit = True
        loop.create_task(grpc_server.stop(grace=1))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _shutdown)

    logging.getLogger("pubsub_emulator").info(
        "Pub/Sub emulator: gRPC %s:%d, REST http://%s:%d", host, grpc_port, host, rest_port
    )
    await asyncio.gather(rest.serve(), grpc_server.wait_for_termination())


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # cloudbox reads its settings from the environment when cloudbox.config is first
    # imported, so set them before any cloudbox import. No persistence: memory only.
    os.environ["CLOUDBOX_HOST"] = args.host
    os.environ["CLOUDBOX_PUBSUB_PORT"] = str(args.grpc_port)
    os.environ["CLOUDBOX_PUBSUB_REST_PORT"] = str(args.rest_port)
    os.environ.pop("CLOUDBOX_DATA_DIR", None)

    sys.meta_path.insert(0, _CloudboxFinder())
    asyncio.run(_serve(args.host, args.grpc_port, args.rest_port, args.log_level.lower()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
