"""One-off measurements outside the agent workloads; each writes JSON under results/extras/."""
