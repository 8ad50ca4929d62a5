import argparse
import signal
import sys

from .engine import Simulator
from .server import FAULT_KINDS, SimulatorServer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A local OpenAI Batch + Files API (under /v1) with control endpoints under /_sim/.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on; 0 picks a free one (default 8100)")
    parser.add_argument("--batches", type=int, default=0, metavar="N",
                        help="pre-create N historical batches in every terminal state, aged up to 30 days")
    parser.add_argument("--active", type=int, default=0, metavar="M",
                        help="pre-create M batches caught in validating/in_progress/finalizing/cancelling")
    parser.add_argument("--speed", type=float, default=1.0, metavar="X",
                        help="divide every simulated duration (and the 24 h window) by X; timestamps stay real")
    parser.add_argument("--seed", type=int, default=1, help="seed for ids, plans, outcomes and faults (default 1)")
    parser.add_argument("--fault-rate", type=float, default=0.0, metavar="R",
                        help="share (0..1) of /v1 requests that fail on purpose (default 0)")
    parser.add_argument("--fault-kinds", default=",".join(FAULT_KINDS),
                        help=f"comma-separated fault kinds to draw from (default {','.join(FAULT_KINDS)}; also: quota)")
    parser.add_argument("--slow-seconds", type=float, default=10.0,
                        help="how long a 'timeout' fault keeps the client waiting (default 10)")
    parser.add_argument("--latency-ms", type=int, default=0, help="added latency per /v1 request (default 0)")
    parser.add_argument("--api-key", default="sk-sim",
                        help="the only bearer key accepted (default sk-sim); an empty string accepts any key")
    parser.add_argument("--failure-share", type=float, default=0.03,
                        help="typical share of requests that fail inside a batch (default 0.03)")
    parser.add_argument("--queued-token-limit", type=int, default=None,
                        help="enqueued-token cap per model; batches above it fail with token_limit_exceeded")
    parser.add_argument("--arrival-interval", type=float, default=0.0, metavar="S",
                        help="demo mode: a new batch is submitted every S seconds (default 0: never)")
    parser.add_argument("--webhook-url", default="", metavar="URL",
                        help="send signed batch.* webhooks to URL (e.g. http://127.0.0.1:8000/webhooks/openai/simulator/)")
    parser.add_argument("--webhook-secret", default="", metavar="WHSEC",
                        help="the whsec_… secret to sign them with (the connection's webhook signing secret)")
    args = parser.parse_args(argv)

    simulator = Simulator(seed=args.seed, speed=args.speed, failure_share=args.failure_share,
                          queued_token_limit=args.queued_token_limit, arrival_interval=args.arrival_interval)
    simulator.populate(historical=args.batches, active=args.active)
    server = SimulatorServer(simulator, host=args.host, port=args.port, api_key=args.api_key or None,
                             fault_rate=args.fault_rate, fault_kinds=args.fault_kinds.split(","),
                             fault_seed=args.seed, latency_ms=args.latency_ms)
    server.faults.configure(slow_seconds=args.slow_seconds)
    if args.webhook_url:
        server.send_webhooks(args.webhook_url, args.webhook_secret)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"simulator: {len(simulator.batches)} batches at {server.url} (key {args.api_key or 'any'}, "
          f"speed {args.speed:g}x, faults {args.fault_rate:g})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
