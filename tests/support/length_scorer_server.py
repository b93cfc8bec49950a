"""Runs the LengthScorer behind GrpcServer as a real process, to test signal handling. Flags = ServerSettings."""

from __future__ import annotations

import asyncio
import sys

from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.common.logs import configure_logging
from services.common.server import GrpcServer
from services.common.settings import ServerSettings
from tests.support.length_scorer import SERVICE_NAME, LengthScorer


async def main(args: list[str]) -> None:
    delay_s = float(args.pop(0))
    settings = ServerSettings.from_cli(args, prog="length_scorer_server")
    configure_logging(settings.log_level, settings.log_format, "length_scorer")
    server = GrpcServer(settings, "length_scorer")
    server.add_service(verifier_pb2_grpc.add_VerifierServiceServicer_to_server, LengthScorer(delay_s), SERVICE_NAME)
    await server.start()
    await server.set_serving(True)
    print(f"READY {server.port}", flush=True)
    await server.run_until_signal()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
