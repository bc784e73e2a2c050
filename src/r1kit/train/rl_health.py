"""RL health: the figures that tell a GRPO run is learning, and alerts when it is not.

TRL logs per step: `reward`, `reward_std`, `rewards/<name>/mean|std`, `frac_reward_zero_std` (groups whose
completions all scored alike, which teach nothing), `completions/mean_length`, `completions/clipped_ratio`
(cut at max_completion_length), `entropy`, `kl` (with a reference model) and `clip_ratio/*`. This callback
adds the rollout and training seconds of the interval and four alerts, each logged as `alert/<name>: 1` (in
metrics.jsonl, TensorBoard and on the Prometheus endpoint as `r1kit_rl_alert{alert=...}`) and printed once
when it starts:

Thresholds are the recipe's `grpo.alerts`:
- `entropy_collapse`: entropy below `min_entropy` (the policy has stopped exploring);
- `zero_variance`: more than `max_zero_variance` of groups with zero reward variance (no learning signal);
- `truncation`: more than `max_truncation` of completions cut at the length limit;
- `reward_hacking`: the format reward rose by `hacking_rise` over the last `window` logs while accuracy rose
  by less than a tenth of that.
"""

from __future__ import annotations

import time
from collections import deque

from transformers import TrainerCallback

from r1kit.config import RLAlertConfig
from r1kit.dist import print0

GAUGES = {
    "reward": "mean total reward",
    "reward_std": "reward standard deviation",
    "frac_reward_zero_std": "share of groups with zero reward variance",
    "completions/mean_length": "mean completion length (tokens)",
    "completions/clipped_ratio": "share of completions cut at max_completion_length",
    "entropy": "mean token entropy of the policy",
    "kl": "KL divergence to the reference model",
    "clip_ratio/region_mean": "share of tokens whose ratio was clipped",
    "rollout_seconds": "seconds spent generating rollouts since the previous log",
    "train_seconds": "seconds spent on the rest of the steps since the previous log",
}


def check_alerts(history: list[dict], thresholds: RLAlertConfig) -> list[str]:
    """The alerts the latest log (history[-1]) raises, given the logs before it."""
    latest, alerts = history[-1], []
    if "entropy" in latest and latest["entropy"] < thresholds.min_entropy:
        alerts.append("entropy_collapse")
    if latest.get("frac_reward_zero_std", 0.0) > thresholds.max_zero_variance:
        alerts.append("zero_variance")
    if latest.get("completions/clipped_ratio", 0.0) > thresholds.max_truncation:
        alerts.append("truncation")
    fmt, acc = "rewards/format/mean", "rewards/accuracy/mean"
    window = [h for h in history if fmt in h and acc in h][-2 * thresholds.window :]
    if len(window) >= 2 * thresholds.window:
        half = thresholds.window

        def rise(key: str) -> float:
            return sum(h[key] for h in window[half:]) / half - sum(h[key] for h in window[:half]) / half

        if rise(fmt) >= thresholds.hacking_rise and rise(acc) < thresholds.hacking_rise / 10:
            alerts.append("reward_hacking")
    return alerts


class RLHealth(TrainerCallback):
    """Adds timings and alerts to GRPO's logs (put it before the metrics logger); `time_rollouts` wraps the
    trainer's generation to split rollout from training time."""

    def __init__(self, thresholds: RLAlertConfig, registry=None):
        self.thresholds, self.history = thresholds, deque(maxlen=4 * thresholds.window)
        self.active: set[str] = set()
        self._rollout_seconds, self._interval_start = 0.0, time.perf_counter()
        self.gauges = self.alert_gauge = None
        if registry is not None:
            from prometheus_client import Gauge

            self.gauges = {
                key: Gauge("r1kit_rl_" + key.replace("/", "_"), doc, registry=registry)
                for key, doc in GAUGES.items()
            }
            self.alert_gauge = Gauge(
                "r1kit_rl_alert", "1 while an RL health alert holds", ["alert"], registry=registry
            )

    def time_rollouts(self, trainer) -> None:
        generate = trainer._generate

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                self._rollout_seconds += time.perf_counter() - start

        trainer._generate = timed

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "reward" not in logs:
            return
        now = time.perf_counter()
        logs["rollout_seconds"] = self._rollout_seconds
        logs["train_seconds"] = max(0.0, now - self._interval_start - self._rollout_seconds)
        self._rollout_seconds, self._interval_start = 0.0, now
        self.history.append(dict(logs))
        alerts = check_alerts(list(self.history), self.thresholds)
        for name in ("entropy_collapse", "zero_variance", "truncation", "reward_hacking"):
            raised = name in alerts
            if raised:
                logs[f"alert/{name}"] = 1.0
                if name not in self.active:
                    print0(
                        f"[yellow]RL health alert at step {state.global_step}: {name.replace('_', ' ')} "
                        f"({_why(name, logs)})[/yellow]"
                    )
            if self.alert_gauge is not None:
                self.alert_gauge.labels(name).set(float(raised))
            (self.active.add if raised else self.active.discard)(name)
        if self.gauges is not None:
            for key, gauge in self.gauges.items():
                if isinstance(logs.get(key), (int, float)):
                    gauge.set(logs[key])


def _why(name: str, logs: dict) -> str:
    return {
        "entropy_collapse": f"entropy {logs.get('entropy', 0):.3f}",
        "zero_variance": f"{100 * logs.get('frac_reward_zero_std', 0):.0f}% of groups score alike",
        "truncation": f"{100 * logs.get('completions/clipped_ratio', 0):.0f}% of completions cut",
        "reward_hacking": "format reward rising, accuracy flat",
    }[name]
