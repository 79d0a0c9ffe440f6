"""Registering the servicer with a grpc.aio server so that request bytes which do not parse reach it
(as Undecodable, answered INVALID_ARGUMENT) instead of failing inside grpc as UNKNOWN."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError, Message

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from slidesam.server import errors


@dataclass(frozen=True)
class Undecodable:
    """Request bytes that do not parse as the method's message (answered INVALID_ARGUMENT, not UNKNOWN)."""

    message_type: str
    reason: str

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"the request is not a valid {self.message_type} message: {self.reason}")


def check_decoded(request: Message | Undecodable) -> None:
    """Raises InvalidArgument when the request's bytes did not parse."""
    if isinstance(request, Undecodable):
        raise request.error()


def _tolerant_parser(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Undecodable(message_class.DESCRIPTOR.full_name, str(error))

    return parse


def add_to_server(service: pb_grpc.SegmentationServicer, server: grpc.aio.Server) -> None:
    """Registers the service like the generated add_SegmentationServicer_to_server, with tolerant parsing."""
    descriptor = pb.DESCRIPTOR.services_by_name["Segmentation"]
    handlers = {}
    for method in descriptor.methods:
        streaming = method.client_streaming and method.server_streaming
        make = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=_tolerant_parser(getattr(pb, method.input_type.name)),
            response_serializer=lambda message: message.SerializeToString(),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
