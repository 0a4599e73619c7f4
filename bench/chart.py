"""Draws bench/results/latest.json as a PNG: one panel per figure, one bar per system.

    .interop-venv/bin/python bench/chart.py bench/results/latest.json bench/results/latest.png
"""
import json
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ('publish_per_s', 'publish (tasks/s)', 'higher is better'),
    ('end_to_end_per_s', 'end to end (tasks/s)', 'higher is better'),
    ('p50_ms', 'round trip p50 (ms)', 'lower is better'),
    ('p99_ms', 'round trip p99 (ms)', 'lower is better'),
    ('pss_mb', 'worker peak PSS (MiB)', 'lower is better'),
]
COLORS = {'nestjs': '#e0234e', 'nestjs_thread': '#f08aa0', 'raw': '#4a4a4a', 'celery': '#37814a'}


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    systems = data['systems']
    names = list(systems)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 4.4), layout='constrained')
    for ax, (key, title, hint) in zip(axes, PANELS):
        values = [systems[n].get(key) or 0 for n in names]
        bars = ax.bar(names, values, color=[COLORS.get(n, '#888888') for n in names])
        ax.set_title(f'{title}\n({hint})', fontsize=10)
        for bar, v in zip(bars, values):
            ax.annotate(f'{v:g}', (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center', va='bottom', fontsize=9)
        ax.margins(y=0.15)
        ax.tick_params(axis='x', labelsize=9)
    m = data.get('machine', {})
    ns = ', '.join(f"{n}: N={systems[n].get('n')}" for n in names)
    fig.suptitle(f"nestjs-celery vs raw amqplib+cassandra-driver vs Python Celery: tasks.sortWords, results in Cassandra\n"
                 f"{m.get('cpus')} x {m.get('cpuModel')}, {m.get('memGiB')} GiB, node {m.get('node')}, "
                 f"RabbitMQ {m.get('rabbitmq', '?')}, Cassandra {m.get('cassandra', '?')}; {ns}", fontsize=10)
    fig.savefig(dst, dpi=110)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
