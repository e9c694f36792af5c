"""`dtq bench`: drive a running dtq system over gRPC and measure it.

Workloads (each in its own module): `burst` (N tasks as fast as possible, one
SubmitTask per task with many callers, then BatchSubmitTasks), `latency` (a
steady rate from one client), `backlog` (a large paused backlog, then the burst
again) and `fan-in` (many idle worker streams from one process). Completion is
always confirmed from the server (ListTasks in state COMPLETED), never inferred.
"""
