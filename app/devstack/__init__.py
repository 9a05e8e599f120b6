"""Local infrastructure for `make dev`, tests and benchmarks: a real S3 server (SeaweedFS)
and, when no PostgreSQL is reachable, an embedded one. Never used by the service itself."""
