"""``python -m npucenter.engines.virtual``: run one virtual engine (see ``--help``).

A bad argument or an impossible replica (unknown model, model does not fit, figure missing)
exits non-zero with one ``error[<code>]: <message>`` line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from npucenter.engines.virtual.server import VirtualEngineConfig, serve
from npucenter.errors import NpuCenterError

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> VirtualEngineConfig:
    """The engine config from command-line arguments."""
    p = argparse.ArgumentParser(
        prog="python -m npucenter.engines.virtual",
        description="An OpenAI-compatible server that behaves like DEVICE serving MODEL.",
    )
    p.add_argument("--model", required=True, help="catalog model id, e.g. llama-3.1-8b")
    p.add_argument("--device", required=True, help="catalog device id or alias, e.g. rngd")
    p.add_argument("--tp", type=int, default=1, help="cards per replica (tensor parallel)")
    p.add_argument("--precision", default=None, help="e.g. fp8, bf16 (default: the model's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="name clients send as `model`")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per modelled second (1 = real time, 0 = no waiting)",
    )
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return VirtualEngineConfig(
        model=a.model,
        device=a.device,
        tp=a.tp,
        precision=a.precision,
        served_model_name=a.served_model_name,
        host=a.host,
        port=a.port,
        time_scale=a.time_scale,
        max_num_seqs=a.max_num_seqs,
        max_num_batched_tokens=a.max_num_batched_tokens,
        max_model_len=a.max_model_len,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the engine; returns the process exit code."""
    try:
        config = parse_args(argv)
        # one line in its log, as a real engine's start-up lines (`npucenter deploy logs`)
        sys.stderr.write(
            f"virtual engine: {config.model} on {config.device} tp={config.tp} "
            f"precision={config.precision or 'default'}, listening on "
            f"{config.host}:{config.port} (time scale {config.time_scale:g})\n"
        )
        sys.stderr.flush()
        serve(config)
    except NpuCenterError as exc:
        sys.stderr.write(f"error[{exc.code}]: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
