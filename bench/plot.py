"""One PNG timeline per scenario: every request of every trial, coloured by the node that answered."""

import os

from . import scenarios

COLORS = {"web-a": "#1f77b4", "web-b": "#2ca02c"}
FAIL = "#d62728"
OTHER = "#7f7f7f"


def _panel(ax, trials, origin_key, title, xmax):
    ax.set_title(title, fontsize=9, loc="left")
    if not trials:
        ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center", color=OTHER)
        ax.set_yticks([])
        return
    for row, trial in enumerate(trials):
        shift = trial[origin_key] - trial["t_fault"]
        xs = {}
        for t, dt, ok, node in trial["samples"]:
            x = t - shift
            if x < -1.0 or x > xmax:
                continue
            key = node if ok else "failed"
            xs.setdefault(key, []).append(x)
            if not ok and dt > 0.02:  # a request that waited for its timeout: show how long
                ax.hlines(row, x, x + dt, colors=FAIL, linewidth=2.5, alpha=0.6)
        for key, values in xs.items():
            color = FAIL if key == "failed" else COLORS.get(key, OTHER)
            marker = "x" if key == "failed" else "|"
            ax.scatter(values, [row] * len(values), s=14 if key == "failed" else 30, c=color, marker=marker,
                       linewidths=1.0)
        if origin_key == "t_fault":
            ax.plot([trial["t_repair"] - trial["t_fault"]], [row], marker="v", color="black", markersize=5)
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(trials)))
    ax.set_yticklabels([f"#{t['trial']}" for t in trials], fontsize=7)
    ax.set_ylim(-0.7, len(trials) - 0.3)
    ax.set_xlim(-1.0, xmax)
    ax.grid(axis="x", alpha=0.3)


def draw(results, out_dir):
    """Write <out_dir>/timeline-<scenario>.png for every scenario; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    trials = results["trials"]
    for name in scenarios.ORDER:
        if name == scenarios.FAILBACK:
            origin, label = "t_repair", "s since the repair of web-a"
            chosen = {p: [t for t in trials if t["profile"] == p and t.get("failback", {}).get("moved")]
                      for p in ("ours", "baseline")}
        else:
            origin, label = "t_fault", {"maintenance": "s since `maintenance on`",
                                        "load": "s since the load started"}.get(name, "s since the fault")
            chosen = {p: [t for t in trials if t["profile"] == p and t["scenario"] == name] for p in ("ours", "baseline")}
        if not any(chosen.values()):
            continue
        xmax = 1.0
        for group in chosen.values():
            for t in group:
                shift = t[origin] - t["t_fault"]
                xmax = max(xmax, min(45.0 if name == "load" else 14.0, t["t_end"] - t["t_fault"] - shift))
        fig, axes = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
        for ax, profile in zip(axes, ("ours", "baseline")):
            group = chosen[profile]
            title = f"{profile}" + ("" if group or name != "maintenance" else " (the tutorial has no planned switchover)")
            _panel(ax, group, origin, title, xmax)
        axes[-1].set_xlabel(label)
        handles = [Line2D([], [], color=COLORS["web-a"], marker="|", linestyle="", markersize=9, label="answered by web-a"),
                   Line2D([], [], color=COLORS["web-b"], marker="|", linestyle="", markersize=9, label="answered by web-b"),
                   Line2D([], [], color=FAIL, marker="x", linestyle="-", linewidth=2.5, alpha=0.8,
                          label="failed request (bar: waited for its timeout)")]
        if origin == "t_fault" and name not in ("maintenance", "load"):
            handles.append(Line2D([], [], color="black", marker="v", linestyle="", label="repair of web-a"))
        fig.legend(handles=handles, loc="lower center", fontsize=8, ncol=len(handles), frameon=False)
        fig.suptitle(scenarios.TITLES.get(name, name), fontsize=10, x=0.01, ha="left")
        fig.tight_layout(rect=(0, 0.05, 1, 0.95))
        path = os.path.join(out_dir, f"timeline-{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


OVERVIEW_SCENARIOS = ("crash", "hang", "broken", "host_death", "heal")


def _representative(trials):
    """The trial with the median outage (never-recovered trials count as the longest)."""
    if not trials:
        return None
    ranked = sorted(trials, key=lambda t: (not t.get("recovered", True), t.get("outage") or 0.0))
    return ranked[len(ranked) // 2]


def overview(results, path):
    """
    One PNG for the README: for each failure scenario, what the client saw around the fault, ours
    above the tutorial's on one time axis (the trial with the median outage of each profile).
    Returns ``path``, or None when no scenario was measured for both profiles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    trials = results["trials"]
    rows = []
    for name in OVERVIEW_SCENARIOS:
        picked = {p: _representative([t for t in trials if t["profile"] == p and t["scenario"] == name])
                  for p in ("ours", "baseline")}
        if any(picked.values()):
            rows.append((name, picked))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 1.35 * len(rows) + 1.0), squeeze=False)
    for ax, (name, picked) in zip(axes[:, 0], rows):
        xmax = 1.0
        for trial in picked.values():
            if trial:
                xmax = max(xmax, min(12.0, (trial.get("outage") or 0.0) + 1.5))
        for row, profile in ((1, "ours"), (0, "baseline")):
            trial = picked[profile]
            if trial is None:
                ax.text(0.2, row, "not measured" if name != "heal" else "n/a (no reactor)", fontsize=7, color=OTHER,
                        va="center")
                continue
            xs = {}
            for t, dt, ok, node in trial["samples"]:
                x = t  # samples are already relative to the fault
                if -1.0 <= x <= xmax:
                    xs.setdefault(node if ok else "failed", []).append(x)
                    if not ok and dt > 0.02:
                        ax.hlines(row, x, x + dt, colors=FAIL, linewidth=2.5, alpha=0.6)
            for key, values in xs.items():
                ax.scatter(values, [row] * len(values), c=FAIL if key == "failed" else COLORS.get(key, OTHER),
                           marker="x" if key == "failed" else "|", s=14 if key == "failed" else 30, linewidths=1.0)
            outage = trial.get("outage")
            label = "no outage" if not outage else f"{outage * 1000:.0f} ms" if outage < 1 else f"{outage:.1f} s"
            ax.text(xmax, row, f"  {label}", fontsize=8, va="center")
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["tutorial", "nginx-ha"], fontsize=8)
        ax.set_ylim(-0.6, 1.6)
        ax.set_xlim(-1.0, xmax)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(scenarios.TITLES.get(name, name), fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds since the fault (client request every 20 ms, 250 ms timeout; the median trial of each)")
    handles = [Line2D([], [], color=COLORS["web-a"], marker="|", linestyle="", markersize=9, label="answered by web-a"),
               Line2D([], [], color=COLORS["web-b"], marker="|", linestyle="", markersize=9, label="answered by web-b"),
               Line2D([], [], color=FAIL, marker="x", linestyle="-", linewidth=2.5, alpha=0.8, label="failed request")]
    fig.legend(handles=handles, loc="lower center", fontsize=8, ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
