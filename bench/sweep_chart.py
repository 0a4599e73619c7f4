"""Draws bench/results/sweep.json as a PNG, one panel per curve, one line (or bar) per system.

    .interop-venv/bin/python bench/sweep_chart.py bench/results/sweep.json bench/results/sweep.png
"""
import json
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {'nestjs': '#e0234e', 'raw': '#4a4a4a'}


def size_label(b):
    if b >= 1_000_000:
        return f'{b / 1_000_000:g} MB'
    if b >= 1000:
        return f'{b / 1000:g} KB'
    return f'{b:g} B'


def series(points, curve, key):
    """{system: ([x], [y])} of the points of a curve that have the figure."""
    out = {}
    for p in points:
        if p['curve'] != curve or p.get(key) is None or p.get('error'):
            continue
        xs, ys = out.setdefault(p['system'], ([], []))
        xs.append(p['x'])
        ys.append(p[key])
    return out


def line_panel(ax, points, curve, key, title, xlabel, logx=False, xfmt=None, annotate=True, logy=False):
    data = series(points, curve, key)
    for system, (xs, ys) in data.items():
        ax.plot(xs, ys, marker='o', color=COLORS.get(system, '#888888'), label=system)
        if annotate:
            for x, y in zip(xs, ys):
                ax.annotate(f'{y:g}', (x, y), textcoords='offset points', xytext=(0, 6), ha='center', fontsize=7,
                            color=COLORS.get(system, '#888888'))
    if logx:
        ax.set_xscale('log', base=2 if curve == 'prefetch' else 10)
    xs = sorted({x for xs, _ in data.values() for x in xs})
    if xs:
        ax.set_xticks(xs)
        ax.set_xticklabels([xfmt(x) if xfmt else f'{x:g}' for x in xs], fontsize=8)
        ax.minorticks_off()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    if logy:
        ax.set_yscale('log')
    else:
        ax.set_ylim(bottom=0)
    ax.margins(y=0.15)
    ax.grid(alpha=0.3)
    if data:
        ax.legend(fontsize=8)


def workers_panel(ax, points):
    data = series(points, 'workers', 'end_to_end_per_s')
    systems = list(data)
    width = 0.38
    for i, system in enumerate(systems):
        xs, ys = data[system]
        pos = [x + (i - (len(systems) - 1) / 2) * width for x in xs]
        bars = ax.bar(pos, ys, width=width, color=COLORS.get(system, '#888888'), label=system)
        for bar, v in zip(bars, ys):
            ax.annotate(f'{v:g}', (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center', va='bottom', fontsize=8)
    ax.set_xticks([1, 2])
    ax.set_xticklabels(['1 process', '2 processes'], fontsize=9)
    ax.set_title('end to end (tasks/s) vs worker processes\n(default settings each: concurrency 64, prefetch 256)', fontsize=10)
    ax.margins(y=0.15)
    ax.grid(alpha=0.3, axis='y')
    if systems:
        ax.legend(fontsize=8)


def payload_settings(points):
    """'concurrency 64, prefetch 256' plus the payload points that ran with less."""
    low = sorted({(p['x'], p['settings']['concurrency'], p['settings']['prefetch']) for p in points
                  if p['curve'] == 'payload' and p['settings']['concurrency'] != 64})
    text = 'concurrency 64, prefetch 256'
    if low:
        text += '; ' + ', '.join(f'{size_label(x)}: {c} / {pf}' for x, c, pf in low)
    return text


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    points = data['points']
    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5), layout='constrained')
    pf = lambda x: f'{x:g}'  # noqa: E731
    ps = payload_settings(points)
    line_panel(axes[0][0], points, 'prefetch', 'end_to_end_per_s', 'end to end (tasks/s) vs prefetch\n(concurrency = min(prefetch, 64))',
               'prefetch', logx=True, xfmt=pf)
    line_panel(axes[0][1], points, 'payload', 'end_to_end_per_s', f'end to end (tasks/s, log scale) vs payload size\n({ps})',
               'payload (argument; the result is as big)', logx=True, xfmt=size_label, logy=True)
    line_panel(axes[0][2], points, 'payload', 'end_to_end_mb_per_s', f'end to end (payload MB/s) vs payload size\n({ps})',
               'payload (argument; the result is as big)', logx=True, xfmt=size_label)
    workers_panel(axes[1][0], points)
    line_panel(axes[1][1], points, 'prefetch', 'pss_mb', 'worker peak PSS (MiB) vs tasks in flight\n(in flight per worker = prefetch)',
               'tasks in flight per worker', logx=True, xfmt=pf)
    line_panel(axes[1][2], points, 'payload', 'pss_mb', f'worker peak PSS (MiB) vs payload size\n({ps})',
               'payload', logx=True, xfmt=size_label)
    m = data.get('machine', {})
    o = data.get('run', {}).get('options', {})
    ns = sorted({p['settings']['n'] for p in points})
    fig.suptitle('nestjs-celery vs raw amqplib+cassandra-driver: scaling sweep (tasks.sortWords, results in Cassandra, ack after store)\n'
                 f"{m.get('cpus')} x {m.get('cpuModel')}, {m.get('memGiB')} GiB, node {m.get('node')}, "
                 f"RabbitMQ {m.get('rabbitmq', '?')}, Cassandra {m.get('cassandra', '?')}; "
                 f"N per point {', '.join(str(n) for n in ns)} (fewer for big payloads), {o.get('round_trips')} round trips; "
                 f"{data.get('run', {}).get('date', '')[:10]}", fontsize=10)
    fig.savefig(dst, dpi=90)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
