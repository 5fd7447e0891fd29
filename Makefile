# The two set-up commands (README): `make demo` and `make test`.
# bash: bench needs pipefail.
SHELL := /bin/bash

.PHONY: demo demo-gitops bench-scale bench-settled test test-judge unit bench bench-decisions crds cluster-up cluster-down

# The main job on the local cluster (brought up if it isn't), through PROVIDER's routing (gatewayapi, istio,
# linkerd, nginx, contour, traefik).
PROVIDER ?= gatewayapi
demo:
	cargo build --quiet -p serin --bin serin
	cargo run --quiet -p serin-e2e --bin serin-demo -- $${CARGO_TARGET_DIR:-target}/debug/serin $(PROVIDER)

# The roll forward in git: a push of a faulty image to a repository Flux applies, Serin's rollback, its
# roll-forward commit, Flux applying it (a git server and Flux's controllers beside the local cluster).
demo-gitops:
	cargo build --quiet -p serin --bin serin
	cargo run --quiet -p serin-e2e --bin serin-demo-gitops -- $${CARGO_TARGET_DIR:-target}/debug/serin

# Every test, the end-to-end ones included, against one local cluster brought up for the run and torn down
# at the end (the teardown test, run last, checks that `down` leaves nothing behind).
test:
	e2e/cluster/up
	@status=0; cargo test --workspace || status=$$?; \
	if [ $$status -ne 0 ]; then e2e/cluster/down; exit $$status; fi
	cargo test -p serin-e2e --test teardown -- --ignored

# The measurements quoted in closing notes, on the local cluster: target update to Progressing, API reads and
# writes per canary run, serin's peak memory, Prometheus queries per check round, a rollout's duration with a
# receiver that never answers beside one without alerts, and the demo's run time.
bench:
	e2e/cluster/up >/dev/null
	@set -o pipefail; cargo test --quiet --test lifecycle --test analysis --test alerts -- --nocapture --test-threads 1 2>&1 \
	| grep -o 'measured:.*'
	@start=$$(date +%s) && $(MAKE) --no-print-directory demo >/dev/null && \
	echo "measured: make demo took $$(( $$(date +%s) - start ))s"

# The sequential judge end to end at the issue's rate, 5 requests a second through the route (tests/judge.rs
# runs at 50 in `make test`): every test at once (they mostly wait; two at a time, as many as cores, took over
# 36 minutes for the first four without deciding the good canary or the shared incident), the slowest
# proving a +1 point regression in about half an hour to an hour.
test-judge:
	e2e/cluster/up
	SERIN_JUDGE_RPS=5 cargo test --test judge -- --nocapture --test-threads=8 2>&1 | tee /tmp/serin-test-judge.log | grep -E 'measured:|^test |test result'

# N canaries on one release-built replica, all given a new image at once, beside a lone canary's rollout in
# the same run; then the same with Flagger v1.44 (built once into the cache by e2e/cluster/build-flagger;
# PEER= to run Serin alone): init time, rollout p50/p99/max, writes per canary by verb and resource (the API
# server's audit log), peak memory, CPU seconds of each and of the API server, Serin's tick lateness, and
# the ratios. The cluster's own (e2e/cluster/up).
N ?= 100
PEER ?= flagger
bench-scale:
	e2e/cluster/up >/dev/null
	cargo build --release --quiet -p serin --bin serin
	@peer=""; if [ "$(PEER)" = flagger ]; then peer=$$(e2e/cluster/build-flagger); fi; \
	cargo run --quiet -p serin-e2e --bin serin-bench-scale -- $${CARGO_TARGET_DIR:-target}/release/serin $(N) $$peer

# N Canaries initialized and left alone (N=10000 for the figures in the README), Serin then Flagger: the time
# to initialize all, memory, an idle minute's CPU and writes, and a restart's first minute.
bench-settled:
	e2e/cluster/up >/dev/null
	cargo build --release --quiet -p serin --bin serin
	@peer=""; if [ "$(PEER)" = flagger ]; then peer=$$(e2e/cluster/build-flagger); fi; \
	cargo run --quiet -p serin-e2e --bin serin-bench-scale -- $${CARGO_TARGET_DIR:-target}/release/serin $(N) $$peer --settled

# How well each judge decides (Flagger-style thresholds, Kayenta-style Mann-Whitney, Serin's sequential judge)
# over simulated canaries: seeded, no cluster. Writes e2e/decisions/results/ (a TSV, committed; two SVG plots).
# RUNS=200 for a quick look.
bench-decisions:
	cargo run --release --quiet -p serin-decisions

# Regenerates crds/ and the chart's copy from the Rust types (a test fails when either is stale).
crds:
	cargo run --quiet -p serin -- crds > crds/crds.yaml
	cp crds/crds.yaml charts/serin/files/crds.yaml

# Unit tests only: no cluster.
unit:
	cargo test --workspace --lib --bins

cluster-up:
	e2e/cluster/up
cluster-down:
	e2e/cluster/down
