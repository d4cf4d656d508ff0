"""Support for running ``xception-serve`` as a child process (tests, benchmarks, demo)."""
