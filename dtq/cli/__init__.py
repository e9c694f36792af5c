"""The `dtq` command line."""

import os

# gRPC's C core logs a failed TLS handshake at INFO on stderr, around the
# command's own one-line error. It reads this when grpc is imported, which no
# CLI module has done yet here; a user's GRPC_VERBOSITY still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
