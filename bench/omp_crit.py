#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""omp_crit.py SHORT.txt LONG.txt STEPS: per step, from two omp_crit.so runs
of bench_train that differ by STEPS training steps (the difference takes out
loading and warm-up), each parallel region's work and critical path in ms,
the serial part, and the speedup the critical path predicts over the work.
Regions are named from the library's symbol table (nm)."""
import bisect
import os
import subprocess
import sys


def parse(path):
    regs, serial = {}, 0.0
    for line in open(path):
        f = line.split()
        if f[0] == 'R':
            regs[(f[1], f[2])] = {'calls': int(f[4]), 'team': int(f[6]),
                                  'work': float(f[8]), 'crit': float(f[10])}
        elif f[0] == 'S':
            serial = float(f[2])
    return regs, serial


SYMS = {}


def name(lib, off):
    lib = os.path.realpath(lib)
    if lib not in SYMS:
        out = subprocess.run(['nm', lib], capture_output=True, text=True).stdout
        table = sorted((int(f[0], 16), f[2]) for f in (l.split() for l in out.splitlines())
                       if len(f) >= 3 and f[1] in 'tT')
        SYMS[lib] = ([a for a, _ in table], [n for _, n in table])
    addrs, names = SYMS[lib]
    i = bisect.bisect_right(addrs, int(off, 16)) - 1
    return names[i] if i >= 0 else off


def main():
    (a, sa), (b, sb), steps = parse(sys.argv[1]), parse(sys.argv[2]), float(sys.argv[3])
    rows = []
    for key, r in b.items():
        q = a.get(key, {'calls': 0, 'work': 0.0, 'crit': 0.0})
        d = {k: (r[k] - q[k]) / steps for k in ('calls', 'work', 'crit')}
        if d['calls'] > 0 and d['work'] > 1e-6:
            rows.append((d['work'], name(*key), r['team'], d))
    rows.sort(reverse=True)
    serial = (sb - sa) / steps
    work = sum(r[0] for r in rows) + serial
    crit = sum(r[3]['crit'] for r in rows) + serial
    print('%-40s %6s %5s %9s %9s' % ('region', 'calls', 'team', 'work ms', 'crit ms'))
    for w, n, team, d in rows:
        print('%-40s %6.1f %5d %9.3f %9.3f' % (n[:40], d['calls'], team, 1e3 * w, 1e3 * d['crit']))
    print('%-40s %6s %5s %9.3f %9.3f' % ('serial (outside regions)', '', '', 1e3 * serial,
                                         1e3 * serial))
    print('step: work %.3f ms, critical path %.3f ms, work / critical path %.2f'
          % (1e3 * work, 1e3 * crit, work / crit))


if __name__ == '__main__':
    main()
