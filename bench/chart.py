"""Draws bench/results/latest.json as a PNG, two rows of panels:

- rates (publish, end to end), worker memory (peak PSS), prefetch-1 end-to-end rate;
- round trips of nestjs against raw on their own (Celery's 0.5 s result poll would flatten them),
  Celery's round trip in a panel of its own, round trips under a background load at 50 % and 90 %
  of each system's measured end-to-end rate (log scale), and round trips at prefetch 1.

    .interop-venv/bin/python bench/chart.py bench/results/latest.json bench/results/latest.png
"""
import json
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {'nestjs': '#e0234e', 'nestjs_thread': '#f08aa0', 'raw': '#4a4a4a', 'celery': '#37814a'}
FAST = ['nestjs', 'nestjs_thread', 'raw']


def color(name):
    return COLORS.get(name, '#888888')


def annotate(ax, bars, values, fmt='{:g}'):
    for bar, v in zip(bars, values):
        if v is None:
            continue
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center', va='bottom', fontsize=8)


def simple(ax, systems, names, key, title, hint, fallback=None):
    """One bar per system; `fallback` (key, label) when a file lacks `key` (older files: summed RSS)."""
    values, labels = [], []
    for n in names:
        v = systems[n].get(key)
        label = n
        if v is None and fallback and systems[n].get(fallback[0]) is not None:
            v, label = systems[n][fallback[0]], f'{n}\n({fallback[1]})'
        values.append(v)
        labels.append(label)
    bars = ax.bar(labels, [v or 0 for v in values], color=[color(n) for n in names])
    annotate(ax, bars, values)
    ax.set_title(f'{title}\n({hint})', fontsize=10)
    ax.margins(y=0.15)
    ax.tick_params(axis='x', labelsize=8)


def paired(ax, groups, series, title, hint, log=False):
    """Grouped bars: `groups` along x, `series` = [(label, color, hatch, [value per group])]."""
    width = 0.8 / max(1, len(series))
    for i, (label, c, hatch, values) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [v or 0 for v in values], width, label=label, color=c, hatch=hatch, edgecolor='white' if hatch else None)
        annotate(ax, bars, values)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    if log:
        ax.set_yscale('log')
    ax.set_title(f'{title}\n({hint})', fontsize=10)
    ax.margins(y=0.2)
    ax.legend(fontsize=7)


def empty(ax, title, why):
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, why, ha='center', va='center', fontsize=9, transform=ax.transAxes)
    ax.set_axis_off()


def latency_series(systems, names, getter):
    out = []
    for n in names:
        out.append((f'{n} p50', color(n), None, [getter(systems[n], 'p50_ms', g) for g in range(getter.groups)]))
        out.append((f'{n} p99', color(n), '//', [getter(systems[n], 'p99_ms', g) for g in range(getter.groups)]))
    return out


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    systems = data['systems']
    names = list(systems)
    fast = [n for n in names if n in FAST]
    fig, axes = plt.subplots(2, 4, figsize=(20, 9.5), layout='constrained')
    (a_pub, a_e2e, a_mem, a_p1), (a_rt, a_celery, a_load, a_p1rt) = axes

    simple(a_pub, systems, names, 'publish_per_s', 'publish (tasks/s)', 'higher is better; Celery without confirms')
    simple(a_e2e, systems, names, 'end_to_end_per_s', 'end to end (tasks/s)', 'higher is better')
    simple(a_mem, systems, names, 'pss_mb', 'worker peak PSS (MiB)', 'lower is better; separate sampler', fallback=('rss_mb', 'old: summed RSS'))

    p1 = [n for n in fast if systems[n].get('prefetch1')]
    if p1:
        bars = a_p1.bar(p1, [systems[n]['prefetch1']['end_to_end_per_s'] for n in p1], color=[color(n) for n in p1])
        annotate(a_p1, bars, [systems[n]['prefetch1']['end_to_end_per_s'] for n in p1])
        a_p1.set_title('prefetch 1, concurrency 1: end to end (tasks/s)\n(higher is better; per-task overhead)', fontsize=10)
        a_p1.margins(y=0.15)
    else:
        empty(a_p1, 'prefetch 1', 'not measured')

    if fast:
        paired(a_rt, ['p50', 'p99'], [(n, color(n), None, [systems[n].get('p50_ms'), systems[n].get('p99_ms')]) for n in fast],
               'round trip, nestjs vs raw (ms)', 'lower is better; sequential send + result')
    else:
        empty(a_rt, 'round trip', 'no nestjs / raw')

    if 'celery' in systems:
        c = systems['celery']
        bars = a_celery.bar(['p50', 'p99'], [c.get('p50_ms') or 0, c.get('p99_ms') or 0], color=color('celery'))
        annotate(a_celery, bars, [c.get('p50_ms'), c.get('p99_ms')])
        a_celery.set_title(f"Celery round trip (ms), own scale\n(best configuration: {c.get('pool', '?')}; get() polls the backend)", fontsize=10)
        a_celery.margins(y=0.15)
    else:
        empty(a_celery, 'Celery round trip', 'not run')

    loaded = [n for n in fast if systems[n].get('under_load')]
    if loaded:
        fractions = sorted({lvl['fraction'] for n in loaded for lvl in systems[n]['under_load']})
        groups = ['idle'] + [f'{round(f * 100)} % load' for f in fractions]

        def at(s, key, g):
            if g == 0:
                return s.get(key)
            lvl = next((x for x in s['under_load'] if x['fraction'] == fractions[g - 1]), None)
            return lvl and lvl[key]
        at.groups = len(groups)
        paired(a_load, groups, latency_series(systems, loaded, at),
               'round trip under background load (ms, log)', "load at a fraction of each system's own end-to-end rate", log=True)
    else:
        empty(a_load, 'round trip under load', 'not measured')

    if p1:
        paired(a_p1rt, ['p50', 'p99'], [(n, color(n), None, [systems[n]['prefetch1']['p50_ms'], systems[n]['prefetch1']['p99_ms']]) for n in p1],
               'round trip at prefetch 1 (ms)', 'lower is better')
    else:
        empty(a_p1rt, 'round trip at prefetch 1', 'not measured')

    m = data.get('machine', {})
    ns = ', '.join(f"{n}: N={systems[n].get('n')}" for n in names)
    tags = sorted({f"{s['measured_at']['commit']}{' (dirty)' if s['measured_at']['dirty'] else ''}" for s in systems.values() if s.get('measured_at')})
    tag = f"; commit {', '.join(tags)}" if tags else ''
    fig.suptitle(f"nestjs-celery vs raw amqplib+cassandra-driver vs Python Celery: tasks.sortWords, results in Cassandra\n"
                 f"{m.get('cpus')} x {m.get('cpuModel')}, {m.get('memGiB')} GiB, node {m.get('node')}, "
                 f"RabbitMQ {m.get('rabbitmq', '?')}, Cassandra {m.get('cassandra', '?')}; {ns}{tag}", fontsize=10)
    fig.savefig(dst, dpi=100)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
