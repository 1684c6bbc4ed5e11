"""InfoGainService."""

from __future__ import annotations

from kgverify.v1 import info_gain_service_pb2_grpc as iggrpc

from ..context import within
from ..pipeline import scoring
from . import convert


class InfoGainServicer(iggrpc.InfoGainServiceServicer):
    def __init__(self, runtime):
        self.rt = runtime

    async def ScoreInfoGain(self, request, context):
        deadline = self.rt.call_deadline(context)
        async with within(deadline):
            result = await scoring.info_gain(convert.info_gain_request(request), self.rt.deps, deadline)
        return convert.fitting_result(result, convert.info_gain_response, self.rt.settings.server.max_message_bytes)
