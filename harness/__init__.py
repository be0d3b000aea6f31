"""The project's own service harness: starts a throwaway PostgreSQL primary, a streaming
replica and Redis for the test suite, the demo and the benchmarks (:mod:`harness.services`),
and stops the processes those start on any stop signal (:mod:`harness.processes`).

It is not part of the installed package. A project's own tests use
:mod:`data_arch.testing`, whose fixtures take the URLs they are given.
"""
