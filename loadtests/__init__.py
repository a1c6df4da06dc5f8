"""Load tests of the gateway (Locust scenarios, an SLO gate, `make loadtest`): see docs/loadtests.md."""
