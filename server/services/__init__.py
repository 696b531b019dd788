"""gRPC servicers: thin adapters between the protocol and the domain."""
